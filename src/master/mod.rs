//! The master: owns the database, serves reads and writes over RESP, and
//! turns the database into a stream of incremental backups.
//!
//! [`Master`] holds the backup policy (back up when the database changed,
//! never two at once, then apply retention) and is the server's
//! [`Backend`]; [`run`] is the daemon's lifecycle around it.

mod backend;
mod config;
pub mod lease;
mod run;
mod tail;
mod threads;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::backup::{self, now_ms, BackupSink, CreateStats, Damage, Retention, ScrubCursor};
use crate::db::{Db, OpenMode, OpenOptions};
use crate::error::{Error, Result};
use crate::status::{Copied, Durations, Failures};
use crate::stop::Stop;

pub use config::{MasterArgs, MasterConfig, KEEP_WITHIN_FLOOR};
use lease::{Claim, Identity, Term};
pub use run::{main, run};

/// How often the heartbeat (and lease) is rewritten.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// The most bytes one scrub step reads: a large directory is scrubbed over
/// several `--scrub-interval`s, so a scrub never stalls backups for long.
pub const SCRUB_BUDGET: u64 = 256 << 20;

/// The master's database and backup state.
pub struct Master {
    db: Arc<Db>,
    store: Box<dyn BackupSink>,
    identity: Identity,
    retention: Retention,
    state: Mutex<BackupState>,
    changed: Condvar,
    /// This run's claim on the backup directory, once taken.
    claim: Mutex<Option<Claim>>,
    /// Whether this master said it was fenced (the store may have recorded
    /// it first, while the master's step had not yet seen it).
    fence_logged: AtomicBool,
    /// The lease's term, once claimed: past it without a renewal (cut off
    /// from the store), writes are refused, since a promotion may replace
    /// this master without them.
    lease: OnceLock<Term>,
    /// The lease ran out and the log said so; cleared when it is renewed.
    lease_expired_noted: AtomicBool,
    /// Serialises backup steps, whoever runs them (the loop, the final
    /// backup at exit, a test): a mutex is a guarantee, a comment a wish.
    step_lock: Mutex<()>,
    /// The live tail's shipper, once started (see `start_log`): held while
    /// a segment goes out, which may wait on the store.
    tail: Mutex<Option<tail::Tail>>,
    /// How the shipper fares, for INFO and /metrics: never waits on the
    /// store.
    log_report: Mutex<Option<crate::status::LogShipping>>,
    /// `--log-interval`, once the log ships; heartbeats say it.
    log_interval: std::sync::OnceLock<Duration>,
}

/// What the backup loop has done and been asked to do.
#[derive(Debug, Default)]
struct BackupState {
    /// The sequence number the newest backup holds (from its metadata).
    backed_up_seq: u64,
    /// A backup was asked for (BGSAVE, SAVE, SIGUSR1).
    requested: bool,
    /// The log since the newest backup outgrew `--log-backup-ratio`: a
    /// backup is due, no sooner than the loop's wait after a failure.
    log_due: bool,
    /// Bytes of the segments shipped since the newest backup that end past
    /// it: about what a follower restoring it replays.
    log_past_backup: u64,
    in_progress: bool,
    /// Steps started and finished by the loop, so `SAVE` can tell whether
    /// an attempt that started after it failed.
    started: u64,
    finished: u64,
    /// The loop's stop, once it started.
    stop: Option<Stop>,
    last: Option<CreateStats>,
    /// Unix seconds of the newest backup, for LASTSAVE.
    last_save_unix: i64,
    last_ok: bool,
    last_error: Option<String>,
    done: u64,
    failed: Failures,
    durations: Durations,
    added: Copied,
    purged: u64,
    purge_failures: u64,
    heartbeat_failing: bool,
    /// When the heartbeat was last written.
    last_heartbeat: Option<Instant>,
    /// The database refuses writes (a full disk): RocksDB's error, and
    /// whether it was said in the log.
    db_error: Option<String>,
    scrub: ScrubCursor,
    damaged_found: u64,
    last_damage: Option<String>,
    /// Damage was found: after the next backup, drop what it left incomplete.
    heal_pending: bool,
    backups_dropped: u64,
}

impl BackupState {
    /// Whether the loop was told to stop.
    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(Stop::is_stopped)
    }
}

