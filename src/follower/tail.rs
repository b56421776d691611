//! The follower's live tail: each poll applies the store's log segments
//! after the served data into the served database (see
//! [`crate::tail::follow`]), and decides whether a newer backup is needed
//! at all: only when the log cannot bring the data there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{ApplyState, Follower, Generation};
use crate::backup::{BackupInfo, Heartbeat};
use crate::error::{Error, Result};
use crate::tail::follow::{Follow, Join, Progress};

/// The most segments one poll applies, so a follower far behind still
/// answers INFO's questions about its state between polls.
const SEGMENTS_PER_POLL: usize = 256;

/// How long a newer backup may wait for the log to bring the data to it.
/// The shipper ships every few milliseconds: a log that has not got there
/// in this long is stuck (the master jumped its log, or stopped shipping),
/// and the backup is restored instead.
pub(super) const LOG_GRACE: Duration = Duration::from_secs(3);

/// The log's place and how it fares, for INFO and /metrics.
#[derive(Debug, Default, Clone)]
pub(super) struct LogState {
    /// Segments read since start.
    pub segments: u64,
    /// Write batches applied since start.
    pub batches: u64,
    /// Why the log cannot be followed from the served data (a gap, a
    /// damaged segment, another database's), until a backup brings the
    /// follower past it.
    pub broken: Option<String>,
    /// The break is a divergence: the master's history parted from the
    /// data, which then holds writes the master does not. The newest backup
    /// replaces it even if it is older, but only one at or below this
    /// sequence number (the master's, when its heartbeat showed it): a
    /// backup above it holds writes the master lost too.
    pub diverged: Option<u64>,
    /// Backups restored because the log could not bring the data on.
    pub fallbacks: u64,
    /// Since when a newer backup than the data waits for the log.
    pub behind_since: Option<Instant>,
    /// The newest backup the served data is known to hold every write of
    /// (so it is neither read again nor restored).
    pub covered: Option<u32>,
    /// The data of the generation at this path holds every write the
    /// master acknowledged before this time (unix ms on its clock), by the
    /// last segment applied to it: the staleness's evidence from the log.
    pub covered_ms: Option<(PathBuf, u64)>,
}

/// The least time between two listings of the log by a follower looking
/// for its place in it (a LIST request on an object store).
const RELIST: Duration = Duration::from_secs(1);

/// Where the follower stands in the log: of which generation.
pub(super) struct Place {
    generation: PathBuf,
    follow: Follow,
    /// When the log was last listed to join it.
    listed_at: Option<Instant>,
}

impl Follower {
    /// Whether the follower has joined the store's log from `serving`.
    fn joined(&self, serving: &Generation) -> bool {
        let place = self.place.lock().unwrap_or_else(|e| e.into_inner());
        place
            .as_ref()
            .is_some_and(|p| p.generation == serving.path && p.follow.joined())
    }

    /// Applies the log after the served data, when the store keeps one, the
    /// master's heartbeat says it ships one, and the served backup says
    /// which database it is of. Joining the log lists it once for a new
    /// generation, and again only when the master stands past the data (so
    /// a segment the data ends inside may hold what comes next), at most
    /// once per [`RELIST`]: otherwise the next segment is the one starting
    /// just after the data, asked for by name.
    /// Steps the log alone, as the last poll left it (its heartbeat, the
    /// served generation): what a wake by new segments needs. Returns
    /// false when a whole poll must run instead: nothing is served yet, or
    /// the log just broke (a gap, damage, a divergence), which a backup
    /// mends.
    pub fn step_log(&self) -> bool {
        let _one_at_a_time = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        let Some(serving) = self.serving.load_full() else {
            return false;
        };
        let (heartbeat, broken) = {
            let state = self.state();
            (state.heartbeat.clone(), state.log.broken.is_some())
        };
        self.follow_log(&serving, heartbeat.as_ref());
        broken || self.state().log.broken.is_none()
    }

