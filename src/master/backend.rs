//! The master as the server's backend: reads and writes on its database
//! (writes refused once fenced), backups on request, and its status.

use std::sync::Arc;
use std::time::Duration;

/// How long a backup in progress may wait on a store that answers nothing
/// before INFO and /metrics call it failing.
const PUBLISH_STALLED: Duration = Duration::from_secs(10);

use super::Master;
use crate::db::Db;
use crate::server::{Backend, BackupRequest, Refusal, Role};
use crate::status::{DaemonStatus, LastBackup, MasterStatus};

impl Backend for Master {
    fn role_name(&self) -> &'static str {
        "master"
    }

    fn reader(&self) -> std::result::Result<Arc<Db>, Refusal> {
        Ok(Arc::clone(&self.db))
    }

    fn served(&self) -> Option<Arc<Db>> {
        Some(Arc::clone(&self.db))
    }

    fn writer(&self) -> std::result::Result<Arc<Db>, Refusal> {
        if let Some(by) = self.store.fence().by() {
            return Err(Refusal::Fenced { by: by.to_string() });
        }
        if let Some((since, term)) = self.check_term() {
            return Err(Refusal::LeaseExpired { since, term });
        }
        Ok(Arc::clone(&self.db))
    }

    fn role(&self) -> Role {
        Role::Master
    }

    fn position(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    fn staleness(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }

    fn request_backup(&self) -> std::result::Result<BackupRequest, Refusal> {
        Ok(if self.schedule_backup() {
            BackupRequest::Scheduled
        } else {
            BackupRequest::Started
        })
    }

    fn backup_now(&self) -> std::result::Result<(), Refusal> {
        // Done once a backup holds every write acknowledged before this
        // request: its sequence number now. Waiting on attempts instead
        // would let a step that checked for changes just before the last
        // write answer for it.
        let target = self.db.latest_sequence_number();
        let mut state = self.state();
        let mut first = state.started + 1;
        state.requested = true;
        self.changed.notify_all();
        loop {
            if state.backed_up_seq >= target {
                return Ok(());
            }
            if state.stopping() {
                return Err(Refusal::ShuttingDown);
            }
            if state.finished >= first {
                if !state.last_ok {
                    return Err(Refusal::BackupFailed(state.last_error.clone()));
                }
                // A step that started after this request found nothing
                // to do yet: ask again.
                first = state.started + 1;
                state.requested = true;
                self.changed.notify_all();
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lastsave(&self) -> i64 {
        self.state().last_save_unix
    }

    fn status(&self) -> DaemonStatus {
        // Before the state's lock: the shipper holds its own across a sync.
        let log = self.log_status();
        let state = self.state();
        let store = self.store.traffic();
        // A backup that waits on a store which has stopped answering is
        // failing now, not when its requests finally time out.
        let stalled = store
            .as_ref()
            .and_then(|t| t.since_answer)
            .filter(|quiet| state.in_progress && *quiet > PUBLISH_STALLED);
        let last_error = match stalled {
            Some(quiet) => Some(format!(
                "the backup in progress is stalled: the backup store {} has not answered for \
                 {:.0} s",
                self.store.location(),
                quiet.as_secs_f64()
            )),
            None => state.last_error.clone(),
        };
        DaemonStatus::Master(MasterStatus {
            seq: self.db.latest_sequence_number(),
            backed_up_seq: state.backed_up_seq,
            backup_in_progress: state.in_progress,
            last_save_unix: state.last_save_unix,
            last_ok: state.last_ok && stalled.is_none(),
            last: state.last.as_ref().map(|l| LastBackup {
                id: l.info.id,
                created_ms: l.info.created_ms(),
                duration: l.duration,
                bytes_copied: l.bytes_copied,
                files_copied: l.files_copied,
            }),
            done: state.done,
            failed: state.failed.clone(),
            durations: state.durations.clone(),
            added: state.added,
            purged: state.purged,
            purge_failures: state.purge_failures,
            heartbeat_ago: state.last_heartbeat.map(|t| t.elapsed()),
            last_error,
            backup_dir: self.store.location().to_string(),
            db_error: state.db_error.clone(),
            fenced_by: self.store.fence().by().map(str::to_string),
            lease_term: self.lease.get().map(|l| l.term()),
            lease_renewed_ago: self.lease.get().map(|l| l.since_renewal()),
            lease_expired: self.lease_expired().is_some(),
            scrub_files_checked: state.scrub.files_checked,
            scrub_bytes_checked: state.scrub.bytes_checked,
            damaged_found: state.damaged_found,
            last_damage: state.last_damage.clone(),
            backups_dropped: state.backups_dropped,
            keep: self.retention.keep,
            keep_within: self.retention.keep_within,
            store,
            log,
        })
    }
}