/// What one backup step did.
#[derive(Debug)]
pub enum StepOutcome {
    /// The database did not change since the newest backup.
    Unchanged,
    /// A backup was made.
    Created(CreateStats),
    /// The backup failed; the error is logged and counted.
    Failed(Error),
}

impl Master {
    /// Opens (creating if needed) the database and reads where the newest
    /// backup left off.
    pub fn open(
        db_path: &Path,
        store: impl BackupSink + 'static,
        retention: Retention,
        sync_writes: bool,
        cache: Option<&crate::db::BlockCache>,
        keep_log: Option<Duration>,
    ) -> Result<Master> {
        let mode = OpenMode::ReadWrite {
            create_if_missing: true,
        };
        let mut db = OpenOptions::new(mode)
            .cache(cache)
            .keep_log(keep_log)
            .open(db_path)?;
        db.set_sync_writes(sync_writes);
        let newest = match store.list() {
            Ok(backups) => backups.last().cloned(),
            Err(crate::Error::BackupDirMissing { .. }) => None,
            Err(e) => return Err(e),
        };
        let identity = Identity {
            label: backup::master_label(db_path),
            db_id: db.identity(),
        };
        // Only a backup this master made says what is backed up: after a
        // promotion the newest backup is the old master's (of the same
        // database, but perhaps holding writes the promoted copy lacks), and
        // the new master's first backup must come at once.
        let own = newest
            .as_ref()
            .and_then(|b| b.metadata.as_ref())
            .filter(|m| identity.made(m) && m.master == identity.label);
        let state = BackupState {
            backed_up_seq: own.map_or(0, |m| m.seq),
            last_save_unix: newest
                .as_ref()
                .map_or(0, |b| (b.created_ms() / 1000) as i64),
            last_ok: true,
            ..BackupState::default()
        };
        Ok(Master {
            identity,
            db: Arc::new(db),
            store: Box::new(store),
            retention,
            state: Mutex::new(state),
            changed: Condvar::new(),
            claim: Mutex::new(None),
            fence_logged: AtomicBool::new(false),
            lease: OnceLock::new(),
            lease_expired_noted: AtomicBool::new(false),
            step_lock: Mutex::new(()),
            tail: Mutex::new(None),
            log_report: Mutex::new(None),
            log_interval: std::sync::OnceLock::new(),
        })
    }

