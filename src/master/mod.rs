//! The master: owns the database, serves reads and writes over RESP, and
//! turns the database into a stream of incremental backups.
//!
//! [`Master`] holds the backup policy (back up when the database changed,
//! never two at once, then apply retention) and is the server's
//! [`Backend`]; [`run`] is the daemon's lifecycle around it.

mod config;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::backup::{self, now_ms, BackupDir, BackupStore, CreateStats, Retention};
use crate::db::{Db, OpenMode};
use crate::error::Result;
use crate::resp::Reply;
use crate::server::Backend;

pub use config::{main, MasterArgs, MasterConfig};

/// The master's database and backup state.
pub struct Master {
    db: Arc<Db>,
    store: BackupDir,
    label: String,
    retention: Retention,
    state: Mutex<BackupState>,
    changed: Condvar,
    write_lock: Mutex<()>,
}

/// What the backup loop has done and been asked to do.
#[derive(Debug, Default)]
struct BackupState {
    /// The sequence number the newest backup holds (from its metadata).
    backed_up_seq: u64,
    /// A backup was asked for (BGSAVE, SAVE, SIGUSR1).
    requested: bool,
    in_progress: bool,
    /// Bumped after every attempt, so `SAVE` can wait for the one it asked for.
    attempts: u64,
    stopping: bool,
    last: Option<CreateStats>,
    /// Unix seconds of the newest backup, for LASTSAVE.
    last_save_unix: i64,
    last_ok: bool,
    last_error: Option<String>,
    done: u64,
    failed: u64,
    heartbeat_failing: bool,
}

/// What one backup step did.
#[derive(Debug)]
pub enum StepOutcome {
    /// The database did not change since the newest backup.
    Unchanged,
    /// A backup was made.
    Created(CreateStats),
    /// The backup failed; the error is logged and counted.
    Failed(String),
}

