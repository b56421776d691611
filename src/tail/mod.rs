//! The live tail: the master's write log shipped between backups, so that
//! followers apply each write within milliseconds instead of waiting for
//! the next backup. A backup is the snapshot; the log is what came after
//! it, by RocksDB sequence number.
//!
//! This is the first piece: the unit of shipping ([`segment`]) and the
//! reading of the master's log ([`crate::db::Db::updates_since`]).

pub mod segment;

pub use segment::{Batch, Segment, SegmentError};
