//! The master's live tail: a thread that ships the write log to the store
//! every `--log-interval` (see [`crate::tail::ship`]), and what it reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Master;
use crate::error::{Error, Result};
use crate::status::LogShipping;
use crate::stop::Stop;
use crate::tail::ship::{Resumed, Shipped, Shipper};
use crate::tail::store::purge_before;

/// The least log past the newest backup that `--log-backup-ratio` takes a
/// backup for: a small database is not backed up every few segments.
pub const LOG_BACKUP_FLOOR: u64 = 4 << 20;

/// The most written batches the shipper keeps in memory for the next
/// segments (see [`crate::db::Db::capture_writes`]): a few seconds of heavy
/// writes. A shipper stalled past them reads the write-ahead log instead.
const CAPTURE_LIMIT: usize = 32 << 20;

/// The shipper.
pub(super) struct Tail {
    shipper: Shipper,
    /// `--log-backup-ratio`.
    backup_ratio: f64,
    /// How far the log had shipped when, a mark a second at most, back to
    /// `--keep-within`: the purge keeps that much log, whatever backups it
    /// keeps, so a follower a few seconds behind never loses the segments
    /// it is about to apply to a backup taken just now.
    marks: VecDeque<(Instant, u64)>,
    /// When this run began shipping, and from where.
    started: (Instant, u64),
}

impl Tail {
    /// Records that the log stands at `shipped`, at most once a second, and
    /// forgets marks older than `keep` but the newest of those.
    fn mark(&mut self, shipped: u64, keep: Duration) {
        let now = Instant::now();
        if self
            .marks
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.marks.push_back((now, shipped));
        }
        while self.marks.len() > 1 && now.duration_since(self.marks[1].0) >= keep {
            self.marks.pop_front();
        }
    }

    /// The newest sequence number shipped at least `keep` ago: every
    /// segment up to it is older than that. `None` before this run has
    /// shipped for that long (older segments' age is unknown).
    fn shipped_before(&self, keep: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut found = None;
        for (at, shipped) in &self.marks {
            if now.duration_since(*at) < keep {
                break;
            }
            found = Some(*shipped);
        }
        found.or_else(|| (now.duration_since(self.started.0) >= keep).then_some(self.started.1))
    }
}

impl Master {
    /// Starts shipping the write log every `interval` until `stop`; `None`
    /// when the store keeps no log (then followers follow backups alone,
    /// which the log says). The log goes on from the store's, or from the
    /// newest backup this master made. A backup is taken whenever the log
    /// past the newest one outgrows `backup_ratio` times the database's
    /// live size (zero: never for that reason).
    pub fn start_log(
        self: &Arc<Self>,
        interval: Duration,
        backup_ratio: f64,
        stop: &Stop,
    ) -> Result<Option<JoinHandle<()>>> {
        let Some(sink) = self.store.log_sink() else {
            tracing::warn!(
                "the backup store {} keeps no log yet: followers follow backups alone",
                self.store.location()
            );
            return Ok(None);
        };
        // Before the shipper reads where to go on from: every write after
        // that is captured.
        self.db.capture_writes(CAPTURE_LIMIT);
        let backed_up = self.state().backed_up_seq;
        let lineage = self.identity.lineage().to_string();
        let (shipper, resumed) = Shipper::resume(&self.db, sink, lineage, backed_up)?;
        if let Resumed::Diverged { latest, shipped } = resumed {
            tracing::error!(
                latest,
                shipped,
                "the store's log held writes this database does not (it recovered to an earlier \
                 point than it had shipped): those segments are removed, and followers that \
                 applied them hold writes this master lost; a backup is taken now"
            );
            self.schedule_backup();
        }
        tracing::info!(
            shipped = shipper.shipped(),
            interval_ms = interval.as_millis() as u64,
            "shipping the write log"
        );
        *self.log_report() = Some(LogShipping {
            stats: shipper.stats().clone(),
            error: None,
        });
        let started = (Instant::now(), shipper.shipped());
        *self.tail_state() = Some(Tail {
            shipper,
            backup_ratio,
            marks: VecDeque::new(),
            started,
        });
        let _ = self.log_interval.set(interval);
        // What an earlier run left past retention.
        self.purge_log();
        let master = Arc::clone(self);
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("rkv-log".into())
            .spawn(move || {
                while !stop.is_stopped() {
                    // A segment cut short by its size goes on at once.
                    while let Some(Shipped::Segment { more: true, .. }) = master.ship_step() {}
                    if stop.sleep(interval) {
                        break;
                    }
                }
                // What was acknowledged before the stop goes out too.
                while let Some(Shipped::Segment { more: true, .. }) = master.ship_step() {}
            })
            .expect("spawn the log thread");
        Ok(Some(handle))
    }

