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

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use std::iter::Peekable;

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use crate::error::{Error, Result};

/// How to open a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-write, taking RocksDB's exclusive lock.
    ReadWrite {
        /// Create the database when the directory holds none.
        create_if_missing: bool,
    },
    /// Read-only: no lock, no writes; sees the state as of opening.
    ReadOnly,
}

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
}

impl Db {
    /// Opens the database at `path`.
    ///
    /// Errors: [`Error::DbNotFound`] when the directory holds no database (and
    /// `create_if_missing` is off, or the mode is read-only),
    /// [`Error::DbLocked`] when another process holds it read-write.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Db> {
        Db::open_with_cache(path, mode, None)
    }

    /// [`Db::open`] with data blocks cached in `cache`, which several
    /// databases may share. Blocks are keyed by the SST file's identity, so a
    /// follower's new generation finds the blocks its SST files (hard links
    /// of the previous generation's) already had cached.
    pub fn open_with_cache(path: &Path, mode: OpenMode, cache: Option<&BlockCache>) -> Result<Db> {
        Db::open_tuned(path, mode, cache, None)
    }

    /// [`Db::open_with_cache`] with RocksDB's cap on open files: past it,
    /// RocksDB closes SST files and opens them again by path when read.
    pub fn open_tuned(
        path: &Path,
        mode: OpenMode,
        cache: Option<&BlockCache>,
        max_open_files: Option<i32>,
    ) -> Result<Db> {
        let create_if_missing = matches!(
            mode,
            OpenMode::ReadWrite {
                create_if_missing: true
            }
        );
        if !create_if_missing && !holds_db(path) {
            return Err(Error::DbNotFound {
                path: path.to_path_buf(),
            });
        }
        let mut options = Options::default();
        options.create_if_missing(create_if_missing);
        if let Some(n) = max_open_files {
            options.set_max_open_files(n);
        }
        if matches!(mode, OpenMode::ReadWrite { .. }) {
            // With an SST file manager RocksDB recovers by itself from a full
            // disk: it polls free space and resumes writes once there is
            // some. Without one, writes fail until a restart.
            options.set_sst_file_manager(&rocksdb::SstFileManager::new());
            tune_writes(&mut options);
        }
        let mut table = rocksdb::BlockBasedOptions::default();
        // A bloom filter in every SST file the master writes: a follower's
        // GET skips the files that cannot hold the key (a follower holds
        // several overlapping ones) without reading their blocks.
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
        if let Some(cache) = cache {
            table.set_block_cache(&cache.0);
            // Index and filter blocks live in the shared cache too, so a new
            // generation's open finds them there instead of reading every
            // SST's index again: catch-up cost stays with the change.
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        }
        options.set_block_based_table_factory(&table);
        // A database made elsewhere may have more column families than the
        // default one; RocksDB refuses to open it unless all are named.
        let mut column_families = if holds_db(path) {
            DB::list_cf(&options, path).map_err(|e| classify_open_error(path, e))?
        } else {
            vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]
        };
        let writable = matches!(mode, OpenMode::ReadWrite { .. });
        if writable && !column_families.iter().any(|cf| cf == EXPIRING) {
            // A database of an earlier release gains it on its first
            // read-write open; a read-only open does without.
            options.create_missing_column_families(true);
            column_families.push(EXPIRING.to_string());
        }
        let descriptors = column_families.iter().map(|name| {
            let mut cf_options = options.clone();
            if name == EXPIRING {
                cf_options.set_compaction_filter("rkv.expired", drop_expired);
            }
            ColumnFamilyDescriptor::new(name, cf_options)
        });
        let opened = match mode {
            OpenMode::ReadWrite { .. } => DB::open_cf_descriptors(&options, path, descriptors),
            OpenMode::ReadOnly => {
                DB::open_cf_descriptors_read_only(&options, path, descriptors, false)
            }
        };
        let inner = opened.map_err(|e| classify_open_error(path, e))?;
        let may_expire = inner.cf_handle(EXPIRING).is_some_and(|cf| {
            let mut first = inner.iterator_cf(cf, IteratorMode::Start);
            first.next().is_some()
        });
        Ok(Db {
            may_expire: std::sync::atomic::AtomicBool::new(may_expire),
            inner,
            path: path.to_path_buf(),
            write_options: WriteOptions::default(),
            write_failure: std::sync::Mutex::new(None),
            write_failed: std::sync::atomic::AtomicBool::new(false),
            write_lock: std::sync::Mutex::new(()),
        })
    }

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
        self.track(result, "write a batch")
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

    /// The figures that explain a database's load, for metrics: estimated
    /// keys, live SST bytes, memtable bytes, pending compaction bytes and
    /// block cache use (0 where RocksDB has none).
    pub fn load_figures(&self) -> LoadFigures {
        // Per column family in RocksDB, summed here; the cache is shared.
        let int = |name: &str| {
            let plain = self.inner.property_int_value(name).ok().flatten();
            let expiring = self
                .expiring()
                .and_then(|cf| self.inner.property_int_value_cf(cf, name).ok().flatten());
            plain.unwrap_or(0) + expiring.unwrap_or(0)
        };
        let cache = |name: &str| self.inner.property_int_value(name).ok().flatten();
        LoadFigures {
            keys: int("rocksdb.estimate-num-keys"),
            live_sst_bytes: int("rocksdb.live-sst-files-size"),
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

/// A block cache shared by the databases opened with it.
#[derive(Clone)]
pub struct BlockCache(rocksdb::Cache);

/// Bits per key of the bloom filters: about 1% false positives.
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// The memtable size: the master flushes it at every backup anyway, and a
/// smaller skiplist is faster to insert into (64 MiB, RocksDB's default,
/// made SETs with backups off slower than with backups on).
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// L0 files that start a compaction. A backup flushes the memtable, so at
/// short intervals L0 files are small and many; each L0 compaction rewrites
/// the overlapping base level, and every rewrite is new bytes the next
/// backup copies and retention keeps until `--keep-within` passes. Waiting
/// for more L0 files rewrites less often; bloom filters keep reads over
/// several L0 files cheap.
const L0_COMPACTION_TRIGGER: i32 = 8;

/// The write path of a read-write database (the master's).
fn tune_writes(options: &mut Options) {
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_max_write_buffer_number(4);
    options.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);
    options.set_level_zero_slowdown_writes_trigger(L0_COMPACTION_TRIGGER * 4);
    options.set_level_zero_stop_writes_trigger(L0_COMPACTION_TRIGGER * 6);
    // Flushes and compactions on their own threads, so a compaction never
    // holds up the flush a backup waits for.
    options.set_max_background_jobs(4);
}

impl BlockCache {
    /// An LRU cache of `bytes`.
    pub fn new(bytes: usize) -> BlockCache {
        BlockCache(rocksdb::Cache::new_lru_cache(bytes))
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

/// Whether `path` holds a RocksDB database (its `CURRENT` file).
pub fn holds_db(path: &Path) -> bool {
    path.join("CURRENT").is_file()
}

/// Whether another process holds the RocksDB lock of the database at `path`.
///
/// RocksDB locks `<db>/LOCK` with a POSIX record lock (`fcntl(F_SETLK)`), so a
/// `F_GETLK` query sees it without taking it and without touching the database.
pub fn is_locked(path: &Path) -> Result<bool> {
    let lock_path = path.join("LOCK");
    let file = match std::fs::File::open(&lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("open {}", lock_path.display()), e)),
    };
    // SAFETY: `flock` is plain data; all-zero is a valid value for it.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the fd is open for the whole call and `query` is a valid flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(
            format!("query the lock on {}", lock_path.display()),
            e,
        ));
    }
    Ok(query.l_type != libc::F_UNLCK as libc::c_short)
}

