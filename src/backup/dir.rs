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

use super::meta;
use super::{
    unix_ms, AppMetadata, BackupInfo, BackupSink, BackupSource, CreateStats, Damage, Heartbeat,
    RestoreMode, RestoreStats, Retention, ScrubCursor,
};
use crate::db::{self, Db};
use crate::error::{Error, Result};

/// The sub-directory holding one meta file per complete backup.
const META_DIR: &str = "meta";
/// The master's heartbeat, beside BackupEngine's directories (which
/// BackupEngine and stock RocksDB tools ignore).
const HEARTBEAT: &str = "rkv-heartbeat.json";
/// The sub-directory holding SST files shared between backups.
const SHARED_DIR: &str = "shared_checksum";
/// The sub-directory holding each backup's own files (`private/<id>/`).
const PRIVATE_DIR: &str = "private";
/// The file a running master holds a lock on: a second master on the same
/// host (or on a filesystem whose locks work across hosts) is refused at once.
const MASTER_LOCK: &str = "rkv-master.lock";

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
    fn meta_path(&self, id: u32) -> PathBuf {
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
    fn shared_files(&self) -> HashSet<String> {
        let Ok(entries) = fs::read_dir(self.path.join(SHARED_DIR)) else {
            return HashSet::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| format!("{SHARED_DIR}/{}", e.file_name().to_string_lossy()))
            .collect()
    }

    /// Reads `path` whole and returns its crc32c.
    fn crc32c_of(path: &Path) -> std::io::Result<u32> {
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

    /// Why the store's copy of `file` is not what a backup recorded, if it
    /// is not: missing, another size, or another crc32c.
    fn check_file(&self, file: &meta::MetaFile) -> Option<String> {
        let path = self.path.join(&file.path);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("{} is missing", file.path))
            }
            Err(e) => return Some(format!("cannot read {}: {e}", file.path)),
        };
        // Shared files name their size: `<number>_s<session>_<crc>_<size>.sst`
        // in RocksDB's default naming; the meta file may also record it.
        let expected_len = file.size.or_else(|| shared_file_size(&file.path));
        if let Some(expected) = expected_len.filter(|&n| n != len) {
            return Some(format!(
                "{} has {len} bytes, the backup records {expected}",
                file.path
            ));
        }
        let expected = file.crc32c?;
        match Self::crc32c_of(&path) {
            Ok(actual) if actual == expected => None,
            Ok(actual) => Some(format!(
                "{} has crc32c {actual}, the backup records {expected}",
                file.path
            )),
            Err(e) => Some(format!("cannot read {}: {e}", file.path)),
        }
    }

    /// The first file of backup `id` that is damaged, described; `None` when
    /// every file checks (or the meta file cannot be read).
    fn damage_in(&self, id: u32) -> Option<String> {
        match self.read_meta(id) {
            Ok(meta) => meta.files.iter().find_map(|f| self.check_file(f)),
            Err(Error::BackupCorrupt { detail, .. }) => Some(detail),
            Err(_) => None,
        }
    }

    /// The ids in `meta/`, ascending: complete backups, loadable or not.
    fn meta_ids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(self.path.join(META_DIR)) else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Takes the master's lock on the directory (creating it if needed).
    /// [`Error::BackupDirLocked`] when another process holds it; `Ok(None)`
    /// when the filesystem has no working locks (the lease in the heartbeat
    /// still fences a second master there).
    fn take_master_lock(&self) -> Result<Option<fs::File>> {
        fs::create_dir_all(&self.path)
            .map_err(|e| Error::io(format!("create {}", self.path.display()), e))?;
        let path = self.path.join(MASTER_LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Err(Error::BackupDirLocked {
                path: self.path.clone(),
                owner: None,
            }),
            Err(fs::TryLockError::Error(e)) => {
                tracing::warn!(
                    error = %e,
                    "cannot lock {}; relying on the heartbeat lease alone",
                    path.display()
                );
                Ok(None)
            }
        }
    }

    /// Checks the files of the retained backups against their crc32c,
    /// going on from `cursor` and reading at most `budget` bytes, so that a
    /// large directory is scrubbed over several calls; wraps around at the
    /// end. Meta files that cannot be parsed count as damaged too.
    fn scrub_files(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        let mut files: Vec<(String, meta::MetaFile, Vec<u32>)> = Vec::new();
        let mut damage = Vec::new();
        let mut by_path: HashMap<String, usize> = HashMap::new();
        for id in self.meta_ids() {
            match self.read_meta(id) {
                Ok(meta) => {
                    for file in meta.files {
                        match by_path.get(&file.path) {
                            Some(&i) => files[i].2.push(id),
                            None => {
                                by_path.insert(file.path.clone(), files.len());
                                files.push((file.path.clone(), file, vec![id]));
                            }
                        }
                    }
                }
                Err(Error::BackupCorrupt { detail, .. }) => damage.push(Damage {
                    path: format!("{META_DIR}/{id}"),
                    detail,
                    backups: vec![id],
                }),
                Err(_) => {} // purged meanwhile
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let start = files.partition_point(|f| f.0 <= cursor.after);
        let mut read = 0u64;
        let mut checked = 0usize;
        for (path, file, backups) in files[start..].iter().chain(files[..start].iter()) {
            if read >= budget || checked == files.len() {
                break;
            }
            checked += 1;
            read += fs::metadata(self.path.join(path)).map_or(0, |m| m.len());
            cursor.after = path.clone();
            if let Some(detail) = self.check_file(file) {
                damage.push(Damage {
                    path: path.clone(),
                    detail,
                    backups: backups.clone(),
                });
            }
        }
        cursor.files_checked += checked as u64;
        cursor.bytes_checked += read;
        damage
    }

    /// Removes damaged files from the store, so that the next backup copies
    /// them again from the database (a shared file's name is its content's
    /// identity: a fresh copy is what every backup listing it recorded).
    /// A damaged meta file takes its backup with it, unless it is the
    /// newest: [`BackupSink::drop_incomplete`] drops that one once a newer
    /// backup exists.
    fn remove_damaged_files(&self, damage: &[Damage]) -> Result<()> {
        let newest = self.meta_ids().last().copied();
        for d in damage {
            if let Some(id) = d.path.strip_prefix(&format!("{META_DIR}/")) {
                // The newest stays until a newer backup exists, so that its
                // id is never handed out again.
                match id.parse::<u32>() {
                    Ok(id) if Some(id) != newest => self.drop_backup(id)?,
                    _ => {}
                }
                continue;
            }
            let path = self.path.join(&d.path);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// Drops every backup but the newest whose files are not all present with
    /// their recorded sizes (after [`BackupSink::remove_damaged`], those whose
    /// damaged file the database no longer has), and the shared files no
    /// backup lists any more. The newest stays so that ids never go back.
    /// Returns the ids dropped.
    fn drop_incomplete_backups(&self) -> Result<Vec<u32>> {
        let ids = self.meta_ids();
        let Some(&newest) = ids.last() else {
            return Ok(Vec::new());
        };
        let mut dropped = Vec::new();
        let mut referenced = HashSet::new();
        for &id in &ids {
            let complete = match self.read_meta(id) {
                Ok(meta) => {
                    let complete = meta.files.iter().all(|f| {
                        let expected = f.size.or_else(|| shared_file_size(&f.path));
                        fs::metadata(self.path.join(&f.path))
                            .is_ok_and(|m| expected.is_none_or(|n| n == m.len()))
                    });
                    if complete || id == newest {
                        referenced.extend(meta.files.into_iter().map(|f| f.path));
                    }
                    complete
                }
                Err(_) => false,
            };
            if !complete && id != newest {
                self.drop_backup(id)?;
                dropped.push(id);
            }
        }
        if !dropped.is_empty() {
            for name in self.shared_files() {
                if !referenced.contains(&name) && !name.ends_with(".tmp") {
                    let _ = fs::remove_file(self.path.join(&name));
                }
            }
        }
        Ok(dropped)
    }

    /// Deletes backup `id` as BackupEngine does: its meta file first (the
    /// backup stops existing), then its private files.
    fn drop_backup(&self, id: u32) -> Result<()> {
        let meta = self.meta_path(id);
        match fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", meta.display()), e)),
        }
        let private = self.path.join(PRIVATE_DIR).join(id.to_string());
        match fs::remove_dir_all(&private) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", private.display()), e)),
        }
    }
}

/// The size a shared file's name records (`…_<size>.sst`), if it does.
fn shared_file_size(path: &str) -> Option<u64> {
    let name = path.strip_prefix(&format!("{SHARED_DIR}/"))?;
    let stem = name
        .strip_suffix(".sst")
        .or_else(|| name.strip_suffix(".blob"))?;
    let parts: Vec<&str> = stem.split('_').collect();
    // `<number>_s<session>_<size>` (session-id naming without checksum) or
    // `<number>_<crc>_<size>` (legacy); the size is always last.
    (parts.len() >= 3).then(|| parts.last()?.parse().ok())?
}

/// The file a "Size mismatch for existing backup file" error names, which
/// RocksDB reports when a shared file in the store was truncated or grown.
pub(super) fn size_mismatch_file(message: &str) -> Option<String> {
    let rest = message
        .split("Size mismatch for existing backup file: ")
        .nth(1)?;
    let name = rest.split_whitespace().next()?;
    Some(name.to_string())
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
                return Err(Error::BackupCorrupt {
                    id,
                    detail: self.damage_in(id).unwrap_or_else(|| {
                        "RocksDB cannot load it (a file it lists is missing or has the wrong \
                         size)"
                            .to_string()
                    }),
                });
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
            Some(id) if self.meta_path(id).is_file() => {
                return Err(Error::BackupCorrupt {
                    id,
                    detail: self.damage_in(id).unwrap_or_else(|| {
                        "RocksDB cannot load it (a file it lists is missing or has the wrong \
                         size)"
                            .to_string()
                    }),
                })
            }
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
mod tests {
    use super::*;
    use crate::db::OpenMode;

    fn new_db(path: &Path) -> Db {
        Db::open(
            path,
            OpenMode::ReadWrite {
                create_if_missing: true,
            },
        )
        .unwrap()
    }

    /// Writes `count` keys of about 1 KiB of incompressible-ish data.
    fn fill(db: &Db, prefix: &str, count: usize) {
        for i in 0..count {
            let value: Vec<u8> = (0..1024u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i as u32 * 7919) >> 13) as u8)
                .collect();
            db.put(format!("{prefix}{i:08}").as_bytes(), &value)
                .unwrap();
        }
    }

    #[test]
    fn create_list_restore_round_trip_with_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let db = new_db(&tmp.path().join("db"));
        let store = BackupDir::new(tmp.path().join("backups"));
        assert!(matches!(store.list(), Err(Error::BackupDirMissing { .. })));
        db.put(b"k1", b"v1").unwrap();
        let first = store.create(&db, "host:/db").unwrap();
        db.put(b"k2", b"v2").unwrap();
        let second = store.create(&db, "host:/db").unwrap();
        assert!(second.info.id > first.info.id);

        assert_eq!(store.newest_id().unwrap(), Some(second.info.id));
        let list = store.list().unwrap();
        assert_eq!(
            list.iter().map(|b| b.id).collect::<Vec<_>>(),
            [first.info.id, second.info.id]
        );
        let meta = list[1].metadata.as_ref().unwrap();
        assert_eq!(meta.seq, db.latest_sequence_number());
        assert_eq!(meta.master, "host:/db");
        store.verify(second.info.id).unwrap();

        let dest = tmp.path().join("restored");
        let stats = store
            .restore(Some(first.info.id), &dest, RestoreMode::Full)
            .unwrap();
        assert_eq!(stats.id, first.info.id);
        let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
        assert_eq!(restored.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(restored.get(b"k2").unwrap(), None);
        drop(restored);
        let stats = store.restore(None, &dest, RestoreMode::Full).unwrap();
        assert_eq!(stats.id, second.info.id);
        let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
        assert_eq!(restored.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    }

    #[test]
    fn incremental_restore_copies_only_the_change() {
        let tmp = tempfile::tempdir().unwrap();
        let db = new_db(&tmp.path().join("db"));
        let store = BackupDir::new(tmp.path().join("backups"));
        fill(&db, "base", 8_000); // about 8 MiB
        let first = store.create(&db, "t").unwrap();
        fill(&db, "delta", 100); // about 100 KiB
        let second = store.create(&db, "t").unwrap();
        assert!(
            second.bytes_copied * 10 < first.bytes_copied,
            "second backup copied {} bytes, first {}",
            second.bytes_copied,
            first.bytes_copied
        );

        let dest = tmp.path().join("follower");
        let full = store
            .restore(Some(first.info.id), &dest, RestoreMode::Full)
            .unwrap();
        let incremental = store
            .restore(Some(second.info.id), &dest, RestoreMode::KeepMatchingFiles)
            .unwrap();
        assert!(incremental.files_kept > 0);
        assert!(
            incremental.bytes_copied * 10 < full.bytes_copied,
            "incremental restore copied {} bytes, full {}",
            incremental.bytes_copied,
            full.bytes_copied
        );
        let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
        assert!(restored.get(b"delta00000099").unwrap().is_some());
        assert!(restored.get(b"base00000000").unwrap().is_some());
    }

    #[test]
    fn verify_finds_a_flipped_byte_and_unknown_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let db = new_db(&tmp.path().join("db"));
        let store = BackupDir::new(tmp.path().join("backups"));
        fill(&db, "k", 100);
        let id = store.create(&db, "t").unwrap().info.id;
        store.verify(id).unwrap();
        assert!(matches!(
            store.verify(id + 1),
            Err(Error::BackupNotFound { .. })
        ));

        let sst = store
            .read_meta(id)
            .unwrap()
            .files
            .into_iter()
            .find(|f| f.path.ends_with(".sst"))
            .unwrap();
        let path = store.path().join(&sst.path);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let err = store.verify(id).unwrap_err();
        assert!(matches!(err, Error::BackupCorrupt { .. }), "{err}");
        assert!(err.to_string().contains(".sst"), "{err}");
        let err = store
            .restore(Some(id), &tmp.path().join("r"), RestoreMode::Full)
            .unwrap_err();
        assert!(matches!(err, Error::BackupCorrupt { .. }), "{err}");
    }

    #[test]
    fn purge_keeps_what_retention_promises() {
        let tmp = tempfile::tempdir().unwrap();
        let db = new_db(&tmp.path().join("db"));
        let store = BackupDir::new(tmp.path().join("backups"));
        for i in 0..5 {
            db.put(format!("k{i}").as_bytes(), b"v").unwrap();
            store.create(&db, "t").unwrap();
        }
        let ids: Vec<u32> = store.list().unwrap().iter().map(|b| b.id).collect();
        let now = SystemTime::now();
        // Everything is younger than an hour: nothing goes.
        let within = Retention {
            keep: 2,
            keep_within: Duration::from_secs(3600),
        };
        assert!(store.purge(&within, now).unwrap().is_empty());
        let keep2 = Retention {
            keep: 2,
            keep_within: Duration::ZERO,
        };
        assert_eq!(store.purge(&keep2, now).unwrap(), ids[..3]);
        let left: Vec<u32> = store.list().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(left, ids[3..]);
        store.verify(ids[4]).unwrap();
        store
            .restore(None, &tmp.path().join("r"), RestoreMode::Full)
            .unwrap();
    }

    #[test]
    fn restore_errors_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BackupDir::new(tmp.path().join("none"));
        let dest = tmp.path().join("r");
        assert!(matches!(
            store.restore(None, &dest, RestoreMode::Full),
            Err(Error::BackupDirMissing { .. })
        ));
        let empty = BackupDir::new(tmp.path());
        assert!(matches!(
            empty.restore(None, &dest, RestoreMode::Full),
            Err(Error::NoBackups { .. })
        ));
        // Reading did not create the layout in a directory it does not own.
        assert!(!tmp.path().join("meta").exists());
    }
}
