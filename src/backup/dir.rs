//! [`BackupDir`]: the backup store on a directory (local disk or NFS), written
//! and read through RocksDB's BackupEngine, so that the directory stays a
//! plain RocksDB backup directory any stock RocksDB tool can restore.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rocksdb::backup::{
    BackupEngine, BackupEngineOptions, RestoreMode as EngineRestoreMode, RestoreOptions,
    ShareFilesNaming,
};
use rocksdb::Env;

use super::meta;
use super::{
    AppMetadata, BackupInfo, BackupLocation, BackupSource, Heartbeat, RestoreMode, RestoreStats,
};
use crate::db::{self};
use crate::error::{Error, Result};

/// The sub-directory holding one meta file per complete backup.
pub(super) const META_DIR: &str = "meta";
/// The master's heartbeat, beside BackupEngine's directories (which
/// BackupEngine and stock RocksDB tools ignore).
const HEARTBEAT: &str = "rkv-heartbeat.json";
/// The sub-directory holding SST files shared between backups.
pub(super) const SHARED_DIR: &str = "shared_checksum";
/// The sub-directory holding each backup's own files (`private/<id>/`).
pub(super) const PRIVATE_DIR: &str = "private";
/// The file a running master holds a lock on: a second master on the same
/// host (or on a filesystem whose locks work across hosts) is refused at once.
pub(super) const MASTER_LOCK: &str = "rkv-master.lock";

/// A backup directory in RocksDB's BackupEngine layout (`meta/`, `private/`,
/// `shared_checksum/`).
#[derive(Debug, Clone)]
pub struct BackupDir {
    path: PathBuf,
    /// Bytes per second a restore may copy; 0 is unlimited.
    restore_rate_limit: u64,
    /// How many files a backup or restore copies at once.
    copy_threads: u32,
    /// The master's engine, opened once: opening one reads every retained
    /// meta file and lists every shared file, which a backup every 100 ms
    /// cannot pay twice a cycle. Only the writer keeps one (it alone changes
    /// the directory, so its view stays true); it is dropped whenever rkv
    /// changes the directory behind it (healing) or it fails.
    writer: Arc<WriterEngine>,
    /// Whether the master writing here was fenced off (by a heartbeat of
    /// another's): shared by every clone.
    fence: Arc<super::Fence>,
}

/// The cached writer engine (BackupEngine is `Send` but not `Sync`), with
/// what the directory looked like when it was last used.
#[derive(Default)]
struct WriterEngine(Mutex<Option<(BackupEngine, Fingerprint)>>);

/// What tells that a backup directory is still the one an engine loaded:
/// the inodes of the directory and of `meta/`, and the newest complete
/// backup in it. A directory replaced or rewritten behind the engine
/// changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dir: (u64, u64),
    meta: (u64, u64),
    newest: Option<u32>,
}

impl std::fmt::Debug for WriterEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterEngine")
    }
}

impl BackupDir {
    /// A store at `path`; nothing is touched until a method is called.
    pub fn new(path: impl Into<PathBuf>) -> BackupDir {
        BackupDir {
            path: path.into(),
            restore_rate_limit: 0,
            copy_threads: DEFAULT_COPY_THREADS,
            writer: Arc::default(),
            fence: Arc::default(),
        }
    }

    /// Caps how fast restores copy, in bytes per second (0: no cap), so a
    /// follower catching up does not starve its readers of disk bandwidth.
    pub fn with_restore_rate_limit(mut self, bytes_per_second: u64) -> BackupDir {
        self.restore_rate_limit = bytes_per_second;
        self
    }

