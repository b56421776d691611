//! The live tail: the master's write log shipped between backups, so that
//! followers apply each write within milliseconds instead of waiting for
//! the next backup. A backup is the snapshot; the log is what came after
//! it, by RocksDB sequence number.
//!
//! - [`segment`]: the unit of shipping, whole write batches, checksummed;
//! - [`store`]: where segments live (beside the backups, named by their
//!   first sequence number);
//! - [`ship`]: the master's side, which reads its write-ahead log
//!   ([`crate::db::Db::updates_since`]) and commits segments;
//! - [`follow`]: the follower's side, which applies them
//!   ([`crate::db::Db::apply`]).

pub mod follow;
pub mod segment;
pub mod ship;
pub mod store;

pub use segment::{Batch, Segment, SegmentError};
