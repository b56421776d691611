//! Staleness and health: the master's clock as a follower measures it from
//! heartbeats, so that the data's age is measured on the follower's own
//! clock whatever the skew between hosts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ApplyState, Follower};
use crate::backup::Heartbeat;

/// The master's clock as this follower sees it, learnt from heartbeats.
///
/// A heartbeat that changed between two reads was written after the
/// first of them: its timestamp `M`, with `P` the monotonic time of that
/// earlier read, gives the offset `M - P`, at or above the true one (by at
/// most the time between the two reads). The highest of the recent
/// samples converts the master's timestamps to this host's clock, so
/// staleness is never below the truth, whatever the skew between the hosts
/// and across a clock stepped either way: it errs on the stale side, by a
/// poll interval, or by an apply when one came between the reads, and a
/// stepped clock ages out of the window.
#[derive(Debug, Default, Clone)]
pub(super) struct MasterClock {
    samples: VecDeque<i64>,
}

impl MasterClock {
    const WINDOW: usize = 16;

    pub(super) fn sample(&mut self, offset_ms: i64) {
        if self.samples.len() == Self::WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(offset_ms);
    }

    /// The master's clock minus this follower's monotonic clock, in ms,
    /// never below the true offset (see [`MasterClock`]); `None` until a
    /// heartbeat was seen to change.
    pub(super) fn offset(&self) -> Option<i64> {
        self.samples.iter().copied().max()
    }
}

impl Follower {
    /// Milliseconds on this follower's monotonic clock, rounded down (as
    /// the reads the offset is sampled from: the offset errs high).
    pub(super) fn mono_ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch).as_millis() as i64
    }

    /// Milliseconds on this follower's monotonic clock, rounded up (as the
    /// "now" staleness is measured at: it never rounds below the truth).
    fn mono_ms_ceil(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch)
            .as_micros()
            .div_ceil(1000) as i64
    }

    /// Takes in a heartbeat read at `read_at`: a changed one is a reading of
    /// the master's clock (when it is of the served database, or nothing is
    /// served yet).
    pub(super) fn observe_heartbeat(
        &self,
        state: &mut ApplyState,
        heartbeat: Heartbeat,
        read_at: Instant,
    ) {
        let previous_read = state.heartbeat_read_at.replace(read_at);
        if state.heartbeat.as_ref() == Some(&heartbeat) {
            return;
        }
        let serving = self.serving.load();
        let same_lineage = serving
            .as_ref()
            .and_then(|g| g.lineage())
            .is_none_or(|l| l == heartbeat.lineage());
        // The first heartbeat read may be hours old: only a change tells
        // when one was written, and then only that it was after the read
        // before.
        if let Some(previous_read) = previous_read.filter(|_| state.heartbeat.is_some()) {
            if same_lineage {
                state
                    .clock
                    .sample(heartbeat.ms as i64 - self.mono_ms(previous_read));
            }
        }
        state.heartbeat_changed = Some(read_at);
        state.heartbeat = Some(heartbeat);
    }

    /// How old the served data is, on this follower's clock: now minus the
    /// moment it was last known to be the master's whole state. That is the
    /// served backup's creation, or the master's latest heartbeat when the
    /// master had written nothing beyond the data (the backup's writes and
    /// the log's applied since); both are master
    /// timestamps, converted with the offset heartbeats measured (see
    /// [`MasterClock`]). `None` until a heartbeat was seen to change: an
    /// unknown age is not a fresh one.
    pub fn staleness(&self) -> Option<Duration> {
        let generation = self.serving.load_full()?;
        let state = self.state();
        let offset = state.clock.offset()?;
        let mut current_as_of = generation.backup.created_ms() as i64;
        // The data's own sequence number: the backup's, and every batch of
        // the log applied since.
        let data_seq = generation.db.latest_sequence_number();
        if let (Some(meta), Some(heartbeat)) = (&generation.backup.metadata, &state.heartbeat) {
            if heartbeat.seq <= data_seq && heartbeat.lineage() == meta.lineage() {
                current_as_of = current_as_of.max(heartbeat.ms as i64);
            }
        }
        // The log applied since: every write acknowledged before its last
        // segment's time.
        if let Some((path, ms)) = &state.log.covered_ms {
            if *path == generation.path {
                current_as_of = current_as_of.max(*ms as i64);
            }
        }
        let now_on_master = self.mono_ms_ceil(Instant::now()) + offset;
        Some(Duration::from_millis(
            now_on_master.saturating_sub(current_as_of).max(0) as u64,
        ))
    }

    /// The master's clock minus this host's, in ms (from heartbeats).
    pub fn clock_skew_ms(&self) -> Option<i64> {
        let offset = self.state().clock.offset()?;
        let now = Instant::now();
        Some(offset + self.mono_ms(now) - crate::backup::now_ms() as i64)
    }

    /// Whether the follower serves the backup directory's database within
    /// `--max-staleness`. Never while its data holds writes the master's
    /// history lost (a divergence, until a backup replaces the data).
    pub fn healthy(&self) -> bool {
        {
            let state = self.state();
            if state.lineage_change.is_some() || state.log.diverged.is_some() {
                return false;
            }
        }
        if self.serving.load().is_none() {
            return false;
        }
        match self.max_staleness {
            None => true,
            Some(max) => self.staleness().is_some_and(|s| s <= max),
        }
    }

    /// Why the follower is not healthy, for refusals and `/healthz`.
    pub(super) fn unhealthy_reason(&self) -> String {
        if let Some(why) = self.state().lineage_change.clone() {
            return why;
        }
        let diverged = {
            let state = self.state();
            state.log.diverged.and(state.log.broken.clone())
        };
        if let Some(why) = diverged {
            return format!(
                "the served data holds writes the master's history does not ({why}): waiting \
                 for a backup of the master's to replace it"
            );
        }
        let max = humantime::format_duration(self.max_staleness.unwrap_or_default());
        match self.staleness() {
            Some(age) => format!(
                "the data is {} old, more than --max-staleness {max}: the master has not \
                 published a newer backup",
                humantime::format_duration(Duration::from_millis(age.as_millis() as u64)),
            ),
            None => format!(
                "the data's age is unknown (no heartbeat of the master seen changing since \
                 this follower started), so it cannot be shown within --max-staleness {max}"
            ),
        }
    }

    /// A one-line summary for systemd's STATUS.
    pub fn status_line(&self) -> String {
        let Some(g) = self.serving() else {
            return "waiting for the first backup".to_string();
        };
        let age = match self.staleness() {
            Some(age) => humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
            None => "age unknown".to_string(),
        };
        format!(
            "serving backup {} ({age}){}",
            g.backup.id,
            if self.healthy() { "" } else { ", STALE" }
        )
    }
}
