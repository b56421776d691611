//! A RocksDB database opened by rkv: how it is opened (read-write or
//! read-only), how RocksDB's open errors are turned into errors a user can act
//! on, and the key/value operations the CLI and the daemons share.
//!
//! # Keys that expire
//!
//! A key without a deadline is stored as it always was: its value, as is, in
//! the default column family. So a database written by any earlier rkv (or
//! by RocksDB's own tools) reads unchanged, and stays readable by them.
//!
//! A key with a deadline lives instead in the column family [`EXPIRING`],
//! its value prefixed by the deadline: 8 bytes, big-endian, in unix
//! milliseconds. A key is in at most one of the two; every write that moves
//! it (`EXPIRE`, `PERSIST`, `SET` without `KEEPTTL`) deletes it from the
//! other in the same atomic batch.
//!
//! A key whose deadline has passed is invisible at once to every read
//! ([`Db::entry`], [`Db::entries`]), judged on the reader's wall clock: on
//! a follower, its own. Its space is reclaimed by RocksDB's compaction: the
//! column family's compaction filter drops entries past their deadline.
//! A follower's copy loses them with the first backup after the master's
//! compaction did.

use std::path::{Path, PathBuf};

use std::iter::Peekable;

use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};

use crate::error::{Error, Result};

mod log;
mod open;
mod view;
pub use log::Capture;
pub use open::{holds_db, is_locked, BlockCache, OpenMode, OpenOptions};
pub use view::View;

/// An open RocksDB database (its default column family).
pub struct Db {
    inner: DB,
    path: PathBuf,
    write_options: WriteOptions,
    /// The error of the last write that failed, until one succeeds or it is
    /// cleared: a full disk makes RocksDB refuse writes until it recovers.
    write_failure: std::sync::Mutex<Option<String>>,
    write_failed: std::sync::atomic::AtomicBool,
    /// Held by every write of the server's commands, so a read-modify-write
    /// (`SET … NX`, `DEL` counting) is never interleaved with another write.
    write_lock: std::sync::Mutex<()>,
    /// Whether [`EXPIRING`] may hold an entry: false while no key ever had a
    /// deadline, which spares every read of a missing key, and every plain
    /// write, a lookup there.
    may_expire: std::sync::atomic::AtomicBool,
    /// The batches written since the live tail began, for its shipper
    /// (see [`Db::capture_writes`]); unset when no log ships.
    captured: std::sync::OnceLock<std::sync::Mutex<log::Captured>>,
}

impl Db {
    /// Makes every later write fsync the WAL before it is acknowledged.
    pub fn set_sync_writes(&mut self, sync: bool) {
        self.write_options.set_sync(sync);
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The RocksDB handle, for the backup engine.
    pub fn rocksdb(&self) -> &DB {
        &self.inner
    }

    /// The column family of keys with a deadline; `None` in a database an
    /// earlier release wrote, opened read-only.
    fn expiring(&self) -> Option<&ColumnFamily> {
        self.inner.cf_handle(EXPIRING)
    }

    /// [`EXPIRING`], when it may hold an entry.
    fn expiring_if_used(&self) -> Option<&ColumnFamily> {
        if self.may_expire.load(std::sync::atomic::Ordering::SeqCst) {
            self.expiring()
        } else {
            None
        }
    }

    /// Whether a key may have a deadline (then its entry may be in either
    /// column family).
    pub fn may_expire(&self) -> bool {
        self.may_expire.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The value of `key` in the default column family: the whole answer
    /// while [`Db::may_expire`] is false.
    pub fn plain_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner
            .get(key)
            .map_err(|e| Error::rocksdb("read a key", e))
    }

    /// The value of `key`, unless it is absent or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.entry(key, now_ms())?.map(|e| e.value))
    }

    /// The entry of `key` as of `now` (unix ms): `None` when it is absent
    /// or its deadline is at or before `now`.
    pub fn entry(&self, key: &[u8], now: u64) -> Result<Option<Entry>> {
        let read = |e| Error::rocksdb("read a key", e);
        if let Some(value) = self.inner.get(key).map_err(read)? {
            return Ok(Some(Entry {
                value,
                expires_at: None,
            }));
        }
        let Some(cf) = self.expiring_if_used() else {
            return Ok(None);
        };
        let stored = self.inner.get_cf(cf, key).map_err(read)?;
        Ok(stored.and_then(|stored| Entry::decode_expiring(stored, now)))
    }

