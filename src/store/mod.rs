//! Durable storage. The equipment spool is kept in SQLite (bundled, one file per simulated
//! equipment, written before a message counts as spooled); process programs are files in a
//! folder, one per PPID.

pub mod programs;
pub mod spool;

pub use programs::FolderPrograms;
pub use spool::SqliteSpool;
