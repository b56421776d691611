//! The database's own write-ahead log, for the live tail. On the master:
//! the batches after a sequence number, whole, or a clear gap, and a sync
//! so that only durable writes are shipped. On a follower: a master's
//! batch applied so that the database's own sequence number is the record
//! of how far the log was applied.

use std::collections::BTreeMap;

use rocksdb::{AsColumnFamilyRef, WriteBatch, WriteBatchIteratorCf};

use super::Db;
use crate::error::{Error, Result};
use crate::tail::Batch;

/// The batches this database wrote since [`Db::capture_writes`], by first
/// sequence number, up to a size: the shipper takes them from here instead
/// of reading them back from the write-ahead log. (RocksDB reads a log file
/// from its start, checking every record, to find a sequence number: at a
/// shipment every 10 ms that was a seventh of the master's CPU under
/// writes, and grows with the file.)
#[derive(Debug, Default)]
pub struct Captured {
    batches: BTreeMap<u64, Batch>,
    bytes: usize,
    limit: usize,
}

/// What [`Db::captured_since`] found.
#[derive(Debug)]
pub enum Capture {
    /// The batches after the asked sequence number, contiguous.
    Batches(Vec<Batch>),
    /// The batch just after it is not there (not written yet, its writer
    /// not back yet, or never captured: read the write-ahead log).
    Missing,
    /// Nothing is captured: read the write-ahead log.
    Off,
}

impl Db {
    /// Keeps every batch this database writes from now on, until
    /// [`Db::captured_since`] finds it shipped, and at most `limit` bytes of
    /// them (the oldest go first: a stalled shipper reads those from the
    /// write-ahead log). Writes made before, or other than through
    /// [`Db::write`], are not captured, which the shipper sees as a missing
    /// sequence number.
    pub fn capture_writes(&self, limit: usize) {
        let _ = self.captured.set(std::sync::Mutex::new(Captured {
            limit,
            ..Captured::default()
        }));
    }

    /// Keeps a written batch, whose header RocksDB's write filled with its
    /// first sequence number.
    pub(super) fn capture(&self, written: &WriteBatch) {
        let Some(captured) = self.captured.get() else {
            return;
        };
        let Some(batch) = Batch::from_data(written.data().to_vec()) else {
            return;
        };
        let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
        captured.bytes += batch.data().len();
        captured.batches.insert(batch.seq(), batch);
        while captured.bytes > captured.limit {
            let Some((_, oldest)) = captured.batches.pop_first() else {
                break;
            };
            captured.bytes -= oldest.data().len();
        }
    }

    /// The captured batches after sequence number `after`, contiguous and
    /// up to `limit`; forgets those at or before it (shipped).
    pub fn captured_since(&self, after: u64, limit: usize) -> Capture {
        let Some(captured) = self.captured.get() else {
            return Capture::Off;
        };
        let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = captured.batches.first_entry() {
            if *entry.get().seqs().end() > after {
                break;
            }
            let shipped = entry.remove();
            captured.bytes -= shipped.data().len();
        }
        let mut batches: Vec<Batch> = Vec::new();
        let mut next = after + 1;
        while batches.len() < limit.max(1) {
            let Some(batch) = captured.batches.get(&next) else {
                break;
            };
            next = batch.seqs().end() + 1;
            batches.push(batch.clone());
        }
        if batches.is_empty() {
            Capture::Missing
        } else {
            Capture::Batches(batches)
        }
    }

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

    /// Makes every write acknowledged so far durable (fsyncs the
    /// write-ahead log): what is shipped after this call is never a write
    /// the master could lose in a power cut.
    pub fn sync_log(&self) -> Result<()> {
        // Not a write: its success says nothing of whether writes are
        // accepted again (a full disk still refuses them), so it leaves
        // the database's write failure as it is.
        self.inner
            .flush_wal(true)
            .map_err(|e| Error::rocksdb("sync the write-ahead log", e))
    }

    /// Applies one of the master's write batches to this copy of its
    /// database, atomically. The batch must start just after the data's own
    /// sequence number, and the write advances that number by exactly the
    /// batch's operations: so the database's sequence number always equals
    /// the master's at the same point, and is the record of how far the
    /// log was applied, written in the same atomic write as the data (a
    /// restart resumes exactly, from what RocksDB recovered).
    /// [`Error::NotNext`] when the batch does not follow the data, or the
    /// data moved by other than the batch: nothing is applied then, or the
    /// copy can no longer be trusted to match the master.
    pub fn apply(&self, batch: &Batch) -> Result<()> {
        let at = self.inner.latest_sequence_number();
        if batch.seq() != at + 1 {
            return Err(Error::NotNext {
                at,
                batch: batch.seq(),
            });
        }
        let write = WriteBatch::from_data(batch.data());
        if !self.may_expire.load(std::sync::atomic::Ordering::SeqCst) {
            // Before the write, as `Db::write` does: a reader that sees an
            // entry with a deadline looks for it there.
            let mut finder = ExpiringPut {
                cf: self.expiring().map(|cf| cf.id()),
                found: false,
            };
            write.iterate_cf(&mut finder);
            if finder.found {
                self.may_expire
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let result = self.inner.write_opt(&write, &self.write_options);
        self.track(result, "apply a write batch")?;
        let now = self.inner.latest_sequence_number();
        if now != *batch.seqs().end() {
            return Err(Error::NotNext {
                at: now,
                batch: batch.seq(),
            });
        }
        Ok(())
    }
}

/// Finds whether a batch puts an entry into the column family of keys
/// with a deadline.
struct ExpiringPut {
    cf: Option<u32>,
    found: bool,
}

impl WriteBatchIteratorCf for ExpiringPut {
    fn put_cf(&mut self, cf_id: u32, _key: &[u8], _value: &[u8]) {
        self.found |= Some(cf_id) == self.cf;
    }

    fn delete_cf(&mut self, _cf_id: u32, _key: &[u8]) {}

    fn merge_cf(&mut self, cf_id: u32, _key: &[u8], _value: &[u8]) {
        self.found |= Some(cf_id) == self.cf;
    }
}

#[cfg(test)]
mod tests;