    /// The entry stored for `key` with a deadline, expired or not.
    pub fn expiring_entry(&self, key: &[u8]) -> Result<Option<Entry>> {
        let Some(cf) = self.expiring_if_used() else {
            return Ok(None);
        };
        let stored = self
            .inner
            .get_cf(cf, key)
            .map_err(|e| Error::rocksdb("read a key", e))?;
        Ok(stored.and_then(|stored| Entry::decode_expiring(stored, 0)))
    }

    /// Stores `value` under `key`, without a deadline (the CLI's `put`).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = self.batch();
        self.stage_plain(&mut batch, key, value)?;
        self.write(batch)
    }

    /// Adds to `batch` the write of `value` under `key` without a deadline,
    /// reading only whether the key has one to drop (nothing at all while
    /// no key ever had a deadline): the plain `SET`.
    pub fn stage_plain(&self, batch: &mut Batch<'_>, key: &[u8], value: &[u8]) -> Result<()> {
        let old = self.expiring_entry(key)?;
        batch.put(key, value, None, old.as_ref());
        Ok(())
    }

    /// Removes `key`; removing an absent key is not an error.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = self.batch();
        if let Some(old) = self.entry(key, now_ms())? {
            batch.delete(key, &old);
        }
        self.write(batch)
    }

    /// Adds to `batch` the removal of every key, in both column families
    /// (`FLUSHDB`): a range deletion up to just past the last key, so the
    /// cost does not grow with the number of keys. Hold the write lock
    /// from here to the write, so that no key lands past the range.
    pub fn delete_all(&self, batch: &mut Batch<'_>) -> Result<()> {
        let past_last = |cf: Option<&ColumnFamily>| -> Result<Option<Vec<u8>>> {
            let mut iter = match cf {
                None => self.inner.iterator(IteratorMode::End),
                Some(cf) => self.inner.iterator_cf(cf, IteratorMode::End),
            };
            let last = iter
                .next()
                .transpose()
                .map_err(|e| Error::rocksdb("find the last key", e))?;
            Ok(last.map(|(key, _)| [&key[..], &[0]].concat()))
        };
        if let Some(end) = past_last(None)? {
            batch.inner.delete_range(&[][..], &end[..]);
        }
        if let Some(cf) = self.expiring() {
            if let Some(end) = past_last(Some(cf))? {
                batch.inner.delete_range_cf(cf, &[][..], &end[..]);
            }
        }
        Ok(())
    }

    /// A batch of writes to apply atomically with [`Db::write`].
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            inner: WriteBatch::default(),
            expiring: self.expiring(),
            expires: false,
        }
    }

    /// Applies the puts and deletes of `batch` atomically.
    pub fn write(&self, batch: Batch<'_>) -> Result<()> {
        if batch.inner.is_empty() {
            return Ok(());
        }
        if batch.expires {
            // Before the write: a reader that sees the entry checks there.
            self.may_expire
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let result = self.inner.write_opt(&batch.inner, &self.write_options);
        self.track(result, "write a batch")?;
        self.capture(&batch.inner);
        Ok(())
    }

    /// Records a write's outcome for [`Db::write_failure`].
    fn track(&self, result: Result<(), rocksdb::Error>, what: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        match result {
            Ok(()) => {
                if self.write_failed.load(Ordering::Relaxed) {
                    self.clear_write_failure();
                }
                Ok(())
            }
            Err(e) => {
                self.write_failed.store(true, Ordering::Relaxed);
                *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(Error::rocksdb(what, e))
            }
        }
    }

    /// Orders a write against the read-modify-writes: hold it while writing.
    pub fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// RocksDB's error for the last write, while writes fail.
    pub fn write_failure(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the last write failure (the database accepts writes again).
    pub fn clear_write_failure(&self) {
        self.write_failed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// RocksDB's identity of this database (its `IDENTITY`, a UUID made when
    /// it was created), if RocksDB has one.
    pub fn identity(&self) -> Option<String> {
        let bytes = self.inner.get_db_identity().ok()?;
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        (!id.is_empty()).then_some(id)
    }

    /// The sequence number of the newest write; it moves on every write.
    pub fn latest_sequence_number(&self) -> u64 {
        self.inner.latest_sequence_number()
    }

    /// The live entries with `from <= key < to`, in key order, each with
    /// its value.
    pub fn iter<'a>(
        &'a self,
        range: &ScanRange,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a {
        self.entries(range, now_ms())
            .map(|item| item.map(|(key, entry)| (key, entry.value)))
    }

    /// The entries with `from <= key < to` live at `now` (unix ms), in key
    /// order: the two column families merged, expired keys left out.
    pub fn entries<'a>(
        &'a self,
        range: &ScanRange,
        now: u64,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a {
        let plain = self.raw_iter(None, range);
        let expiring = self
            .expiring_if_used()
            .map(|cf| self.raw_iter(Some(cf), range));
        Merged {
            plain: plain.peekable(),
            expiring: expiring.into_iter().flatten().peekable(),
            now,
        }
    }

    /// One column family's stored pairs in `range`.
    fn raw_iter<'a>(
        &'a self,
        cf: Option<&ColumnFamily>,
        range: &ScanRange,
    ) -> Box<dyn Iterator<Item = Stored> + 'a> {
        let mut read_options = ReadOptions::default();
        if let Some(to) = &range.to {
            read_options.set_iterate_upper_bound(to.clone());
        }
        let mode = match &range.from {
            Some(from) => IteratorMode::From(from, Direction::Forward),
            None => IteratorMode::Start,
        };
        let iter = match cf {
            None => self.inner.iterator_opt(mode, read_options),
            Some(cf) => self.inner.iterator_cf_opt(cf, read_options, mode),
        };
        Box::new(iter.map(|item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(|e| Error::rocksdb("iterate over the database", e))
        }))
    }

    /// RocksDB's estimate of the number of keys with a deadline, expired
    /// ones not yet compacted away included.
    pub fn estimate_expiring_keys(&self) -> u64 {
        self.expiring()
            .and_then(|cf| {
                self.inner
                    .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .unwrap_or(0)
    }

    /// RocksDB's estimate of the number of keys (exact after compaction).
    pub fn estimate_num_keys(&self) -> Result<u64> {
        let plain = self
            .inner
            .property_int_value("rocksdb.estimate-num-keys")
            .map(|n| n.unwrap_or(0))
            .map_err(|e| Error::rocksdb("read the key count estimate", e))?;
        Ok(plain + self.estimate_expiring_keys())
    }

    /// The size of the live table files, of both column families.
    pub fn live_sst_bytes(&self) -> u64 {
        self.summed_property("rocksdb.live-sst-files-size")
    }

    /// A RocksDB integer property, per column family there, summed over
    /// both (0 where RocksDB has none).
    fn summed_property(&self, name: &str) -> u64 {
        let plain = self.inner.property_int_value(name).ok().flatten();
        let expiring = self
            .expiring()
            .and_then(|cf| self.inner.property_int_value_cf(cf, name).ok().flatten());
        plain.unwrap_or(0) + expiring.unwrap_or(0)
    }

    /// The figures that explain a database's load, for metrics: estimated
    /// keys, live SST bytes, memtable bytes, pending compaction bytes and
    /// block cache use (0 where RocksDB has none).
    pub fn load_figures(&self) -> LoadFigures {
        // Per column family in RocksDB, summed here; the cache is shared.
        let int = |name: &str| self.summed_property(name);
        let cache = |name: &str| self.inner.property_int_value(name).ok().flatten();
        LoadFigures {
            keys: int("rocksdb.estimate-num-keys"),
            live_sst_bytes: self.live_sst_bytes(),
            memtable_bytes: int("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
            block_cache_bytes: cache("rocksdb.block-cache-usage").unwrap_or(0),
        }
    }

    /// Writes the memtables (of both column families) to SST files.
    pub fn flush(&self) -> Result<()> {
        let flush = |e| Error::rocksdb("flush the database", e);
        self.inner.flush().map_err(flush)?;
        if let Some(cf) = self.expiring() {
            self.inner.flush_cf(cf).map_err(flush)?;
        }
        Ok(())
    }

    /// Flushes, then compacts the whole key range into as few levels as
    /// possible (what `ldb compact` does): a database in steady state, and
    /// expired keys' space reclaimed.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        self.inner.compact_range::<&[u8], &[u8]>(None, None);
        if let Some(cf) = self.expiring() {
            self.inner.compact_range_cf::<&[u8], &[u8]>(cf, None, None);
        }
        Ok(())
    }
}

/// The column family of the keys with a deadline (see the module docs).
pub const EXPIRING: &str = "rkv.expiring";

/// Unix milliseconds now, on this host's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The compaction filter of [`EXPIRING`]: drops entries past their
/// deadline (RocksDB turns the drop into a tombstone where an older
/// version of the key may lie below, so nothing older resurfaces).
fn drop_expired(_level: u32, _key: &[u8], stored: &[u8]) -> Decision {
    match deadline_of(stored) {
        Some(deadline) if deadline <= now_ms() => {
            EXPIRED_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Decision::Remove
        }
        _ => Decision::Keep,
    }
}

/// Expired entries compaction dropped in this process (INFO's
/// `expired_keys`).
static EXPIRED_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many expired entries compaction dropped since the process started.
pub fn expired_dropped() -> u64 {
    EXPIRED_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The deadline an [`EXPIRING`] value starts with.
fn deadline_of(stored: &[u8]) -> Option<u64> {
    let prefix: [u8; 8] = stored.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(prefix))
}

/// A key's value and its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// When the key expires, in unix milliseconds; `None` never.
    pub expires_at: Option<u64>,
}

