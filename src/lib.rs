//! secsgate: a SECS/GEM gateway.
//!
//! The map, one layer per module, each talking only to its neighbours:
//!
//! - [`secs2`]: SECS-II data (SEMI E5): items, messages, the binary codec, SML and the JSON
//!   form of the scripting API. Pure data, no I/O.
//! - [`hsms`]: HSMS (SEMI E37): framing, the sans-IO protocol state machine, the tokio driver.
//! - [`secs1`]: SECS-I (SEMI E4): the block codec, the sans-IO block-transfer and message
//!   protocol, the tokio driver over a serial port or TCP.
//! - [`link`]: what any transport gives the engine: request/reply, incoming primaries, state.
//! - [`peers`]: the `allow` list of peer addresses and the log of refused connections.
//! - [`gem`]: GEM (SEMI E30) behaviour, sans-IO: the equipment (model, state machines, every
//!   message of the GEM tool table, spooling) and the host (communication state, default
//!   replies).
//! - [`transport`]: which transport a connection runs on (HSMS or SECS-I) and starting it.
//! - [`sim`]: the equipment simulator: a GEM equipment from a TOML file, over HSMS or SECS-I.
//! - [`store`]: durable storage: the message store (every message, SQLite or PostgreSQL, one
//!   writer thread), the equipment spool (SQLite), process programs (files).
//! - [`tags`]: the realtime tag tree (connection status, counters, SQLTags messages).
//! - [`monitor`]: a connection's counters, status and live message stream, as the web console
//!   and the metrics see them.
//! - [`north`]: northbound publishing; [`north::sparkplug`] is Sparkplug B, sans-IO (payload,
//!   topics, the edge node's bdSeq/seq and births, data, deaths).
//! - [`config`]: `project.toml`, with file, line and key in every error.
//! - [`gateway`]: equipment connections (each driving a `gem::Host` over its link),
//!   transactions (TxID), routing of received messages to handlers or the host's default
//!   replies, recording to the store and tags, live configuration, the host side of
//!   `system.secsgem`.
//! - [`script`]: embedded CPython: worker threads, the `system` module (secsgem, util, tag,
//!   db), hot reload.
//! - [`sdl`]: the SECS Definition Language: an equipment's messages and items; matching a
//!   message to its (named) definition, checks and `doc`/`codeDesc` annotation.
//! - [`feed`]: the bounded queue of messages and statuses the gateway hands northbound.
//! - [`north`]: MQTT: messages and statuses as JSON, tags as Sparkplug B, store and forward
//!   on disk, requests from MQTT sent on to the tools.
//! - [`web`]: the web console: pages, the HTTP API behind them, live updates, `/metrics`.
//! - [`cli`]: the `secsgate` command line (`run`, `check`, `sim`, `send`, `sml`, `log`,
//!   `tags`).
//!
//! Receive: bytes -> `hsms::frame` or `secs1` blocks -> `secs2::Message` -> `link` -> `gateway` (SDL
//! match or stream 9, TxID, custom response handler or default reply, realtime and mapped
//! handlers on a `script` worker). Send: a script's
//! `system.secsgem.sendRequest` -> `gateway` -> `link` -> `hsms` or `secs1` -> bytes; the reply comes
//! back the same way into the transaction table for `getResponse`.

pub mod cli;
pub mod config;
pub mod feed;
pub mod gateway;
pub mod gem;
pub mod hsms;
pub mod link;
pub mod monitor;
pub mod north;
pub mod peers;
pub mod script;
pub mod sdl;
pub mod secs1;
pub mod secs2;
pub mod sim;
pub mod store;
pub mod tags;
pub mod transport;
pub mod web;
