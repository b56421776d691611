//! [`Follower::poll`], as its steps: observe the store (heartbeat, newest
//! backup), decide what to apply, apply it, and record the outcome. Each
//! change of the follower's state is a method of [`ApplyState`].
//!
//! The state lock is never held while the store is asked: INFO and reads
//! take it, and a request to a store may hang.

use std::time::{Duration, Instant};

use super::clock::MasterClock;
use super::{ApplyState, Follower, Generation, PollOutcome};
use crate::backup::{BackupInfo, Heartbeat, RestoreStats};
use crate::error::{Error, Result};

/// What one look at the store found.
struct Observed {
    /// When the heartbeat was read.
    read_at: Instant,
    heartbeat: Option<Heartbeat>,
    /// Whether the heartbeat names another database than the served one.
    other_master: bool,
    /// The newest backup's id, and the backups worth applying (the newest
    /// RocksDB can load last); or why the store could not be read.
    listed: Result<(Option<u32>, Vec<BackupInfo>)>,
}

/// What a poll decided.
enum Decision {
    /// Nothing to apply; the outcome says why.
    Done(PollOutcome),
    /// Apply `backup`; `lineage_change` says why it replaces the served
    /// database rather than following it.
    Apply {
        backup: BackupInfo,
        lineage_change: Option<String>,
    },
}

impl Follower {
    /// One step: apply the newest complete backup if it is newer than the
    /// one served, or if it is of another database than the one served.
    pub fn poll(&self) -> PollOutcome {
        let _one_at_a_time = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        let serving = self.serving.load_full();
        let observed = self.observe(serving.as_deref());
        if let Some(serving) = serving.as_deref() {
            self.follow_log(serving, observed.heartbeat.as_ref());
        }
        let (backup, lineage_change) = match self.decide(observed, serving.as_deref()) {
            Decision::Done(outcome) => return outcome,
            Decision::Apply {
                backup,
                lineage_change,
            } => (backup, lineage_change),
        };
        let started = Instant::now();
        let result = self.apply(&backup, lineage_change.is_some());
        // Gone from a store that is still there: purged.
        let purged = result.is_err()
            && self.store.contains(backup.id).is_ok_and(|c| !c)
            && self.store.newest_id().is_ok_and(|n| n.is_some());
        let outcome = self.state().record_apply(&backup, result, purged, started);
        if matches!(outcome, PollOutcome::Applied(_)) {
            self.release_retired();
        }
        outcome
    }

