//! How a database is opened: read-write or read-only, with what tuning
//! (block cache, bloom filters, the master's write path), and how
//! RocksDB's open errors become errors a user can act on.

use std::os::fd::AsRawFd;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteOptions, DB};

use super::{drop_expired, Db, EXPIRING};
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

impl Db {
    /// Opens the database at `path`.
    ///
    /// Errors: [`Error::DbNotFound`] when the directory holds no database (and
    /// `create_if_missing` is off, or the mode is read-only),
    /// [`Error::DbLocked`] when another process holds it read-write.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Db> {
        OpenOptions::new(mode).open(path)
    }

    /// A new database in `dir/db`, for the unit tests.
    #[cfg(test)]
    pub(crate) fn scratch(dir: &Path) -> Db {
        let mode = OpenMode::ReadWrite {
            create_if_missing: true,
        };
        Db::open(&dir.join("db"), mode).expect("open a scratch database")
    }

    /// [`Db::scratch`] keeping its write-ahead log a minute past a flush,
    /// as a master that ships its log does.
    #[cfg(test)]
    pub(crate) fn scratch_keeping_log(dir: &Path) -> Db {
        let mode = OpenMode::ReadWrite {
            create_if_missing: true,
        };
        OpenOptions::new(mode)
            .keep_log(Some(std::time::Duration::from_secs(60)))
            .open(&dir.join("db"))
            .expect("open a scratch database")
    }
}

/// How to open a database: the mode, and what a daemon tunes.
#[derive(Clone, Copy)]
pub struct OpenOptions<'a> {
    mode: OpenMode,
    cache: Option<&'a BlockCache>,
    max_open_files: Option<i32>,
    keep_log: Option<std::time::Duration>,
}

impl<'a> OpenOptions<'a> {
    /// Opens in `mode`, with RocksDB's defaults otherwise.
    pub fn new(mode: OpenMode) -> OpenOptions<'a> {
        OpenOptions {
            mode,
            cache: None,
            max_open_files: None,
            keep_log: None,
        }
    }

    /// Keeps write-ahead log files for `ttl` after RocksDB no longer needs
    /// them (in the database's `archive/`), so the live tail can still read
    /// writes a flush has made obsolete: a shipper that fell behind, or a
    /// restart, resumes from the log rather than from a new backup.
    /// RocksDB checks every `ttl / 2`, so a file stays up to 1.5 × `ttl`.
    pub fn keep_log(mut self, ttl: Option<std::time::Duration>) -> OpenOptions<'a> {
        self.keep_log = ttl;
        self
    }

    /// Caches data blocks in `cache`, which several databases may share.
    /// Blocks are keyed by the SST file's identity, so a follower's new
    /// generation finds the blocks its SST files (hard links of the
    /// previous generation's) already had cached.
    pub fn cache(mut self, cache: Option<&'a BlockCache>) -> OpenOptions<'a> {
        self.cache = cache;
        self
    }

    /// Caps the files RocksDB keeps open: past the cap, it closes SST files
    /// and opens them again by path when read. `None`: all stay open.
    pub fn max_open_files(mut self, n: Option<i32>) -> OpenOptions<'a> {
        self.max_open_files = n;
        self
    }

    /// Opens the database at `path` (see [`Db::open`] for the errors).
    pub fn open(&self, path: &Path) -> Result<Db> {
        let OpenOptions {
            mode,
            cache,
            max_open_files,
            keep_log,
        } = *self;
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
            if let Some(ttl) = keep_log {
                options.set_wal_ttl_seconds(ttl.as_secs().max(1));
            }
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
            captured: std::sync::OnceLock::new(),
        })
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
    /// A cache of `bytes`: RocksDB's HyperClockCache, whose lookups take
    /// no lock. Every GET looks up a filter, an index and a data block;
    /// with the LRU cache's sharded mutexes those lookups were a sixth of a
    /// follower's time under GETs from two workers, and its GET rate rose
    /// by about a fifth without them (alternated rounds, 1 M keys; see
    /// BENCHMARKS.md). The entry size is left to the cache to learn.
    pub fn new(bytes: usize) -> BlockCache {
        BlockCache(rocksdb::Cache::new_hyper_clock_cache(bytes, 0))
    }
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
