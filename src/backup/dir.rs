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
    unix_ms, AppMetadata, BackupInfo, BackupStore, CreateStats, Heartbeat, RestoreMode,
    RestoreStats, Retention,
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
    pub fn meta_path(&self, id: u32) -> PathBuf {
        self.path.join(META_DIR).join(id.to_string())
    }

    /// Reads and parses backup `id`'s meta file.
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
}

impl BackupStore for BackupDir {
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

    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        let started = Instant::now();
        let mut engine = self.engine(true)?;
        let shared_before = self.shared_files();
        let metadata = AppMetadata {
            v: AppMetadata::VERSION,
            seq: db.latest_sequence_number(),
            created_ms: unix_ms(SystemTime::now()),
            master: master.to_string(),
        };
        let json = serde_json::to_vec(&metadata).expect("metadata serializes");
        let mut options = CreateBackupOptions::default();
        options.set_flush_before_backup(true);
        let id = engine
            .create_new_backup_with_metadata(db.rocksdb(), &options, &json)
            .map_err(|e| {
                Error::rocksdb(format!("create a backup in {}", self.path.display()), e)
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
            }
        }
        Ok(CreateStats {
            info,
            bytes_copied,
            files_copied,
            duration: started.elapsed(),
        })
    }

    fn verify(&self, id: u32) -> Result<()> {
        let engine = self.engine(false)?;
        if !engine.get_backup_info().iter().any(|b| b.backup_id == id) {
            // RocksDB leaves a backup whose files are missing or truncated out
            // of its list; tell that apart from an id that never existed.
            if self.meta_path(id).is_file() {
                return Err(Error::BackupCorrupt {
                    id,
                    detail: "RocksDB cannot load it (a file it lists is missing or has the \
                             wrong size)"
                        .to_string(),
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
        for file in self.read_meta(id)?.files {
            let Some(expected) = file.crc32c else {
                continue;
            };
            let path = self.path.join(&file.path);
            let actual = Self::crc32c_of(&path).map_err(|e| Error::BackupCorrupt {
                id,
                detail: format!("cannot read {}: {e}", path.display()),
            })?;
            if actual != expected {
                return Err(Error::BackupCorrupt {
                    id,
                    detail: format!(
                        "{} has crc32c {actual}, the backup records {expected}",
                        file.path
                    ),
                });
            }
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
                    path: self.path.clone(),
                })?,
            Some(id) if backups.iter().any(|b| b.id == id) => id,
            Some(id) if self.meta_path(id).is_file() => {
                return Err(Error::BackupCorrupt {
                    id,
                    detail: "RocksDB cannot load it (a file it lists is missing or has the \
                             wrong size)"
                        .to_string(),
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
                let message = e.to_string();
                if message.starts_with("Corruption") || message.contains("checksum mismatch") {
                    Error::BackupCorrupt {
                        id,
                        detail: message,
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

    fn read_heartbeat(&self) -> Option<Heartbeat> {
        let bytes = fs::read(self.path.join(HEARTBEAT)).ok()?;
        serde_json::from_slice(&bytes).ok()
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
