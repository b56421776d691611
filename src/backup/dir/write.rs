//! What only a master does with a [`BackupDir`]: create backups through
//! the writer engine (checking every file they list), purge, write the
//! heartbeat, and heal damaged files.

use std::fs;
use std::time::{Instant, SystemTime};

use rocksdb::backup::CreateBackupOptions;

use super::{infos, BackupDir, HEARTBEAT};
use crate::backup::heal::size_mismatch_file;
use crate::backup::{
    unix_ms, AppMetadata, BackupInfo, BackupLocation, BackupSink, CreateStats, Damage, Fence,
    Heartbeat, MasterLock, Retention, ScrubCursor,
};
use crate::db::Db;
use crate::error::{Error, Result};

impl BackupSink for BackupDir {
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        self.check_fence()?;
        let started = Instant::now();
        let result = self.create_with_writer(db, master, started);
        if result.is_err() {
            self.forget_writer();
        }
        result
    }

    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>> {
        let mut engine = self.writer()?;
        let backups = infos(&engine);
        let keep = retention.keep_count(&backups, now);
        if keep >= backups.len() {
            return Ok(Vec::new());
        }
        if let Err(e) = engine.purge_old_backups(keep) {
            drop(engine);
            self.forget_writer();
            return Err(Error::rocksdb(
                format!("purge old backups in {}", self.path.display()),
                e,
            ));
        }
        // The newest backup stays (keep is at least 1): the engine's view of
        // the directory still matches its fingerprint.
        Ok(backups[..backups.len() - keep]
            .iter()
            .map(|b| b.id)
            .collect())
    }

    fn write_heartbeat(&self, heartbeat: &Heartbeat) -> Result<()> {
        self.check_fence()?;
        let path = self.path.join(HEARTBEAT);
        let tmp = self.path.join(format!(".{HEARTBEAT}.tmp"));
        let json = serde_json::to_vec(heartbeat).expect("heartbeat serializes");
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    fn lock_for_master(&self) -> Result<MasterLock> {
        self.take_master_lock().map(MasterLock::new)
    }

    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        self.scrub_files(cursor, budget)
    }

    fn remove_damaged(&self, damage: &[Damage]) -> Result<()> {
        self.forget_writer();
        self.remove_damaged_files(damage)
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    fn log_sink(&self) -> Option<&dyn crate::tail::store::LogSink> {
        Some(self)
    }

    fn drop_incomplete(&self) -> Result<Vec<u32>> {
        self.forget_writer();
        self.drop_incomplete_backups()
    }
}

impl BackupDir {
    /// [`BackupSink::create`] through the writer engine.
    fn create_with_writer(&self, db: &Db, master: &str, started: Instant) -> Result<CreateStats> {
        let mut engine = self.writer()?;
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
        engine.made(id);
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
                location: BackupLocation::Dir(self.path.clone()),
            })?;
        let (mut bytes_copied, mut files_copied) = (0, 0);
        for file in self.read_meta(id)?.files {
            // Every file must be whole: RocksDB checks sizes only when an
            // engine opens, and this engine stays open. A file this backup
            // copied is also read back, so a copy damaged on its way to the
            // store is found now, not by the follower that needs it.
            let copied = !shared_before.contains(&file.path);
            let damage = match self.present_size(&file) {
                Ok(len) if copied => {
                    files_copied += 1;
                    bytes_copied += len;
                    self.crc_mismatch(&file)
                }
                Ok(_) => None,
                Err(detail) => Some(detail),
            };
            if let Some(detail) = damage {
                return Err(Error::DamagedFile {
                    path: file.path,
                    detail,
                });
            }
        }
        Ok(CreateStats {
            info,
            bytes_copied,
            files_copied,
            duration: started.elapsed(),
        })
    }
}

impl BackupDir {
    /// [`Error::Fenced`] once the master writing here was fenced off.
    pub(super) fn check_fence(&self) -> Result<()> {
        match self.fence.by() {
            Some(by) => Err(Error::Fenced { by: by.to_string() }),
            None => Ok(()),
        }
    }
}
