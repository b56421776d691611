//! The master's two threads: the backup loop (a step every interval, on
//! request, and a scrub step every scrub interval) and the heartbeat (the
//! lease's renewal), both until the daemon's [`Stop`].

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Master, StepOutcome, HEARTBEAT_PERIOD};
use crate::backoff::Backoff;
use crate::master::lease::Term;
use crate::stop::Stop;

/// The least time from one backup to the next that the log's size makes
/// due: under a flood of writes on a small database, the ratio alone would
/// back up several times a second.
pub const LOG_BACKUP_SPACING: Duration = Duration::from_secs(10);

impl Master {
    /// Starts the heartbeat thread: a heartbeat every [`HEARTBEAT_PERIOD`]
    /// until `stop`; after failures, less often (with jitter, so a store
    /// answering SlowDown is not asked harder), but at least four times a
    /// lease term, so it is renewed once the store is back.
    pub fn start_heartbeat(self: &Arc<Self>, stop: &Stop) -> JoinHandle<()> {
        let master = Arc::clone(self);
        let stop = stop.clone();
        let term = self.lease.get().map_or(HEARTBEAT_PERIOD, Term::term);
        let mut backoff = Backoff::new(HEARTBEAT_PERIOD, term / 4);
        std::thread::Builder::new()
            .name("rkv-heartbeat".into())
            .spawn(move || loop {
                let wait = if master.heartbeat() {
                    backoff.failed()
                } else {
                    backoff.succeeded();
                    HEARTBEAT_PERIOD
                };
                if stop.sleep(wait) {
                    return;
                }
            })
            .expect("spawn heartbeat thread")
    }

    /// Asks the loop for a backup now; returns whether one is already running.
    pub fn schedule_backup(&self) -> bool {
        let mut state = self.state();
        state.requested = true;
        self.changed.notify_all();
        state.in_progress
    }

    /// Starts the backup loop: a step every `interval` (never, when zero)
    /// and whenever one is requested, and a scrub step every
    /// `scrub_interval` (never, when zero), until `stop` (after the step in
    /// progress, if any). A `SAVE` waiting on the loop is then answered
    /// that the master is shutting down.
    ///
    /// With an interval, data no backup holds goes out at once. That is
    /// decided here, before the caller starts serving: what the first
    /// step backs up is the data found at start, whatever clients write
    /// before the thread gets to run.
    pub fn start_loop(
        self: &Arc<Self>,
        interval: Duration,
        scrub_interval: Duration,
        stop: &Stop,
    ) -> JoinHandle<()> {
        if !interval.is_zero() && self.has_unbacked_changes() {
            self.schedule_backup();
        }
        // The loop and `SAVE` wait on `changed`, under the state's lock: the
        // stop takes that lock before it notifies, so neither misses it.
        self.state().stop = Some(stop.clone());
        let master: Weak<Master> = Arc::downgrade(self);
        stop.on_stop(move || {
            if let Some(master) = master.upgrade() {
                let _state = master.state();
                master.changed.notify_all();
            }
        });
        let master = Arc::clone(self);
        std::thread::Builder::new()
            .name("rkv-backup".into())
            .spawn(move || master.backup_loop(interval, scrub_interval))
            .expect("spawn backup thread")
    }

    fn backup_loop(&self, interval: Duration, scrub_interval: Duration) {
        // Data found at start is already requested (see `start_loop`).
        let mut next = Instant::now() + interval;
        // Failed backups are retried on the schedule, but no sooner than
        // a wait that grows with each failure in a row (up to 15 s, or the interval):
        // a store answering SlowDown is not asked harder.
        let mut backoff = Backoff::new(
            interval.max(HEARTBEAT_PERIOD),
            interval.max(Duration::from_secs(15)),
        );
        // Backups the log's size makes due wait out failures likewise,
        // however long the interval.
        let mut log_backoff = Backoff::new(HEARTBEAT_PERIOD, Duration::from_secs(15));
        let mut log_not_before = Instant::now();
        let mut next_scrub = Instant::now() + scrub_interval;
        let far = Duration::from_secs(3600);
        loop {
            let scrub;
            {
                let mut state = self.state();
                loop {
                    if state.stopping() {
                        return;
                    }
                    let now = Instant::now();
                    let log_due = state.log_due && now >= log_not_before;
                    if state.requested || log_due || (!interval.is_zero() && now >= next) {
                        scrub = false;
                        break;
                    }
                    if !scrub_interval.is_zero() && now >= next_scrub {
                        scrub = true;
                        break;
                    }
                    let until_backup = if interval.is_zero() {
                        far
                    } else {
                        next.saturating_duration_since(now)
                    };
                    let until_scrub = if scrub_interval.is_zero() {
                        far
                    } else {
                        next_scrub.saturating_duration_since(now)
                    };
                    let until_log = if state.log_due {
                        log_not_before.saturating_duration_since(now)
                    } else {
                        far
                    };
                    state = self
                        .changed
                        .wait_timeout(state, until_backup.min(until_scrub).min(until_log))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                if !scrub {
                    state.requested = false;
                    state.log_due = false;
                    state.started += 1;
                }
            }
            if scrub {
                self.scrub_step();
                next_scrub = Instant::now() + scrub_interval;
                continue;
            }
            let started = Instant::now();
            let outcome = self.backup_step();
            let mut state = self.state();
            state.finished = state.started;
            self.changed.notify_all();
            drop(state);
            // A fixed schedule: the next backup is due one interval after
            // this one was due, not after it finished (a slow backup would
            // otherwise stretch every interval by its own time). One that
            // overran its interval is followed at once, without a backlog.
            if !interval.is_zero() {
                while next <= started {
                    next += interval;
                }
                match outcome {
                    StepOutcome::Failed(_) => next = next.max(Instant::now() + backoff.failed()),
                    _ => backoff.succeeded(),
                }
            }
            match outcome {
                StepOutcome::Failed(_) => log_not_before = Instant::now() + log_backoff.failed(),
                _ => {
                    log_backoff.succeeded();
                    log_not_before = started + LOG_BACKUP_SPACING;
                }
            }
        }
    }
}
