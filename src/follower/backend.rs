//! The follower as the server's backend: reads from the serving
//! generation (or a refusal), writes refused, and its status.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Follower, StaleReads};
use crate::db::Db;
use crate::server::{Backend, BackupRequest, Refusal, Role, Waiters};
use crate::status::{DaemonStatus, FollowedLog, FollowerStatus, LastApply};

impl Backend for Follower {
    fn role_name(&self) -> &'static str {
        "slave"
    }

    fn reader(&self) -> std::result::Result<Arc<Db>, Refusal> {
        let Some(generation) = self.serving.load_full() else {
            return Err(Refusal::NoDataYet {
                store: self.store.location().to_string(),
            });
        };
        if self.stale_reads == StaleReads::Refuse && !self.healthy() {
            self.reads_refused_stale.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Stale {
                reason: self.unhealthy_reason(),
            });
        }
        Ok(Arc::clone(&generation.db))
    }

    fn served(&self) -> Option<Arc<Db>> {
        self.serving.load().as_ref().map(|g| Arc::clone(&g.db))
    }

    fn writer(&self) -> std::result::Result<Arc<Db>, Refusal> {
        Err(Refusal::ReadOnlyReplica)
    }

    fn position(&self) -> u64 {
        self.serving
            .load()
            .as_ref()
            .map_or(0, |g| g.db.latest_sequence_number())
    }

    fn staleness(&self) -> Option<std::time::Duration> {
        Follower::staleness(self)
    }

    fn waiters(&self) -> Option<Arc<Waiters>> {
        Some(Arc::clone(&self.waiters))
    }

    fn role(&self) -> Role {
        let serving = self.serving.load();
        let meta = serving.as_ref().and_then(|g| g.backup.metadata.as_ref());
        let master = meta.map(|m| m.master.clone()).unwrap_or_default();
        Role::Replica {
            master_host: master.split(':').next().unwrap_or_default().to_string(),
            connected: self.link(&self.state()).0 && serving.is_some(),
            offset: meta.map_or(0, |m| m.seq),
        }
    }

    fn request_backup(&self) -> std::result::Result<BackupRequest, Refusal> {
        Err(Refusal::NoBackupsHere)
    }

    fn backup_now(&self) -> std::result::Result<(), Refusal> {
        Err(Refusal::NoBackupsHere)
    }

    fn lastsave(&self) -> i64 {
        self.serving
            .load()
            .as_ref()
            .map_or(0, |g| (g.backup.created_ms() / 1000) as i64)
    }

    fn status(&self) -> DaemonStatus {
        let state = self.state().clone();
        let (link_up, last_error) = self.link(&state);
        let serving = self.serving.load_full();
        let meta = serving.as_ref().and_then(|g| g.backup.metadata.clone());
        DaemonStatus::Follower(FollowerStatus {
            master: meta.as_ref().map(|m| m.master.clone()).unwrap_or_default(),
            link_up,
            last_poll_ago: state.last_poll.map(|t| t.elapsed()),
            applying: state.applying,
            backup_dir: self.store.location().to_string(),
            applied_backup_id: serving.as_ref().map_or(0, |g| g.backup.id),
            applied_created_ms: serving.as_ref().map_or(0, |g| g.backup.created_ms()),
            applied_seq: serving
                .as_ref()
                .map_or(0, |g| g.db.latest_sequence_number()),
            master_seq: state.heartbeat.as_ref().map(|h| h.seq),
            log: serving
                .as_ref()
                .filter(|g| g.writable)
                .map(|_| FollowedLog {
                    segments: state.log.segments,
                    batches: state.log.batches,
                    broken: state.log.broken.clone(),
                    fallbacks: state.log.fallbacks,
                }),
            staleness: self.staleness(),
            clock_skew_ms: self.clock_skew_ms(),
            newest_backup_id: state.newest_seen.unwrap_or(0),
            heartbeat_ago: state.heartbeat_changed.map(|t| t.elapsed()),
            lineage_change: state.lineage_change.clone(),
            last_apply: state.last_apply.as_ref().map(|a| LastApply {
                duration: a.duration,
                bytes_copied: a.bytes_copied,
                files_copied: a.files_copied,
                files_kept: a.files_kept,
            }),
            applies_done: state.applies_done,
            failures: state.failures.clone(),
            durations: state.durations.clone(),
            copied: state.copied,
            reads_refused_stale: self.reads_refused_stale.load(Ordering::Relaxed),
            last_error,
            max_staleness: self.max_staleness,
            stale_reads: self.stale_reads.as_str(),
            healthy: self.healthy(),
            last_save_unix: self.lastsave(),
            store: self.store.traffic(),
        })
    }
}
