//! rkv: read replicas for a RocksDB database, using RocksDB's BackupEngine as
//! the replication log.
//!
//! The library holds every behaviour; the binaries in `bin/` only parse flags
//! and call into it. The nouns of the design each own a module:
//!
//! - [`db`]: opening a RocksDB database and the key/value operations on it;
//! - [`backup`]: the backup directory (create, list, verify, restore, purge);
//! - [`master`]: the write-side daemon (backup loop, lifecycle);
//! - [`follower`]: the read-only replica (watch, apply, generations, lag);
//! - [`server`]: the RESP server both daemons share, and its commands;
//! - [`status`]: what each daemon reports about itself, as facts;
//! - [`progress`]: how far long work (restores, backups, verifies) has got;
//! - [`resp`]: the Redis protocol's framing;
//! - [`cli`]: the `rkv` command line, with RocksDB `ldb`'s syntax;
//! - [`daemon`]: logging, signals, systemd notification, shared by the daemons.

#![deny(missing_docs)]

pub mod backoff;
pub mod backup;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod db;
pub mod error;
pub mod follower;
pub mod glob;
pub mod keys;
pub mod master;
pub mod metrics;
pub mod progress;
pub mod resp;
pub mod server;
pub mod status;
pub mod stop;
pub mod tail;

pub use error::{Error, Result};
