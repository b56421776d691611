//! A RocksDB database opened by rkv: how it is opened (read-write or
//! read-only), how RocksDB's open errors are turned into errors a user can act
//! on, and the key/value operations the CLI and the daemons share.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};

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
        let column_families = if holds_db(path) {
            DB::list_cf(&options, path).map_err(|e| classify_open_error(path, e))?
        } else {
            vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]
        };
        let opened = match mode {
            OpenMode::ReadWrite { .. } => DB::open_cf(&options, path, &column_families),
            OpenMode::ReadOnly => {
                DB::open_cf_for_read_only(&options, path, &column_families, false)
            }
        };
        let inner = opened.map_err(|e| classify_open_error(path, e))?;
        Ok(Db {
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

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner
            .get(key)
            .map_err(|e| Error::rocksdb("read a key", e))
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let result = self.inner.put_opt(key, value, &self.write_options);
        self.track(result, "write a key")
    }

    /// Removes `key`; removing an absent key is not an error.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let result = self.inner.delete_opt(key, &self.write_options);
        self.track(result, "delete a key")
    }

    /// Applies the puts and deletes of `batch` atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let result = self.inner.write_opt(&batch, &self.write_options);
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

    /// An iterator over the entries with `from <= key < to`, in key order.
    pub fn iter<'a>(
        &'a self,
        range: &ScanRange,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a {
        let mut read_options = ReadOptions::default();
        if let Some(to) = &range.to {
            read_options.set_iterate_upper_bound(to.clone());
        }
        let mode = match &range.from {
            Some(from) => IteratorMode::From(from, Direction::Forward),
            None => IteratorMode::Start,
        };
        self.inner.iterator_opt(mode, read_options).map(|item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(|e| Error::rocksdb("iterate over the database", e))
        })
    }

    /// RocksDB's estimate of the number of keys (exact after compaction).
    pub fn estimate_num_keys(&self) -> Result<u64> {
        self.inner
            .property_int_value("rocksdb.estimate-num-keys")
            .map(|n| n.unwrap_or(0))
            .map_err(|e| Error::rocksdb("read the key count estimate", e))
    }

    /// The figures that explain a database's load, for metrics: estimated
    /// keys, live SST bytes, memtable bytes, pending compaction bytes and
    /// block cache use (0 where RocksDB has none).
    pub fn load_figures(&self) -> LoadFigures {
        let int = |name: &str| {
            self.inner
                .property_int_value(name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        LoadFigures {
            keys: int("rocksdb.estimate-num-keys"),
            live_sst_bytes: int("rocksdb.live-sst-files-size"),
            memtable_bytes: int("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
            block_cache_bytes: int("rocksdb.block-cache-usage"),
        }
    }

    /// Writes the memtable to SST files.
    pub fn flush(&self) -> Result<()> {
        self.inner
            .flush()
            .map_err(|e| Error::rocksdb("flush the database", e))
    }

    /// Flushes, then compacts the whole key range into as few levels as
    /// possible (what `ldb compact` does): a database in steady state.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        self.inner.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
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
