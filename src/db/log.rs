//! Reading the database's own write-ahead log, for the live tail: the
//! batches after a sequence number, whole, or a clear gap.

use super::Db;
use crate::error::{Error, Result};
use crate::tail::Batch;

impl Db {
    /// The write batches after sequence number `after`, whole and in order,
    /// as RocksDB's write-ahead log holds them, up to `limit` batches (at
    /// least one). [`Error::LogGap`] when the log no longer starts there:
    /// its files were removed, and only a backup can bridge the gap.
    pub fn updates_since(&self, after: u64, limit: usize) -> Result<Vec<Batch>> {
        let latest = self.inner.latest_sequence_number();
        if after >= latest {
            return Ok(Vec::new());
        }
        let gap = |found: Option<u64>| Error::LogGap {
            wanted: after + 1,
            found,
        };
        let updates = self
            .inner
            .get_updates_since(after)
            .map_err(|e| match e.kind() {
                // RocksDB's word for "no log file holds that sequence".
                rocksdb::ErrorKind::NotFound => gap(None),
                _ => Error::rocksdb("read the write-ahead log", e),
            })?;
        let mut batches: Vec<Batch> = Vec::new();
        for update in updates.take(limit.max(1)) {
            let (seq, batch) = update.map_err(|e| Error::rocksdb("read the write-ahead log", e))?;
            let expected = batches.last().map_or(after + 1, |b| b.seqs().end() + 1);
            if seq != expected {
                return Err(gap(Some(seq)));
            }
            let batch = Batch::from_data(batch.data().to_vec())
                .filter(|b| b.seq() == seq)
                .ok_or_else(|| gap(Some(seq)))?;
            batches.push(batch);
        }
        if batches.is_empty() {
            return Err(gap(None));
        }
        Ok(batches)
    }
}

#[cfg(test)]
mod tests;