/// Turns RocksDB's open errors into the meanings a user acts on.
fn classify_open_error(path: &Path, error: rocksdb::Error) -> Error {
    let message = error.to_string();
    if message.contains("While lock file") || message.contains("lock hold by current process") {
        Error::DbLocked {
            path: path.to_path_buf(),
        }
    } else if message.contains("does not exist (create_if_missing is false)") {
        Error::DbNotFound {
            path: path.to_path_buf(),
        }
    } else {
        Error::rocksdb(format!("open the database at {}", path.display()), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(create_if_missing: bool) -> OpenMode {
        OpenMode::ReadWrite { create_if_missing }
    }

    #[test]
    fn missing_db_is_db_not_found_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        assert!(matches!(
            Db::open(&path, rw(false)),
            Err(Error::DbNotFound { .. })
        ));
        assert!(matches!(
            Db::open(&path, OpenMode::ReadOnly),
            Err(Error::DbNotFound { .. })
        ));
        let db = Db::open(&path, rw(true)).unwrap();
        db.put(b"k", b"v").unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn iter_honours_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), rw(true)).unwrap();
        for k in ["a", "b", "c", "d"] {
            db.put(k.as_bytes(), b"x").unwrap();
        }
        let range = ScanRange {
            from: Some(b"b".to_vec()),
            to: Some(b"d".to_vec()),
        };
        let keys: Vec<_> = db.iter(&range).map(|e| e.unwrap().0).collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(db.iter(&ScanRange::default()).count(), 4);
    }

    /// Writes `key` with a deadline `ms_from_now` away.
    fn put_expiring(db: &Db, key: &[u8], value: &[u8], ms_from_now: u64) {
        let old = db.entry(key, now_ms()).unwrap();
        let mut batch = db.batch();
        batch.put(key, value, Some(now_ms() + ms_from_now), old.as_ref());
        db.write(batch).unwrap();
    }

    #[test]
    fn a_database_of_an_earlier_release_reads_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As rkv wrote databases before keys could expire: the default
            // column family only.
            let raw = DB::open_default(dir.path()).unwrap();
            raw.put(b"a", b"1").unwrap();
            raw.put(b"b", [0u8, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap();
        }
        let ro = Db::open(dir.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(
            ro.get(b"b").unwrap(),
            Some(vec![0u8, 0, 0, 0, 0, 0, 0, 0, 9])
        );
        assert_eq!(ro.iter(&ScanRange::default()).count(), 2);
        drop(ro);
        let rw = Db::open(dir.path(), rw(false)).unwrap();
        assert_eq!(rw.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        put_expiring(&rw, b"c", b"3", 60_000);
        let keys: Vec<_> = rw
            .iter(&ScanRange::default())
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_key_moves_between_the_families_and_reads_merge_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), rw(true)).unwrap();
        db.put(b"a", b"1").unwrap();
        put_expiring(&db, b"b", b"2", 60_000);
        db.put(b"c", b"3").unwrap();
        // b gets a plain value: its deadline goes with the old value.
        db.put(b"b", b"plain").unwrap();
        assert_eq!(db.expiring_entry(b"b").unwrap(), None);
        // a gets a deadline: it leaves the default family.
        put_expiring(&db, b"a", b"x", 60_000);
        assert_eq!(db.inner.get(b"a").unwrap(), None);
        let entries: Vec<_> = db
            .entries(&ScanRange::default(), now_ms())
            .map(|e| e.unwrap())
            .collect();
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(entries[0].1.expires_at.is_some());
        assert_eq!(entries[1].1.expires_at, None);
        db.delete(b"a").unwrap();
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.expiring_entry(b"a").unwrap(), None);
    }

    #[test]
    fn an_expired_key_is_invisible_at_once_and_compaction_reclaims_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), rw(true)).unwrap();
        put_expiring(&db, b"soon", b"v", 150);
        put_expiring(&db, b"later", b"w", 600_000);
        db.put(b"plain", b"p").unwrap();
        // Visible until its deadline (asked at a moment before it, as a
        // slow machine may not get to ask in time), gone from then on.
        let deadline = db
            .expiring_entry(b"soon")
            .unwrap()
            .unwrap()
            .expires_at
            .unwrap();
        let before = db.entry(b"soon", deadline - 1).unwrap().unwrap();
        assert_eq!(before.value, b"v");
        assert_eq!(db.entry(b"soon", deadline).unwrap(), None);
        while now_ms() <= deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(db.get(b"soon").unwrap(), None);
        let live: Vec<_> = db
            .iter(&ScanRange::default())
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(live, [b"later".to_vec(), b"plain".to_vec()]);
        // Still stored until compaction drops it.
        assert!(db.expiring_entry(b"soon").unwrap().is_some());
        db.compact().unwrap();
        assert_eq!(db.expiring_entry(b"soon").unwrap(), None);
        assert!(db.expiring_entry(b"later").unwrap().is_some());
    }

    #[test]
    fn delete_all_removes_every_key_of_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), rw(true)).unwrap();
        for k in [&b""[..], b"a", b"\xff\xff\xff"] {
            db.put(k, b"v").unwrap();
        }
        put_expiring(&db, b"\xff\xff\xff\xff", b"v", 60_000);
        let mut batch = db.batch();
        db.delete_all(&mut batch).unwrap();
        db.write(batch).unwrap();
        assert_eq!(db.iter(&ScanRange::default()).count(), 0);
        db.put(b"after", b"v").unwrap();
        assert_eq!(db.iter(&ScanRange::default()).count(), 1);
    }

    #[test]
    fn read_only_open_sees_data_and_does_not_lock() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path(), rw(true)).unwrap();
            db.put(b"k", b"v").unwrap();
        }
        let ro = Db::open(dir.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(ro.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // A read-write open still works while a read-only one is open.
        drop(Db::open(dir.path(), rw(false)).unwrap());
    }
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
