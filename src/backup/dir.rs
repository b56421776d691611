//! [`BackupDir`]: the backup store on a directory (local disk or NFS), written
//! and read through RocksDB's BackupEngine, so that the directory stays a
//! plain RocksDB backup directory any stock RocksDB tool can restore.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rocksdb::backup::{
    BackupEngine, BackupEngineOptions, CreateBackupOptions, RestoreMode as EngineRestoreMode,
    RestoreOptions, ShareFilesNaming,
};
use rocksdb::Env;

use super::heal::size_mismatch_file;
use super::meta;
use super::{
    unix_ms, AppMetadata, BackupInfo, BackupSink, BackupSource, CreateStats, Damage, Heartbeat,
    RestoreMode, RestoreStats, Retention, ScrubCursor,
};
use crate::db::{self, Db};
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
}

impl BackupDir {
    /// A store at `path`; nothing is touched until a method is called.
    pub fn new(path: impl Into<PathBuf>) -> BackupDir {
        BackupDir {
            path: path.into(),
            restore_rate_limit: 0,
        }
    }

    /// Caps how fast restores copy, in bytes per second (0: no cap), so a
    /// follower catching up does not starve its readers of disk bandwidth.
    pub fn with_restore_rate_limit(mut self, bytes_per_second: u64) -> BackupDir {
        self.restore_rate_limit = bytes_per_second;
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
                    path: self.path.clone(),
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
        options.set_sync(true);
        if self.restore_rate_limit > 0 {
            options.set_restore_rate_limit(self.restore_rate_limit);
        }
        let env = Env::new().map_err(|e| Error::rocksdb(context(), e))?;
        BackupEngine::open(&options, &env).map_err(|e| Error::rocksdb(context(), e))
    }

    /// `Ok` when the directory exists and has the backup layout.
    fn check_readable(&self) -> Result<()> {
        if !self.path.is_dir() {
            return Err(Error::BackupDirMissing {
                path: self.path.clone(),
            });
        }
        if !self.path.join(META_DIR).is_dir() {
            return Err(Error::NoBackups {
                path: self.path.clone(),
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
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn find_damage(&self, id: u32) -> Option<String> {
        self.damage_in(id)
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        // A complete backup appears as a file renamed into meta/; the
        // heartbeat is renamed into the directory itself.
        vec![self.path.join(META_DIR), self.path.clone()]
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

    fn verify(&self, id: u32) -> Result<()> {
        let engine = self.engine(false)?;
        if !engine.get_backup_info().iter().any(|b| b.backup_id == id) {
            // RocksDB leaves a backup whose files are missing or truncated out
            // of its list; tell that apart from an id that never existed.
            if self.meta_path(id).is_file() {
                return Err(self.unloadable(id));
            }
            return Err(Error::BackupNotFound {
                id,
                path: self.path.clone(),
            });
        }
        engine.verify_backup(id).map_err(|e| Error::BackupCorrupt {
            id,
            detail: e.to_string(),
        })?;
        match self
            .read_meta(id)?
            .files
            .iter()
            .find_map(|f| self.check_file(f))
        {
            Some(detail) => Err(Error::BackupCorrupt { id, detail }),
            None => Ok(()),
        }
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
                    path: self.path.clone(),
                })?,
            Some(id) if backups.iter().any(|b| b.id == id) => id,
            Some(id) if self.meta_path(id).is_file() => return Err(self.unloadable(id)),
            Some(id) => {
                return Err(Error::BackupNotFound {
                    id,
                    path: self.path.clone(),
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
        for (name, (inode, size)) in &after {
            if before.get(name).is_some_and(|(old, _)| old == inode) {
                stats.files_kept += 1;
            } else {
                stats.files_copied += 1;
                stats.bytes_copied += size;
            }
        }
        stats.duration = started.elapsed();
        Ok(stats)
    }

    fn contains(&self, id: u32) -> bool {
        self.meta_path(id).exists()
    }

    fn read_heartbeat(&self) -> Option<Heartbeat> {
        let bytes = fs::read(self.path.join(HEARTBEAT)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl BackupSink for BackupDir {
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        let started = Instant::now();
        let mut engine = self.engine(true)?;
        let shared_before = self.shared_files();
        let metadata = AppMetadata {
            v: AppMetadata::VERSION,
            seq: db.latest_sequence_number(),
            created_ms: unix_ms(SystemTime::now()),
            master: master.to_string(),
            db_id: db.identity(),
        };
        let json = serde_json::to_vec(&metadata).expect("metadata serializes");
        let mut options = CreateBackupOptions::default();
        options.set_flush_before_backup(true);
        let id = engine
            .create_new_backup_with_metadata(db.rocksdb(), &options, &json)
            .map_err(|e| match (e.kind(), size_mismatch_file(e.as_ref())) {
                // A shared file in the store no longer has the size its name
                // records: every backup would fail on it until it is replaced.
                (rocksdb::ErrorKind::Corruption, Some(path)) => Error::DamagedFile {
                    path,
                    detail: "its size differs from the size its name records".to_string(),
                },
                _ => Error::rocksdb(format!("create a backup in {}", self.path.display()), e),
            })?;
        let info = engine
            .get_backup_info()
            .into_iter()
            .find(|info| info.backup_id == id)
            .map(|info| BackupInfo {
                id,
                timestamp: info.timestamp.max(0) as u64,
                size: info.size,
                files: info.num_files,
                metadata: Some(metadata),
            })
            .ok_or_else(|| Error::BackupNotFound {
                id,
                path: self.path.clone(),
            })?;
        let (mut bytes_copied, mut files_copied) = (0, 0);
        for file in self.read_meta(id)?.files {
            if !shared_before.contains(&file.path) {
                files_copied += 1;
                bytes_copied += fs::metadata(self.path.join(&file.path))
                    .map(|m| m.len())
                    .unwrap_or(0);
                // Read back what was just written: a copy damaged on its way
                // to the store is found now, not by the follower that needs it.
                if let Some(detail) = self.check_file(&file) {
                    return Err(Error::DamagedFile {
                        path: file.path,
                        detail,
                    });
                }
            }
        }
        Ok(CreateStats {
            info,
            bytes_copied,
            files_copied,
            duration: started.elapsed(),
        })
    }

    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>> {
        let backups = self.list()?;
        let keep = retention.keep_count(&backups, now);
        if keep >= backups.len() {
            return Ok(Vec::new());
        }
        let mut engine = self.engine(true)?;
        engine.purge_old_backups(keep).map_err(|e| {
            Error::rocksdb(format!("purge old backups in {}", self.path.display()), e)
        })?;
        Ok(backups[..backups.len() - keep]
            .iter()
            .map(|b| b.id)
            .collect())
    }

    fn write_heartbeat(&self, heartbeat: &Heartbeat) -> Result<()> {
        let path = self.path.join(HEARTBEAT);
        let tmp = self.path.join(format!(".{HEARTBEAT}.tmp"));
        let json = serde_json::to_vec(heartbeat).expect("heartbeat serializes");
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    fn lock_for_master(&self) -> Result<Option<fs::File>> {
        self.take_master_lock()
    }

    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        self.scrub_files(cursor, budget)
    }

    fn remove_damaged(&self, damage: &[Damage]) -> Result<()> {
        self.remove_damaged_files(damage)
    }

    fn drop_incomplete(&self) -> Result<Vec<u32>> {
        self.drop_incomplete_backups()
    }
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

#[cfg(test)]
mod tests;