    fn tail_state(&self) -> std::sync::MutexGuard<'_, Option<Tail>> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_report(&self) -> std::sync::MutexGuard<'_, Option<LogShipping>> {
        self.log_report.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ships the writes since the last segment; `None` when the log is off
    /// or this master no longer owns the store. A jump (the write-ahead log
    /// no longer held what was next) takes a backup at once.
    pub fn ship_step(&self) -> Option<Shipped> {
        let sink = self.store.log_sink()?;
        if self.store.fence().by().is_some() {
            return None;
        }
        let token = self.token().unwrap_or_default();
        let mut guard = self.tail_state();
        let tail = guard.as_mut()?;
        let result = tail.shipper.ship(&self.db, sink, &token);
        let stats = tail.shipper.stats().clone();
        let shipped = stats.shipped;
        tail.mark(shipped, self.retention.keep_within);
        let backup_ratio = tail.backup_ratio;
        drop(guard);
        {
            let mut report = self.log_report();
            let report = report.get_or_insert_with(|| LogShipping {
                stats: stats.clone(),
                error: None,
            });
            report.stats = stats;
            match &result {
                Ok(_) => {
                    if report.error.take().is_some() {
                        tracing::info!("the write log ships again");
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let new = report.error.as_deref() != Some(message.as_str());
                    if new {
                        tracing::error!(error = %e.report(), "cannot ship the write log; will retry");
                    }
                    report.error = Some(message);
                }
            }
        }
        match result {
            Ok(shipped) => {
                if let Shipped::Jumped {
                    from,
                    resumed_after,
                } = shipped
                {
                    tracing::warn!(
                        from,
                        resumed_after,
                        "the write-ahead log no longer holds the next writes to ship (the log \
                         fell behind, or the master was stopped long): taking a backup, which \
                         followers restore to join the log again"
                    );
                    self.schedule_backup();
                }
                if let Shipped::Segment { last, bytes, .. } = shipped {
                    self.count_log_past_backup(last, bytes, backup_ratio);
                }
                Some(shipped)
            }
            Err(Error::SegmentExists { name }) => {
                // Another master shipped where this one's log goes on:
                // either it owns the store now (this master is fenced), or
                // it was fenced itself and shipped once more before it
                // knew. Only the lease, read back and found to be this
                // master's own, says it is the second.
                let owned = self.check_lease().is_ok()
                    && self.token().is_some()
                    && self.store.read_heartbeat().and_then(|h| h.token) == self.token();
                if owned {
                    tracing::warn!(
                        segment = %name,
                        "a segment of a master fenced off this store stands where this master's \
                         log goes on: removing it (followers that applied it restore a backup)"
                    );
                    if let Err(e) = sink.remove_segment(shipped + 1) {
                        tracing::warn!(error = %e.report(), "cannot remove the segment");
                    }
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Counts a segment that ends at `last`, of `bytes`, into the log past
    /// the newest backup, and makes a backup due when that holds `ratio`
    /// times the database's live size, and at least [`LOG_BACKUP_FLOOR`].
    fn count_log_past_backup(&self, last: u64, bytes: u64, ratio: f64) {
        let past = {
            let mut state = self.state();
            if last <= state.backed_up_seq {
                // A backup taken while it shipped holds it.
                return;
            }
            state.log_past_backup += bytes;
            state.log_past_backup
        };
        if ratio == 0.0 || past < LOG_BACKUP_FLOOR {
            return;
        }
        let live = self.db.live_sst_bytes();
        if (past as f64) < ratio * live as f64 {
            return;
        }
        let mut state = self.state();
        if !state.log_due {
            tracing::debug!(
                log_bytes = past,
                live_sst_bytes = live,
                "the log past the newest backup outgrew --log-backup-ratio: a backup is due"
            );
            state.log_due = true;
            self.changed.notify_all();
        }
    }

    /// Removes the segments no retained backup needs (see
    /// [`crate::tail::store::purge_before`]) and that are older than
    /// `--keep-within`, after retention purged backups.
    pub(super) fn purge_log(&self) {
        let Some(sink) = self.store.log_sink() else {
            return;
        };
        // Nothing while the log is off, or this run has not shipped for
        // --keep-within (the age of older segments is unknown).
        let Some(young) = self
            .tail_state()
            .as_ref()
            .and_then(|tail| tail.shipped_before(self.retention.keep_within))
        else {
            return;
        };
        let oldest = match self.store.list() {
            Ok(backups) => backups
                .first()
                .and_then(|b| b.metadata.as_ref().map(|m| m.seq)),
            Err(e) => {
                tracing::warn!(error = %e.report(), "cannot list the backups to purge the log");
                return;
            }
        };
        let Some(oldest) = oldest else {
            return;
        };
        match purge_before(sink, oldest.min(young)) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "purged log segments"),
            Err(e) => tracing::warn!(error = %e.report(), "purging the log failed"),
        }
    }

    /// With the log off: removes a log an earlier run shipped, which would
    /// keep followers waiting on segments that no longer come.
    pub fn remove_log(&self) -> Result<()> {
        let Some(sink) = self.store.log_sink() else {
            return Ok(());
        };
        let firsts = sink.segments()?;
        if firsts.is_empty() {
            return Ok(());
        }
        tracing::info!(
            segments = firsts.len(),
            "the write log is off: removing the store's log, so followers follow backups"
        );
        for first in firsts {
            sink.remove_segment(first)?;
        }
        Ok(())
    }

    /// The log's state, when it is on.
    pub fn log_status(&self) -> Option<LogShipping> {
        self.log_report().clone()
    }
}
