//! Durable storage. Every message sent and received is kept in the message store
//! (`messages`: SQLite by default, or PostgreSQL in `postgres`, which several gateways can
//! share). The equipment spool is kept in SQLite (bundled, one file per simulated equipment,
//! written before a message counts as spooled); process programs are files in a folder, one
//! per PPID: the simulator's (`programs`) and those tools send the gateway (`tool_programs`).

pub mod messages;
pub mod postgres;
pub mod programs;
pub mod spool;
pub mod tool_programs;

pub use messages::{MessageStore, Recorder, SqliteStore};
pub use programs::FolderPrograms;
pub use spool::SqliteSpool;
pub use tool_programs::{Saved, ToolPrograms};

/// Where a database is: an SQLite file or a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// The SQLite file (relative paths are resolved against the project).
    Sqlite(std::path::PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}