impl Master {
    /// Opens (creating if needed) the database and reads where the newest
    /// backup left off.
    pub fn open(
        db_path: &Path,
        store: BackupDir,
        retention: Retention,
        sync_writes: bool,
        cache: Option<&crate::db::BlockCache>,
    ) -> Result<Master> {
        let mode = OpenMode::ReadWrite {
            create_if_missing: true,
        };
        let mut db = Db::open_with_cache(db_path, mode, cache)?;
        db.set_sync_writes(sync_writes);
        let newest = match store.list() {
            Ok(backups) => backups.last().cloned(),
            Err(crate::Error::BackupDirMissing { .. }) => None,
            Err(e) => return Err(e),
        };
        let label = backup::master_label(db_path);
        // Only a backup of this database says what is backed up: after a
        // promotion the newest backup is the old master's, and the new
        // master's first backup must come at once.
        let own = newest
            .as_ref()
            .and_then(|b| b.metadata.as_ref())
            .filter(|m| m.master == label);
        let state = BackupState {
            backed_up_seq: own.map_or(0, |m| m.seq),
            last_save_unix: newest
                .as_ref()
                .map_or(0, |b| (b.created_ms() / 1000) as i64),
            last_ok: true,
            ..BackupState::default()
        };
        Ok(Master {
            label,
            db: Arc::new(db),
            store,
            retention,
            state: Mutex::new(state),
            changed: Condvar::new(),
            write_lock: Mutex::new(()),
        })
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    fn state(&self) -> MutexGuard<'_, BackupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the database holds writes no backup holds.
    pub fn has_unbacked_changes(&self) -> bool {
        self.db.latest_sequence_number() > self.state().backed_up_seq
    }

    /// One step of the loop: back up if the database changed since the
    /// newest backup, then apply retention. Callers must not run two steps at
    /// once; the loop and the final backup at exit never do.
    pub fn backup_step(&self) -> StepOutcome {
        if !self.has_unbacked_changes() {
            return StepOutcome::Unchanged;
        }
        self.state().in_progress = true;
        let result = self.store.create(&self.db, &self.label);
        let mut state = self.state();
        state.in_progress = false;
        let outcome = match result {
            Ok(stats) => {
                let seq = stats.info.metadata.as_ref().map_or(0, |m| m.seq);
                tracing::info!(
                    "backup {} created: seq {seq}, {} new files, {} bytes copied in {:?}",
                    stats.info.id,
                    stats.files_copied,
                    stats.bytes_copied,
                    stats.duration
                );
                state.backed_up_seq = seq;
                state.last_save_unix = (stats.info.created_ms() / 1000) as i64;
                state.last_ok = true;
                state.done += 1;
                state.last = Some(stats.clone());
                StepOutcome::Created(stats)
            }
            Err(e) => {
                let message = match e.hint() {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                };
                tracing::error!("backup failed, will retry: {message}");
                state.last_ok = false;
                state.failed += 1;
                state.last_error = Some(message.clone());
                StepOutcome::Failed(message)
            }
        };
        drop(state);
        if matches!(outcome, StepOutcome::Created(_)) {
            match self.store.purge(&self.retention, SystemTime::now()) {
                Ok(purged) if !purged.is_empty() => tracing::info!("purged backups {purged:?}"),
                Ok(_) => {}
                Err(e) => tracing::warn!("purging old backups failed: {e}"),
            }
        }
        outcome
    }

    /// Writes the heartbeat when every write is in a backup, so followers
    /// can tell an idle master from a dead one. Quiet on failure after the
    /// first log line: the next backup attempt reports the directory's state.
    pub fn heartbeat(&self) {
        let mut state = self.state();
        let seq = self.db.latest_sequence_number();
        if seq != state.backed_up_seq || state.last_save_unix == 0 || state.in_progress {
            return;
        }
        let heartbeat = backup::Heartbeat {
            v: 1,
            seq,
            ms: now_ms(),
            master: self.label.clone(),
        };
        match self.store.write_heartbeat(&heartbeat) {
            Ok(()) => state.heartbeat_failing = false,
            Err(e) if !state.heartbeat_failing => {
                tracing::warn!("cannot write the heartbeat: {e}");
                state.heartbeat_failing = true;
            }
            Err(_) => {}
        }
    }

    /// Asks the loop for a backup now; returns whether one is already running.
    pub fn request_backup(&self) -> bool {
        let mut state = self.state();
        state.requested = true;
        self.changed.notify_all();
        state.in_progress
    }

    /// Starts the backup loop: a step every `interval` (never, when zero) and
    /// whenever one is requested, until [`Master::stop_loop`].
    pub fn start_loop(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let master = Arc::clone(self);
        std::thread::Builder::new()
            .name("rkv-backup".into())
            .spawn(move || master.backup_loop(interval))
            .expect("spawn backup thread")
    }

    fn backup_loop(&self, interval: Duration) {
        // The first step runs at once: data no backup holds goes out soon.
        let mut next = Instant::now();
        loop {
            {
                let mut state = self.state();
                loop {
                    if state.stopping {
                        return;
                    }
                    if state.requested || (!interval.is_zero() && Instant::now() >= next) {
                        break;
                    }
                    let wait = if interval.is_zero() {
                        Duration::from_secs(3600)
                    } else {
                        next.saturating_duration_since(Instant::now())
                    };
                    state = self
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                state.requested = false;
            }
            self.backup_step();
            let mut state = self.state();
            state.attempts += 1;
            self.changed.notify_all();
            drop(state);
            next = Instant::now() + interval;
        }
    }

    /// Stops the loop after the step in progress, if any.
    pub fn stop_loop(&self) {
        self.state().stopping = true;
        self.changed.notify_all();
    }

    /// A one-line summary for systemd's STATUS.
    pub fn status_line(&self) -> String {
        let state = self.state();
        match &state.last {
            Some(last) => format!(
                "last backup {} at {} ({} backups, {} failed)",
                last.info.id,
                humantime::format_rfc3339_seconds(last.info.created()),
                state.done,
                state.failed
            ),
            None if state.failed > 0 => format!(
                "backups failing: {}",
                state.last_error.as_deref().unwrap_or("")
            ),
            None => "serving; no backup taken yet".to_string(),
        }
    }
}

impl Backend for Master {
    fn role_name(&self) -> &'static str {
        "master"
    }

    fn reader(&self) -> std::result::Result<Arc<Db>, Reply> {
        Ok(Arc::clone(&self.db))
    }

    fn writer(&self) -> std::result::Result<Arc<Db>, Reply> {
        Ok(Arc::clone(&self.db))
    }

    fn write_lock(&self) -> &Mutex<()> {
        &self.write_lock
    }

    fn role(&self) -> Reply {
        Reply::array(vec![
            Reply::bulk("master"),
            Reply::Integer(0),
            Reply::array(Vec::new()),
        ])
    }

    fn bgsave(&self) -> Reply {
        if self.request_backup() {
            Reply::Simple("Background saving scheduled".into())
        } else {
            Reply::Simple("Background saving started".into())
        }
    }

    fn save(&self) -> Reply {
        let mut state = self.state();
        // Wait for an attempt that starts after this request: one already
        // running may have missed the latest writes.
        let target = state.attempts + if state.in_progress { 2 } else { 1 };
        state.requested = true;
        self.changed.notify_all();
        while state.attempts < target && !state.stopping {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match (state.last_ok, &state.last_error) {
            (true, _) => Reply::ok(),
            (false, Some(e)) => Reply::error(format!("ERR backup failed: {e}")),
            (false, None) => Reply::error("ERR backup failed"),
        }
    }

    fn lastsave(&self) -> i64 {
        self.state().last_save_unix
    }

    fn info_sections(&self) -> Vec<(&'static str, Vec<(String, String)>)> {
        let state = self.state();
        let seq = self.db.latest_sequence_number();
        let kv = |k: &str, v: String| (k.to_string(), v);
        let last = state.last.as_ref();
        let persistence = vec![
            kv(
                "rdb_bgsave_in_progress",
                u8::from(state.in_progress).to_string(),
            ),
            kv(
                "rdb_changes_since_last_save",
                seq.saturating_sub(state.backed_up_seq).to_string(),
            ),
            kv("rdb_last_save_time", state.last_save_unix.to_string()),
            kv(
                "rdb_last_bgsave_status",
                if state.last_ok { "ok" } else { "err" }.into(),
            ),
            kv(
                "rdb_last_bgsave_time_sec",
                last.map_or(-1, |l| l.duration.as_secs() as i64).to_string(),
            ),
            kv("rkv_backup_dir", self.store.path().display().to_string()),
            kv(
                "rkv_last_backup_id",
                last.map_or(0, |l| l.info.id).to_string(),
            ),
            kv("rkv_last_backup_seq", state.backed_up_seq.to_string()),
            kv(
                "rkv_last_backup_created_ms",
                last.map_or(0, |l| l.info.created_ms()).to_string(),
            ),
            kv(
                "rkv_last_backup_duration_ms",
                last.map_or(0, |l| l.duration.as_millis()).to_string(),
            ),
            kv(
                "rkv_last_backup_bytes_copied",
                last.map_or(0, |l| l.bytes_copied).to_string(),
            ),
            kv(
                "rkv_last_backup_files_copied",
                last.map_or(0, |l| l.files_copied).to_string(),
            ),
            kv("rkv_backups_done", state.done.to_string()),
            kv("rkv_backups_failed", state.failed.to_string()),
            kv(
                "rkv_last_backup_error",
                state.last_error.clone().unwrap_or_default(),
            ),
            kv("rkv_keep", self.retention.keep.to_string()),
            kv(
                "rkv_keep_within_sec",
                self.retention.keep_within.as_secs().to_string(),
            ),
        ];
        let replication = vec![
            kv("role", "master".into()),
            kv("connected_slaves", "0".into()),
            kv("master_repl_offset", seq.to_string()),
        ];
        vec![("persistence", persistence), ("replication", replication)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(dir: &Path) -> Master {
        let retention = Retention {
            keep: 2,
            keep_within: Duration::ZERO,
        };
        Master::open(
            &dir.join("db"),
            BackupDir::new(dir.join("backups")),
            retention,
            false,
            None,
        )
        .unwrap()
    }

    #[test]
    fn backs_up_only_when_the_database_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let m = master(tmp.path());
        assert!(matches!(m.backup_step(), StepOutcome::Unchanged));
        m.db().put(b"k", b"v").unwrap();
        let StepOutcome::Created(stats) = m.backup_step() else {
            panic!("expected a backup")
        };
        assert_eq!(
            stats.info.metadata.unwrap().seq,
            m.db().latest_sequence_number()
        );
        assert!(matches!(m.backup_step(), StepOutcome::Unchanged));
        for i in 0..3 {
            m.db().put(format!("k{i}").as_bytes(), b"v").unwrap();
            assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
        }
        // Retention keeps two.
        assert_eq!(m.store.list().unwrap().len(), 2);
    }

    #[test]
    fn a_restarted_master_knows_what_is_backed_up() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let m = master(tmp.path());
            m.db().put(b"k", b"v").unwrap();
            assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
        }
        let m = master(tmp.path());
        assert!(!m.has_unbacked_changes());
        assert!(m.lastsave() > 0);
    }

    #[test]
    fn a_failed_backup_is_counted_and_retried() {
        let tmp = tempfile::tempdir().unwrap();
        // The backup dir path is a regular file: every backup fails.
        std::fs::write(tmp.path().join("backups"), b"").unwrap();
        let retention = Retention {
            keep: 2,
            keep_within: Duration::ZERO,
        };
        let m = Master::open(
            &tmp.path().join("db"),
            BackupDir::new(tmp.path().join("backups")),
            retention,
            false,
            None,
        );
        let m = match m {
            Ok(m) => m,
            Err(e) => panic!("open must not need a usable backup dir: {e}"),
        };
        m.db().put(b"k", b"v").unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Failed(_)));
        assert!(matches!(m.backup_step(), StepOutcome::Failed(_)));
        assert_eq!(m.state().failed, 2);
        assert!(m.has_unbacked_changes());
        std::fs::remove_file(tmp.path().join("backups")).unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    }
}