    /// How many files a backup or restore copies at once (at least 1).
    pub fn with_copy_threads(mut self, threads: u32) -> BackupDir {
        self.copy_threads = threads.max(1);
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of backup `id`'s meta file; it exists only once the backup is
    /// complete (BackupEngine writes `meta/.<id>.tmp` and renames it).
    pub(super) fn meta_path(&self, id: u32) -> PathBuf {
        self.path.join(META_DIR).join(id.to_string())
    }

    /// Reads and parses backup `id`'s meta file: the backup's files and
    /// their checksums (for tools such as the fault suite; the daemons go
    /// through [`BackupSource`] and [`BackupSink`]).
    pub fn read_meta(&self, id: u32) -> Result<meta::BackupMeta> {
        let path = self.meta_path(id);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::BackupNotFound {
                    id,
                    location: self.location(),
                }
            } else {
                Error::io(format!("read {}", path.display()), e)
            }
        })?;
        meta::parse(&text).map_err(|e| Error::BackupCorrupt {
            id,
            detail: format!("meta file {}: {e}", path.display()),
        })
    }

    /// The error for backup `id`, whose meta file exists but which RocksDB
    /// cannot load: the damaged file, when one can be named.
    fn unloadable(&self, id: u32) -> Error {
        Error::BackupCorrupt {
            id,
            detail: self.damage_in(id).unwrap_or_else(|| {
                "RocksDB cannot load it (a file it lists is missing or has the wrong size)"
                    .to_string()
            }),
        }
    }

    /// Opens a BackupEngine on the directory. For reading, the directory must
    /// already be a backup directory: opening an engine creates the layout,
    /// and a reader must not write into a store it does not own.
    fn engine(&self, for_writing: bool) -> Result<BackupEngine> {
        if for_writing {
            fs::create_dir_all(&self.path)
                .map_err(|e| Error::io(format!("create {}", self.path.display()), e))?;
        } else {
            self.check_readable()?;
        }
        let context = || format!("open the backup directory {}", self.path.display());
        let mut options =
            BackupEngineOptions::new(&self.path).map_err(|e| Error::rocksdb(context(), e))?;
        options.set_share_table_files(true);
        options.set_share_files_with_checksum(true);
        options.set_share_files_with_checksum_naming(ShareFilesNaming::DEFAULT);
        // A backup's new files are synced one by one before its meta file
        // commits it. A restore's are not: the restore syncs what it copied
        // once at the end (`sync_restored`), which lets the kernel write
        // them back together instead of waiting on each.
        options.set_sync(for_writing);
        // Copy several files at once: a new follower's first restore is
        // mostly many large files.
        options.set_max_background_operations(self.copy_threads as i32);
        if self.restore_rate_limit > 0 {
            options.set_restore_rate_limit(self.restore_rate_limit);
        }
        let env = Env::new().map_err(|e| Error::rocksdb(context(), e))?;
        let mut attempts = 0;
        loop {
            match BackupEngine::open(&options, &env) {
                Ok(engine) => return Ok(engine),
                // The master purged a backup between the engine's listing of
                // meta/ and its reading of that backup's meta file: a race
                // with retention, not damage. A fresh look sees it gone.
                Err(e) if attempts < 3 && purged_while_opening(e.as_ref()) => attempts += 1,
                Err(e) => return Err(Error::rocksdb(context(), e)),
            }
        }
    }

    /// The master's long-lived engine, opened on first use and again
    /// whenever the directory is not the one it loaded.
    fn writer(&self) -> Result<WriterGuard<'_>> {
        let mut slot = self.writer.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.fingerprint();
        if slot.as_ref().is_none_or(|(_, seen)| Some(*seen) != now) {
            if slot.take().is_some() {
                tracing::warn!(
                    "the backup directory {} changed behind the master; loading it again",
                    self.path.display()
                );
            }
            let engine = self.engine(true)?;
            let seen = self.fingerprint().ok_or_else(|| Error::BackupDirMissing {
                location: self.location(),
            })?;
            *slot = Some((engine, seen));
        }
        Ok(WriterGuard(slot))
    }

    /// The directory as it is now; `None` when it or `meta/` is missing.
    fn fingerprint(&self) -> Option<Fingerprint> {
        let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        Some(Fingerprint {
            dir: id(&self.path)?,
            meta: id(&self.path.join(META_DIR))?,
            newest: self.newest_id().ok()?,
        })
    }

    /// Forgets the writer engine: the directory changed behind it, or it
    /// failed and may hold a view that is no longer true.
    fn forget_writer(&self) {
        *self.writer.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `Ok` when the directory exists and has the backup layout.
    fn check_readable(&self) -> Result<()> {
        if !self.path.is_dir() {
            return Err(Error::BackupDirMissing {
                location: self.location(),
            });
        }
        if !self.path.join(META_DIR).is_dir() {
            return Err(Error::NoBackups {
                location: self.location(),
            });
        }
        Ok(())
    }

    /// The file names in `shared_checksum/` now.
    pub(super) fn shared_files(&self) -> HashSet<String> {
        let Ok(entries) = fs::read_dir(self.path.join(SHARED_DIR)) else {
            return HashSet::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| format!("{SHARED_DIR}/{}", e.file_name().to_string_lossy()))
            .collect()
    }

    /// Reads `path` whole and returns its crc32c.
    pub(super) fn crc32c_of(path: &Path) -> std::io::Result<u32> {
        let mut file = fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut crc = 0u32;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(crc);
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
        }
    }
}