    pub(super) fn follow_log(&self, serving: &Generation, heartbeat: Option<&Heartbeat>) {
        let Some(log) = self.store.log() else {
            return;
        };
        let Some(lineage) = serving.lineage() else {
            return;
        };
        if !serving.writable {
            return;
        }
        // Read before the place is locked: `log_covers` takes the place
        // under the state's lock, so the two are never taken the other way.
        let behind = self.state().log.behind_since.is_some();
        // Segments are looked for only while a master says it ships them.
        let shipping = heartbeat
            .filter(|h| h.log_interval_ms.is_some())
            .map(|h| h.seq);
        let mut place = self.place.lock().unwrap_or_else(|e| e.into_inner());
        if place.as_ref().is_none_or(|p| p.generation != serving.path) {
            *place = Some(Place {
                generation: serving.path.clone(),
                follow: Follow::new(lineage.to_string()),
                listed_at: None,
            });
        }
        let place_ref = place.as_mut().expect("set above");
        // Listed once on a new generation (a backup's data usually ends
        // inside a segment); after that, only when the master stands past
        // the data.
        let how = match shipping {
            Some(master_seq)
                if !place_ref.follow.joined()
                    && place_ref.listed_at.is_none_or(|t| {
                        master_seq > serving.db.latest_sequence_number() && t.elapsed() >= RELIST
                    }) =>
            {
                place_ref.listed_at = Some(Instant::now());
                Join::ByListing
            }
            _ => Join::ByName,
        };
        let follow = &mut place_ref.follow;
        // A master whose history parted from the data is seen whether or
        // not it ships a log.
        let result = check_master(follow, heartbeat, serving)
            .and_then(|()| match shipping {
                Some(_) => follow.step(&serving.db, log, SEGMENTS_PER_POLL, how),
                None => Ok(Progress::default()),
            })
            .and_then(|progress| {
                // A newer backup waits and the log does not move: has it
                // gone on without this follower?
                if behind && progress.batches == 0 && shipping.is_some() {
                    follow.check_stranded(log)?;
                }
                Ok(progress)
            });
        drop(place);
        let mut state = self.state();
        match result {
            Ok(Progress {
                segments,
                batches,
                last_ms,
                ..
            }) => {
                state.log.segments += segments;
                state.log.batches += batches;
                if batches > 0 {
                    self.waiters.advanced();
                }
                if let Some(ms) = last_ms {
                    let before = match &state.log.covered_ms {
                        Some((path, before)) if *path == serving.path => *before,
                        _ => 0,
                    };
                    state.log.covered_ms = Some((serving.path.clone(), ms.max(before)));
                }
            }
            // The store could not be asked, or this database refused the
            // write (a full disk, which RocksDB recovers from by itself):
            // the next poll tries again from where the data stands.
            Err(e) if !matches!(e.kind(), "gap" | "corrupt" | "diverged") => {
                let message = e.to_string();
                if state.last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %e.report(), "cannot apply the log yet; will retry");
                    state.last_error = Some(message);
                }
            }
            Err(e) => {
                let message = e.to_string();
                if let Error::Diverged { .. } = e {
                    let bound = heartbeat
                        .filter(|h| h.seq < serving.db.latest_sequence_number())
                        .map_or(u64::MAX, |h| h.seq);
                    // The first sight of it holds: the master's writes
                    // since may lift its heartbeat above the data.
                    state.log.diverged.get_or_insert(bound);
                }
                if state.log.broken.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        error = %e.report(),
                        seq = serving.db.latest_sequence_number(),
                        "the log cannot be followed from the served data; nothing of it was \
                         applied: the follower restores a newer backup and follows the log \
                         from there"
                    );
                    state.log.broken = Some(message);
                }
            }
        }
    }

    /// Whether the served data needs nothing of `newest`, a newer backup of
    /// the same database: it already holds every write the backup holds, or
    /// the log is still expected to bring it there (the follower follows a
    /// log, which is not broken, and it is within [`LOG_GRACE`] of first
    /// seeing the backup). A store without a log, or whose master stopped
    /// shipping, never holds a backup back longer than that.
    pub(super) fn log_covers(
        &self,
        state: &mut ApplyState,
        serving: &Generation,
        newest: &BackupInfo,
    ) -> bool {
        if self.store.log().is_none() || !serving.writable {
            return false;
        }
        let Some(meta) = &newest.metadata else {
            return false;
        };
        if let Some(bound) = state.log.diverged {
            // Waits for a backup the master's history holds.
            return meta.seq > bound;
        }
        if serving.db.latest_sequence_number() >= meta.seq {
            state.log.behind_since = None;
            state.log.covered = Some(newest.id);
            return true;
        }
        if state.log.broken.is_some() || !self.joined(serving) {
            return false;
        }
        let since = *state.log.behind_since.get_or_insert_with(Instant::now);
        since.elapsed() < LOG_GRACE
    }
}

/// [`Error::Diverged`] when the master's heartbeat says its history parted
/// from the data: a master run other than the one whose segment was applied
/// last (another lease token) whose database stands below the data. A
/// master's own restart never does (segments hold only writes it synced),
/// and one heartbeat older than the data is no sign while the token is
/// the same (it may be from before the last segment).
fn check_master(
    follow: &Follow,
    heartbeat: Option<&Heartbeat>,
    serving: &Generation,
) -> Result<()> {
    let (Some(applied), Some(heartbeat)) = (follow.token(), heartbeat) else {
        return Ok(());
    };
    let at = serving.db.latest_sequence_number();
    let other_run = heartbeat.token.as_deref().is_some_and(|t| t != applied);
    if other_run && heartbeat.seq < at && Some(heartbeat.lineage()) == serving.lineage() {
        return Err(Error::Diverged {
            at,
            detail: format!(
                "the master {} (another run than the one whose log was applied) stands at \
                 sequence {}",
                heartbeat.owner(),
                heartbeat.seq
            ),
        });
    }
    Ok(())
}