impl Entry {
    /// The entry an [`EXPIRING`] value holds, unless it expired by `now`
    /// (or is too short to hold a deadline, which rkv never writes).
    fn decode_expiring(mut stored: Vec<u8>, now: u64) -> Option<Entry> {
        let deadline = deadline_of(&stored)?;
        if deadline <= now {
            return None;
        }
        stored.drain(..8);
        Some(Entry {
            value: stored,
            expires_at: Some(deadline),
        })
    }
}

/// Writes applied atomically by [`Db::write`]. Each write names the key's
/// entry before it (`old`), so that a key moving between the column
/// families leaves the other one in the same batch.
pub struct Batch<'a> {
    inner: WriteBatch,
    expiring: Option<&'a ColumnFamily>,
    /// The batch writes a key with a deadline.
    expires: bool,
}

impl<'a> Batch<'a> {
    /// Sets `key` to `value`, expiring at `expires_at` (unix ms) or never.
    ///
    /// # Panics
    /// With a deadline, on a database opened read-only (which takes no
    /// writes anyway).
    pub fn put(&mut self, key: &[u8], value: &[u8], expires_at: Option<u64>, old: Option<&Entry>) {
        let was_expiring = old.is_some_and(|e| e.expires_at.is_some());
        match expires_at {
            None => {
                self.inner.put(key, value);
                if was_expiring {
                    self.inner.delete_cf(self.cf(), key);
                }
            }
            Some(deadline) => {
                let mut stored = Vec::with_capacity(8 + value.len());
                stored.extend_from_slice(&deadline.to_be_bytes());
                stored.extend_from_slice(value);
                self.inner.put_cf(self.cf(), key, stored);
                self.expires = true;
                if old.is_some() && !was_expiring {
                    self.inner.delete(key);
                }
            }
        }
    }

