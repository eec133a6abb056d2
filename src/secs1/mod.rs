//! SECS-I (SEMI E4): SECS messages over a serial line (RS-232), or over TCP carrying the
//! same bytes.
//!
//! - [`block`]: the block on the wire: length byte, 10-byte header, up to 244 data bytes,
//!   checksum; splitting a message body into blocks; the ENQ/EOT/ACK/NAK characters.
//! - [`protocol`]: the sans-IO state machine: the block-transfer handshake with T1/T2 and
//!   retries, line contention (master/slave), reassembly of multi-block messages with T4,
//!   duplicate detection, and the transactions of W-bit primaries with T3.
//! - [`driver`]: the tokio shell: a serial port (`tokio-serial`) or TCP, reopened when it
//!   fails, serving a [`crate::link::Link`].
//!
//! A message body is encoded by [`crate::secs2`] and cut into blocks of 244 bytes; every
//! block repeats the header (device ID, W-bit, stream, function, system bytes) with its own
//! block number, and the last carries the E-bit.

pub mod block;
pub mod driver;
pub mod protocol;

pub use block::{Block, BlockError, Header};
pub use protocol::{Config, Event, LineState, Protocol, SendError, TransactionFailure};