impl BackupSource for BackupDir {
    fn location(&self) -> BackupLocation {
        BackupLocation::Dir(self.path.clone())
    }

    fn files(&self, ids: &[u32]) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut files = std::collections::BTreeMap::new();
        for &id in ids {
            for f in self.read_meta(id)?.files {
                // Sizes are in the meta file from schema 2 on; else on disk.
                let size = f.size.unwrap_or_else(|| {
                    fs::metadata(self.path.join(&f.path)).map_or(0, |m| m.len())
                });
                files.insert(f.path, size);
            }
        }
        Ok(files)
    }

    fn find_damage(&self, id: u32) -> Result<Option<String>> {
        Ok(self.damage_in(id))
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        // A complete backup appears as a file renamed into meta/; the
        // heartbeat is renamed into the directory itself; a segment is
        // linked into log/.
        vec![
            self.path.join(META_DIR),
            self.path.clone(),
            self.path.join(crate::tail::store::LOG_DIR),
        ]
    }

    fn list(&self) -> Result<Vec<BackupInfo>> {
        match self.check_readable() {
            Err(Error::NoBackups { .. }) => return Ok(Vec::new()),
            other => other?,
        }
        Ok(infos(&self.engine(false)?))
    }

    fn newest_id(&self) -> Result<Option<u32>> {
        match self.check_readable() {
            Err(Error::NoBackups { .. }) => return Ok(None),
            other => other?,
        }
        let meta = self.path.join(META_DIR);
        let entries =
            fs::read_dir(&meta).map_err(|e| Error::io(format!("list {}", meta.display()), e))?;
        // Complete backups only: BackupEngine writes `.<id>.tmp` and renames
        // it to `<id>`.
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max())
    }

    fn describe(&self, id: u32) -> Result<BackupInfo> {
        let meta = self.read_meta(id)?;
        let mut size = 0;
        for file in &meta.files {
            size += self
                .present_size(file)
                .map_err(|detail| Error::BackupCorrupt { id, detail })?;
        }
        Ok(BackupInfo {
            id,
            timestamp: meta.timestamp,
            size,
            files: meta.files.len() as u32,
            metadata: AppMetadata::parse(&meta.app_metadata),
        })
    }

    fn verify(&self, id: u32, meter: &crate::progress::Meter) -> Result<()> {
        let engine = self.engine(false)?;
        if !engine.get_backup_info().iter().any(|b| b.backup_id == id) {
            // RocksDB leaves a backup whose files are missing or truncated out
            // of its list; tell that apart from an id that never existed.
            if self.meta_path(id).is_file() {
                return Err(self.unloadable(id));
            }
            return Err(Error::BackupNotFound {
                id,
                location: self.location(),
            });
        }
        engine.verify_backup(id).map_err(|e| Error::BackupCorrupt {
            id,
            detail: e.to_string(),
        })?;
        for file in &self.read_meta(id)?.files {
            if let Some(detail) = self.check_file(file) {
                return Err(Error::BackupCorrupt { id, detail });
            }
            // Older meta files record no sizes: the file's own is checked.
            meter.file_done(self.present_size(file).unwrap_or(0));
        }
        Ok(())
    }

    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
        let started = Instant::now();
        // One engine for the lookup and the restore: opening one reads every
        // meta file and lists every shared file.
        let mut engine = self.engine(false)?;
        let backups = infos(&engine);
        let id = match id {
            None => backups
                .last()
                .map(|b| b.id)
                .ok_or_else(|| Error::NoBackups {
                    location: self.location(),
                })?,
            Some(id) if backups.iter().any(|b| b.id == id) => id,
            Some(id) if self.meta_path(id).is_file() => return Err(self.unloadable(id)),
            Some(id) => {
                return Err(Error::BackupNotFound {
                    id,
                    location: self.location(),
                })
            }
        };
        if db::holds_db(dest) && db::is_locked(dest)? {
            return Err(Error::RestoreTargetInUse {
                path: dest.to_path_buf(),
            });
        }
        let before = snapshot(dest);
        let mut options = RestoreOptions::default();
        options.set_keep_log_files(false);
        options.set_mode(match mode {
            RestoreMode::Full => EngineRestoreMode::KPurgeAllFiles,
            RestoreMode::KeepMatchingFiles => EngineRestoreMode::KKeepLatestDbSessionIdFiles,
        });
        engine
            .restore_from_backup(dest, dest, &options, id)
            .map_err(|e| {
                if e.kind() == rocksdb::ErrorKind::Corruption {
                    let message = e.to_string();
                    // RocksDB's message names no file; find it.
                    Error::BackupCorrupt {
                        id,
                        detail: self.damage_in(id).unwrap_or(message),
                    }
                } else {
                    Error::rocksdb(format!("restore backup {id} into {}", dest.display()), e)
                }
            })?;
        let after = snapshot(dest);
        let mut stats = RestoreStats {
            id,
            bytes_copied: 0,
            files_copied: 0,
            files_kept: 0,
            duration: Duration::ZERO,
        };
        let mut copied = Vec::new();
        for (name, (inode, size)) in &after {
            if before.get(name).is_some_and(|(old, _)| old == inode) {
                stats.files_kept += 1;
            } else {
                stats.files_copied += 1;
                stats.bytes_copied += size;
                copied.push(name.clone());
            }
        }
        sync_restored(dest, &copied)?;
        stats.duration = started.elapsed();
        Ok(stats)
    }

    fn contains(&self, id: u32) -> Result<bool> {
        let path = self.meta_path(id);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("look for {}", path.display()), e)),
        }
    }

    fn log(&self) -> Option<&dyn crate::tail::store::LogSource> {
        Some(self)
    }

    fn read_heartbeat(&self) -> Option<Heartbeat> {
        let bytes = fs::read(self.path.join(HEARTBEAT)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// How many files a backup or restore copies at once unless told.
const DEFAULT_COPY_THREADS: u32 = 4;

/// The writer engine, locked.
struct WriterGuard<'a>(MutexGuard<'a, Option<(BackupEngine, Fingerprint)>>);

impl WriterGuard<'_> {
    /// Records backup `id`, just made through the engine, as the newest, so
    /// the next use knows nothing else changed the directory.
    fn made(&mut self, id: u32) {
        self.0.as_mut().expect("the writer engine is open").1.newest = Some(id);
    }
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = BackupEngine;

    fn deref(&self) -> &BackupEngine {
        &self.0.as_ref().expect("the writer engine is open").0
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut BackupEngine {
        &mut self.0.as_mut().expect("the writer engine is open").0
    }
}

/// Whether an engine's open failed on a meta file that vanished after it
/// listed `meta/`: an I/O error naming it, or (when the file went between
/// RocksDB's existence check and its read) a bare `NotFound`.
fn purged_while_opening(message: &str) -> bool {
    (message.contains("No such file or directory") && message.contains(&format!("{META_DIR}/")))
        || message.trim() == "NotFound:"
}

/// Makes the files a restore copied into `dir` durable, and the directory's
/// entries: the engine copied them without syncing each.
fn sync_restored(dir: &Path, copied: &[String]) -> Result<()> {
    let sync = |path: &Path| -> std::io::Result<()> { fs::File::open(path)?.sync_all() };
    for name in copied {
        let path = dir.join(name);
        sync(&path).map_err(|e| Error::io(format!("sync {}", path.display()), e))?;
    }
    sync(dir).map_err(|e| Error::io(format!("sync {}", dir.display()), e))
}

/// The complete backups an engine sees, oldest first.
fn infos(engine: &BackupEngine) -> Vec<BackupInfo> {
    let mut backups: Vec<BackupInfo> = engine
        .get_backup_info()
        .into_iter()
        .map(|info| BackupInfo {
            id: info.backup_id,
            timestamp: info.timestamp.max(0) as u64,
            size: info.size,
            files: info.num_files,
            metadata: AppMetadata::parse(&info.app_metadata),
        })
        .collect();
    backups.sort_by_key(|b| b.id);
    backups
}

/// The regular files of `dir` with their inode and size: a file restored anew
/// gets a new inode, a file kept keeps its own.
fn snapshot(dir: &Path) -> HashMap<String, (u64, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                (meta.ino(), meta.len()),
            ))
        })
        .collect()
}

mod log;
mod write;

#[cfg(test)]
mod tests;