    /// Removes `key`, whose entry is `old`.
    pub fn delete(&mut self, key: &[u8], old: &Entry) {
        match old.expires_at {
            None => self.inner.delete(key),
            Some(_) => self.inner.delete_cf(self.cf(), key),
        }
    }

    fn cf(&self) -> &'a ColumnFamily {
        self.expiring
            .expect("a writable database has the expiring column family")
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// The two column families' stored pairs merged into live entries.
struct Merged<A: Iterator, B: Iterator> {
    plain: Peekable<A>,
    expiring: Peekable<B>,
    now: u64,
}

type Stored = Result<(Vec<u8>, Vec<u8>)>;

impl<A: Iterator<Item = Stored>, B: Iterator<Item = Stored>> Iterator for Merged<A, B> {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.plain.peek(), self.expiring.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Less,
                (_, Some(Err(_))) | (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((p, _))), Some(Ok((e, _)))) => p.cmp(e),
            };
            if order == std::cmp::Ordering::Equal {
                // Never written so (a key is in one family at a time), but
                // were it, the plain entry would win, as in `Db::entry`.
                self.expiring.next();
            }
            let take_plain = order != std::cmp::Ordering::Greater;
            if take_plain {
                let item = self.plain.next()?;
                return Some(item.map(|(key, value)| {
                    let entry = Entry {
                        value,
                        expires_at: None,
                    };
                    (key, entry)
                }));
            }
            match self.expiring.next()? {
                Err(e) => return Some(Err(e)),
                Ok((key, stored)) => {
                    if let Some(entry) = Entry::decode_expiring(stored, self.now) {
                        return Some(Ok((key, entry)));
                    }
                }
            }
        }
    }
}

/// Key bounds for a scan: `from` inclusive, `to` exclusive, as in `ldb scan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRange {
    /// First key to include; `None` starts at the smallest key.
    pub from: Option<Vec<u8>>,
    /// First key to exclude; `None` runs to the end.
    pub to: Option<Vec<u8>>,
}

/// What [`Db::load_figures`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadFigures {
    /// RocksDB's estimate of the number of keys.
    pub keys: u64,
    /// Bytes of the live SST files.
    pub live_sst_bytes: u64,
    /// Bytes of every memtable.
    pub memtable_bytes: u64,
    /// Bytes compaction has still to rewrite.
    pub pending_compaction_bytes: u64,
    /// Bytes of the block cache in use.
    pub block_cache_bytes: u64,
}

#[cfg(test)]
mod tests;