    /// Claims the backup directory (see [`lease`]) with a lease of `term`
    /// and writes the first heartbeat; `take_over` allows a directory whose
    /// newest backup is of another database. Until it is called the master
    /// backs up unfenced and takes writes without a lease, as a test or a
    /// one-off tool may; after, writes wait for a heartbeat to land.
    pub fn claim(&self, take_over: bool, term: Duration) -> Result<()> {
        let newest = match self.store.list() {
            Ok(backups) => backups.last().cloned(),
            Err(Error::BackupDirMissing { .. } | Error::NoBackups { .. }) => None,
            Err(e) => return Err(e),
        };
        let claim = lease::claim(
            self.store.as_ref(),
            &self.identity,
            newest.as_ref(),
            take_over,
        )?;
        *self.held_claim() = Some(claim);
        let _ = self.lease.set(Term::new(term));
        // Over whatever heartbeat is there: the claim checked it.
        self.renew();
        Ok(())
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    fn state(&self) -> MutexGuard<'_, BackupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held_claim(&self) -> MutexGuard<'_, Option<lease::Claim>> {
        self.claim.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn token(&self) -> Option<String> {
        self.held_claim().as_ref().map(|c| c.token.clone())
    }

    /// Whether the database holds writes no backup holds.
    pub fn has_unbacked_changes(&self) -> bool {
        self.db.latest_sequence_number() > self.state().backed_up_seq
    }

    /// `Err` with who holds the directory when this master no longer does.
    /// A heartbeat without a token (or none at all: the directory was
    /// replaced) is not another master's.
    fn check_lease(&self) -> std::result::Result<(), String> {
        if let Some(by) = self.store.fence().by() {
            return Err(by.to_string());
        }
        let Some(token) = self.token() else {
            return Ok(());
        };
        match self.store.read_heartbeat() {
            Some(h) if h.token.as_ref().is_some_and(|t| *t != token) => {
                let by = h.owner();
                self.fence(&by);
                Err(by)
            }
            _ => Ok(()),
        }
    }

    /// Another master holds the backup directory: from now on this one
    /// takes no backup and refuses writes, which would never reach a
    /// follower. Recorded in the store's [`Fence`](backup::Fence), the one
    /// owner of that state (the write path, INFO, /metrics and /healthz
    /// read it), whichever step found out: the heartbeat read here, or the
    /// store refusing a write of this master's (which set it already).
    fn fence(&self, by: &str) {
        self.store.fence().set(by);
        if !self.fence_logged.swap(true, Ordering::SeqCst) {
            tracing::error!(
                other = %by,
                "another master took over the backup directory {}: this master stops \
                 backing up and refuses writes, which would never reach a follower",
                self.store.location()
            );
        }
    }

    /// One step of the loop: back up if the database changed since the
    /// newest backup, then apply retention.
    pub fn backup_step(&self) -> StepOutcome {
        self.step(false)
    }

    /// A backup step; `force` backs up even when nothing changed (to copy
    /// again a file a scrub found damaged).
    fn step(&self, force: bool) -> StepOutcome {
        let _one_at_a_time = self.step_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !force && !self.has_unbacked_changes() {
            return StepOutcome::Unchanged;
        }
        // Every line a backup logs carries the span's fields (`--log-format
        // json` puts them in `span`/`spans`): filter a backup's story by them.
        let span = tracing::info_span!("backup", backup_id = tracing::field::Empty);
        let _in_span = span.enter();
        if let Err(by) = self.check_lease() {
            let error = Error::Fenced { by };
            let mut state = self.state();
            state.last_ok = false;
            state.failed.record(error.kind());
            state.last_error = Some(error.to_string());
            return StepOutcome::Failed(error);
        }
        self.state().in_progress = true;
        let mut result = self.store.create(&self.db, &self.identity.label);
        if let Err(Error::DamagedFile { path, detail }) = &result {
            // A damaged file in the store fails every backup that shares
            // it (or made this one unusable): drop it and back up again.
            let damage = Damage {
                path: path.clone(),
                detail: detail.clone(),
                backups: Vec::new(),
            };
            self.record_damage(std::slice::from_ref(&damage));
            result = self
                .store
                .remove_damaged(&[damage])
                .and_then(|()| self.store.create(&self.db, &self.identity.label));
        }
        if let Err(Error::Fenced { by }) = &result {
            self.fence(by);
        }
        let mut state = self.state();
        state.in_progress = false;
        let outcome = match result {
            Ok(stats) => {
                span.record("backup_id", stats.info.id);
                let seq = stats.info.metadata.as_ref().map_or(0, |m| m.seq);
                tracing::info!(
                    backup_id = stats.info.id,
                    seq,
                    files_copied = stats.files_copied,
                    bytes_copied = stats.bytes_copied,
                    duration_ms = stats.duration.as_millis() as u64,
                    "backup created"
                );
                state.backed_up_seq = state.backed_up_seq.max(seq);
                // What made it due (a log that ran past the backup's start
                // included), the backup holds.
                state.log_past_backup = 0;
                state.log_due = false;
                state.last_save_unix = (stats.info.created_ms() / 1000) as i64;
                state.last_ok = true;
                state.last_error = None;
                state.done += 1;
                state.durations.record(stats.duration);
                state.added.bytes += stats.bytes_copied;
                state.added.files += u64::from(stats.files_copied);
                state.last = Some(stats.clone());
                StepOutcome::Created(stats)
            }
            Err(e) => {
                let message = match e.hint() {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                };
                match e.hint() {
                    Some(hint) => {
                        tracing::error!(error = %e.report(), hint, "backup failed, will retry")
                    }
                    None => tracing::error!(error = %e.report(), "backup failed, will retry"),
                }
                state.last_ok = false;
                state.failed.record(e.kind());
                state.last_error = Some(message);
                StepOutcome::Failed(e)
            }
        };
        drop(state);
        if matches!(outcome, StepOutcome::Created(_)) {
            self.drop_incomplete();
            self.purge();
        }
        outcome
    }

    /// Applies retention: the backups past it go, with the log segments
    /// only they needed. On an object store this also lists the store (at
    /// most once a minute) and uploads again what it lost. Called under
    /// the step lock.
    fn purge(&self) {
        match self.store.purge(&self.retention, SystemTime::now()) {
            Ok(purged) => {
                if !purged.is_empty() {
                    tracing::info!(?purged, "purged backups");
                }
                self.state().purged += purged.len() as u64;
                // Segments also age out of --keep-within.
                self.purge_log();
            }
            Err(e) => {
                tracing::warn!(error = %e.report(), "purging old backups failed");
                self.state().purge_failures += 1;
            }
        }
    }

    /// Drops the backups a damaged file made incomplete (never the newest).
    fn drop_incomplete(&self) {
        if !self.state().heal_pending {
            return;
        }
        match self.store.drop_incomplete() {
            Ok(dropped) => {
                if !dropped.is_empty() {
                    tracing::warn!(
                        ?dropped,
                        "dropped backups that needed a damaged file the database no longer has"
                    );
                }
                let mut state = self.state();
                state.backups_dropped += dropped.len() as u64;
                state.heal_pending = false;
            }
            Err(e) => tracing::warn!(error = %e.report(), "cannot drop incomplete backups"),
        }
    }

    fn record_damage(&self, damage: &[Damage]) {
        let mut state = self.state();
        for d in damage {
            tracing::error!(
                file = %d.path,
                detail = %d.detail,
                backups = ?d.backups,
                "damaged file in the backup directory: removing it and backing up again"
            );
            state.damaged_found += 1;
            state.heal_pending = true;
            state.last_damage = Some(format!("{}: {}", d.path, d.detail));
        }
    }

    /// One step of the rolling scrub: checks the next files of the retained
    /// backups against their checksums (at most [`SCRUB_BUDGET`] bytes) and
    /// heals what is damaged: the files go, a new backup copies them again
    /// from the database, and backups that needed a file the database no
    /// longer has are dropped. Without damage, applies retention (see
    /// [`Master::purge`]). Returns the damage found.
    pub fn scrub_step(&self) -> Vec<Damage> {
        let damage = {
            let _one_at_a_time = self.step_lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut cursor = std::mem::take(&mut self.state().scrub);
            let damage = self.store.scrub(&mut cursor, SCRUB_BUDGET);
            self.state().scrub = cursor;
            if damage.is_empty() {
                // With backups rare (the log on), retention and an object
                // store's check for lost files go on between them.
                self.purge();
                return damage;
            }
            self.record_damage(&damage);
            if let Err(e) = self.store.remove_damaged(&damage) {
                tracing::error!(error = %e.report(), "cannot remove the damaged files");
                return damage;
            }
            damage
        };
        if let StepOutcome::Failed(e) = self.step(true) {
            tracing::error!(error = %e.report(), "the backup that heals the damage failed; will retry");
            self.state().requested = true;
        }
        damage
    }

    fn new_heartbeat(&self, token: Option<String>) -> backup::Heartbeat {
        backup::Heartbeat {
            v: 1,
            seq: self.db.latest_sequence_number(),
            ms: now_ms(),
            master: self.identity.label.clone(),
            db_id: self.identity.db_id.clone(),
            token,
            pid: Some(std::process::id()),
            keep_within_ms: Some(self.retention.keep_within.as_millis() as u64),
            lease_term_ms: self.lease.get().map(|l| l.term().as_millis() as u64),
            log_interval_ms: self.log_interval.get().map(|i| i.as_millis() as u64),
            superseded: self
                .held_claim()
                .as_ref()
                .map(|c| c.superseded.clone())
                .unwrap_or_default(),
            handover: false,
        }
    }

    /// Renews the lease and tells followers the master's latest sequence
    /// number and clock. The I/O happens outside the state lock, so a
    /// stalled filesystem holds up only the heartbeat thread. Quiet on
    /// failure after the first log line: the next backup attempt reports
    /// the directory's state. Returns whether the heartbeat failed.
    pub fn heartbeat(&self) -> bool {
        self.check_db_recovered();
        self.check_term();
        if self.check_lease().is_err() {
            return false;
        }
        !self.renew()
    }

    /// Writes the heartbeat: a renewal of the lease when it lands. Returns
    /// whether it landed.
    fn renew(&self) -> bool {
        let heartbeat = self.new_heartbeat(self.token());
        let sent = Instant::now();
        let result = self.store.write_heartbeat(&heartbeat);
        if let Err(Error::Fenced { by }) = &result {
            self.fence(by);
        }
        if let (Ok(()), Some(lease)) = (&result, self.lease.get()) {
            lease.renewed(sent);
            self.check_term();
        }
        let mut state = self.state();
        match result {
            Ok(()) => {
                state.heartbeat_failing = false;
                state.last_heartbeat = Some(Instant::now());
                return true;
            }
            Err(e) if !state.heartbeat_failing => {
                tracing::warn!(error = %e.report(), "cannot write the heartbeat");
                state.heartbeat_failing = true;
            }
            Err(_) => {}
        }
        false
    }

    /// `Some((time since the lease was renewed, its term))` while it is
    /// past its term: writes are refused until a heartbeat lands.
    pub fn lease_expired(&self) -> Option<(Duration, Duration)> {
        let lease = self.lease.get()?;
        lease.expired().map(|since| (since, lease.term()))
    }

    /// Says in the log when the lease runs out (writes are refused from
    /// then on) and when it is renewed (accepted again). Asked by the
    /// heartbeat and by each refused write, so the log says it at once
    /// even while the heartbeat waits on a store that does not answer.
    pub(crate) fn check_term(&self) -> Option<(Duration, Duration)> {
        let expired = self.lease_expired();
        let noted = self.lease_expired_noted.load(Ordering::Relaxed);
        match expired {
            Some((since, term)) if !noted => {
                if self.lease_expired_noted.swap(true, Ordering::SeqCst) {
                    return expired;
                }
                tracing::error!(
                    "the lease on the backup store {} was not renewed for {:.1} s (its term, \
                     --lease-term, is {}): this master acknowledges no write until a heartbeat \
                     lands, since a promotion may replace it without them",
                    self.store.location(),
                    since.as_secs_f64(),
                    humantime::format_duration(term)
                );
            }
            None if noted && self.lease_expired_noted.swap(false, Ordering::SeqCst) => {
                tracing::info!("the lease is renewed: this master accepts writes again");
            }
            _ => {}
        }
        expired
    }

    /// Says in the log and INFO when the database refuses writes (a full
    /// disk), and when it accepts them again: RocksDB resumes by itself
    /// once space returns, and a flush succeeds only then.
    fn check_db_recovered(&self) {
        let failure = self.db.write_failure();
        let noted = self.state().db_error.is_some();
        match failure {
            Some(error) => {
                if !noted {
                    tracing::error!(
                        error = %error,
                        "the database refuses writes: read-only until the cause is fixed (after \
                         a full disk, by itself within seconds of space returning)"
                    );
                    self.state().db_error = Some(error);
                }
                if self.db.flush().is_ok() {
                    self.db.clear_write_failure();
                    self.state().db_error = None;
                    tracing::info!("the database accepts writes again");
                }
            }
            None if noted => {
                self.state().db_error = None;
                tracing::info!("the database accepts writes again");
            }
            None => {}
        }
    }

    /// A one-line summary for systemd's STATUS.
    pub fn status_line(&self) -> String {
        if let Some(by) = self.store.fence().by() {
            return format!("FENCED: {by} took over the backup directory");
        }
        let state = self.state();
        if let Some((since, _)) = self.lease_expired() {
            return format!(
                "READ-ONLY: the lease on the backup store is not renewed for {:.0} s",
                since.as_secs_f64()
            );
        }
        if state.db_error.is_some() {
            return "READ-ONLY: the database refuses writes (see the log)".to_string();
        }
        match &state.last {
            Some(last) => format!(
                "last backup {} at {} ({} backups, {} failed)",
                last.info.id,
                humantime::format_rfc3339_seconds(last.info.created()),
                state.done,
                state.failed.total()
            ),
            None if state.failed.total() > 0 => format!(
                "backups failing: {}",
                state.last_error.as_deref().unwrap_or("")
            ),
            None => "serving; no backup taken yet".to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