    /// Reads the heartbeat and the newest backup. Listing `meta/` says
    /// whether anything is new; only then is the newest backup read, alone.
    /// Every backup is loaded (a BackupEngine open: every meta file read,
    /// every shared file listed) only when the newest cannot be, to find
    /// the newest that can.
    fn observe(&self, serving: Option<&Generation>) -> Observed {
        self.state().asking_since = Some(Instant::now());
        let serving_id = serving.map(|g| g.backup.id);
        let (covered, diverged) = {
            let state = self.state();
            (state.log.covered, state.log.diverged.is_some())
        };
        let heartbeat = self.store.read_heartbeat();
        let read_at = Instant::now();
        let other_master = match (&heartbeat, serving.and_then(|g| g.lineage())) {
            (Some(h), Some(served)) => h.lineage() != served,
            _ => false,
        };
        let listed = self.store.newest_id().and_then(|newest| match newest {
            Some(id)
                if (serving_id != Some(id) && covered != Some(id)) || other_master || diverged =>
            {
                match self.store.describe(id) {
                    Ok(info) => Ok((newest, vec![info])),
                    Err(Error::BackupCorrupt { .. } | Error::BackupNotFound { .. }) => {
                        Ok((newest, self.store.list()?))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok((newest, Vec::new())),
        });
        Observed {
            read_at,
            heartbeat,
            other_master,
            listed,
        }
    }

    /// Records what was observed and decides what to apply: the newest
    /// loadable backup, when it is newer than the served one or of another
    /// database, and not waiting out a retry.
    fn decide(&self, observed: Observed, serving: Option<&Generation>) -> Decision {
        let serving_id = serving.map(|g| g.backup.id);
        let mut state = self.state();
        state.asking_since = None;
        state.last_poll = Some(observed.read_at);
        if let Some(heartbeat) = observed.heartbeat {
            self.observe_heartbeat(&mut state, heartbeat, observed.read_at);
        }
        let (newest_id, backups) = match observed.listed {
            Ok(listed) => {
                state.last_poll_ok = true;
                listed
            }
            Err(e) => {
                state.record_unreadable(&e, serving.is_none());
                return Decision::Done(PollOutcome::Failed(e));
            }
        };
        if newest_id.is_some() {
            state.newest_seen = newest_id;
        }
        let Some(newest_id) = newest_id else {
            return Decision::Done(PollOutcome::UpToDate);
        };
        let covered = state.log.covered == Some(newest_id);
        // The served data holds writes the master's history lost (the log
        // applied past where the master parted from it): even the backup it
        // was restored from must be restored again.
        let diverged = serving.is_some_and(|g| {
            state
                .log
                .diverged
                .is_some_and(|bound| g.db.latest_sequence_number() > bound)
        });
        if (serving_id == Some(newest_id) || covered) && !observed.other_master && !diverged {
            if state.backoff.is_none() && state.skipped.is_none() {
                state.last_error = None;
            }
            return Decision::Done(PollOutcome::UpToDate);
        }
        let newest = backups.last().cloned();
        if newest.as_ref().is_none_or(|b| b.id < newest_id) && state.skipped != Some(newest_id) {
            drop(state);
            let damage = self.unloadable(newest_id);
            state = self.state();
            if let Some(detail) = damage {
                state.record_skipped(newest_id, detail);
            }
        }
        let Some(newest) = newest else {
            return Decision::Done(PollOutcome::UpToDate);
        };
        let lineage_change = lineage_change(serving, &newest);
        match &lineage_change {
            Some(why) => state.record_lineage_change(why),
            None if serving_id.is_some_and(|id| id >= newest.id) && !diverged => {
                return Decision::Done(PollOutcome::UpToDate)
            }
            // The log brings the served data past the backup: no restore.
            None if serving.is_some_and(|g| self.log_covers(&mut state, g, &newest)) => {
                return Decision::Done(PollOutcome::UpToDate)
            }
            None => {}
        }
        if let Some((id, retry_at, _)) = state.backoff {
            if id == newest.id && Instant::now() < retry_at {
                return Decision::Done(PollOutcome::Waiting(id));
            }
        }
        state.applying = true;
        Decision::Apply {
            backup: newest,
            lineage_change,
        }
    }

    /// Why backup `id`, which RocksDB cannot load, is skipped: the damage
    /// found, when the backup is known to be there and known to be damaged
    /// (a store that cannot be asked says nothing of it).
    fn unloadable(&self, id: u32) -> Option<String> {
        match self.store.contains(id) {
            Ok(true) => self
                .store
                .find_damage(id)
                .map(|d| d.unwrap_or_else(|| "RocksDB cannot load it".to_string()))
                .ok(),
            Ok(false) | Err(_) => None,
        }
    }
}

/// Why `newest` replaces the served database rather than following it:
/// it is of another database, or the store's ids went back.
fn lineage_change(serving: Option<&Generation>, newest: &BackupInfo) -> Option<String> {
    match (serving, newest.metadata.as_ref()) {
        (Some(g), Some(meta)) if g.lineage().is_some_and(|l| l != meta.lineage()) => Some(format!(
            "the backup directory now holds another database's backups ({} at {}), not the \
                 served one's ({}): re-bootstrapping from backup {}",
            meta.lineage(),
            meta.master,
            g.lineage().unwrap_or_default(),
            newest.id
        )),
        (Some(g), _) if newest.id < g.backup.id => Some(format!(
            "the backup directory's ids went back (newest {}, served {}): it was replaced; \
             re-bootstrapping from backup {}",
            newest.id, g.backup.id, newest.id
        )),
        _ => None,
    }
}

impl ApplyState {
    /// The store could not be read: said once per distinct failure. A
    /// missing directory before the first backup is the normal start of a
    /// new deployment.
    fn record_unreadable(&mut self, e: &Error, nothing_served: bool) {
        self.last_poll_ok = false;
        let message = e.to_string();
        if self.last_error.as_deref() != Some(&message) {
            if matches!(e, Error::BackupDirMissing { .. }) && nothing_served {
                tracing::info!("waiting for the backup directory to appear: {message}");
            } else if e.is_local_disk_full() {
                tracing::warn!(
                    error = %e.report(),
                    "this host's disk is full (not the backup store): free space; still serving"
                );
            } else {
                tracing::warn!(error = %e.report(), "cannot read the backup directory; still serving");
            }
        }
        self.last_error = Some(message);
    }

    /// The newest backup cannot be loaded: reported once, and skipped.
    fn record_skipped(&mut self, id: u32, detail: String) {
        tracing::error!(backup_id = id, detail = %detail, "skipping a backup that cannot be loaded");
        self.failures.record("skipped");
        self.skipped = Some(id);
        self.last_error = Some(format!("backup {id} skipped: {detail}"));
    }

    /// The store holds another database, or was replaced: said once.
    fn record_lineage_change(&mut self, why: &str) {
        if self.lineage_change.as_deref() != Some(why) {
            tracing::error!("{why}");
        }
        self.lineage_change = Some(why.to_string());
        self.last_error = Some(why.to_string());
    }

    /// Records how applying `backup` (started at `started`) went; `purged`
    /// when the store no longer holds it.
    fn record_apply(
        &mut self,
        backup: &BackupInfo,
        result: Result<RestoreStats>,
        purged: bool,
        started: Instant,
    ) -> PollOutcome {
        self.applying = false;
        match result {
            Ok(stats) => {
                self.record_applied(backup, &stats);
                PollOutcome::Applied(stats)
            }
            Err(e) => {
                let e = match e {
                    _ if purged => Error::BackupPurged {
                        id: backup.id,
                        ran: started.elapsed(),
                        keep_within: self
                            .heartbeat
                            .as_ref()
                            .and_then(|h| h.keep_within_ms)
                            .map(Duration::from_millis),
                    },
                    e => e,
                };
                self.record_failed(backup.id, &e);
                PollOutcome::Failed(e)
            }
        }
    }

    fn record_applied(&mut self, backup: &BackupInfo, stats: &RestoreStats) {
        self.applies_done += 1;
        self.durations.record(stats.duration);
        self.copied.bytes += stats.bytes_copied;
        self.copied.files += u64::from(stats.files_copied);
        self.copied.files_kept += u64::from(stats.files_kept);
        self.last_apply = Some(stats.clone());
        self.backoff = None;
        self.last_error = None;
        self.purge_races = 0;
        self.skipped = None;
        let broken = self.log.broken.take().is_some();
        self.log.diverged = None;
        let behind = self.log.behind_since.take().is_some();
        if broken || behind {
            self.log.fallbacks += 1;
        }
        self.log.covered = None;
        if self.lineage_change.take().is_some() {
            // The old database's clock readings say nothing of the new.
            self.clock = MasterClock::default();
            tracing::warn!(
                backup_id = backup.id,
                "re-bootstrapped: serving the backup directory's database"
            );
        }
    }

    /// A failed apply: a corrupt backup is retried with backoff (a copy may
    /// still be arriving on NFS, the master heals damaged files, and a
    /// newer backup is tried as soon as it appears); a lost race with the
    /// purge is said louder each time in a row.
    fn record_failed(&mut self, id: u32, e: &Error) {
        // INFO says what failed; the log says it with its causes.
        let mut message = format!("apply backup {id}: {e}");
        let mut logged = format!("apply backup {id}: {}", e.report());
        self.failures.record(e.kind());
        match e {
            Error::BackupCorrupt { .. } => {
                let delay = match self.backoff {
                    Some((same, _, delay)) if same == id => {
                        (delay * 2).min(Duration::from_secs(60))
                    }
                    _ => Duration::from_secs(1),
                };
                self.backoff = Some((id, Instant::now() + delay, delay));
                tracing::error!(error = %logged, retry_in = ?delay, "serving the previous data");
            }
            Error::BackupPurged { .. } => {
                self.purge_races += 1;
                if self.purge_races > 1 {
                    let said = format!(
                        "; {} restores in a row lost this race: raise --keep-within on the \
                         master above the time a restore takes",
                        self.purge_races
                    );
                    message.push_str(&said);
                    logged.push_str(&said);
                    tracing::error!(error = %logged, "serving the previous data");
                } else {
                    tracing::warn!(error = %logged, "serving the previous data; trying the newest backup");
                }
            }
            _ => tracing::warn!(error = %logged, "serving the previous data, will retry"),
        }
        self.last_error = Some(message);
    }
}
