//! The master's side of the live tail: every `--log-interval`, the writes
//! acknowledged since the last segment, synced to the master's disk first,
//! go to the store as one segment.
//!
//! The shipper's one piece of state is `shipped`, the last sequence number
//! the store's log holds. Segments tile the sequence from there: each next
//! one starts at `shipped + 1`, so a follower standing at the end of one
//! segment knows the next one's name. When the write-ahead log no longer
//! holds `shipped + 1` (the shipper fell behind RocksDB's retention of
//! obsolete log files, or the master restarted after a long stop), the log
//! jumps: it resumes after the newest write, and the master takes a backup
//! at once, whose data joins the log again. A follower stranded before the
//! jump restores that backup.

use std::time::{Duration, Instant};

use super::store::{LogSink, MAX_SEGMENT_BYTES};
use super::{Segment, SegmentError};
use crate::db::{Capture, Db};
use crate::error::{Error, Result};

/// The most batches one segment holds.
const MAX_BATCHES: usize = 16_384;
/// The bytes of batches after which a segment is cut (a single larger
/// batch still goes whole, up to [`MAX_SEGMENT_BYTES`]).
const SEGMENT_BUDGET: usize = 4 << 20;

/// What one step of the shipper did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    /// No write since the last segment.
    Nothing,
    /// A segment went out.
    Segment {
        /// Its first and last sequence numbers.
        first: u64,
        /// The last.
        last: u64,
        /// Its size.
        bytes: u64,
        /// How many write batches it holds.
        batches: u64,
        /// Whether writes the sync covered remain after it (the segment was
        /// cut at its size): the next step need not wait.
        more: bool,
    },
    /// The write-ahead log no longer held the next write: the log resumes
    /// after `resumed_after`, and a backup must bridge the jump.
    Jumped {
        /// The first write the log lacks.
        from: u64,
        /// The newest write when the jump was made.
        resumed_after: u64,
    },
}

/// What the shipper has done since start, for INFO and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipStats {
    /// The last sequence number the store's log holds.
    pub shipped: u64,
    /// Segments committed.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The write batches they held.
    pub batches: u64,
    /// Times the log jumped (a backup bridged it).
    pub jumps: u64,
    /// How long the last segment took, from the sync to its commit.
    pub last_duration: Option<Duration>,
}

/// The master's shipper of one database's log.
#[derive(Debug)]
pub struct Shipper {
    lineage: String,
    /// The first sequence number this shipper ships: segments say it, so
    /// a follower sees where this master's log joins the one before.
    since: u64,
    /// Every write acknowledged before this time (unix ms) is in the
    /// store's log: what the last segment says (0 before one).
    covered_ms: u64,
    stats: ShipStats,
    /// The sequence number the last step found missing from the captured
    /// batches (see [`Db::capture_writes`]): missing again, it is read
    /// from the write-ahead log.
    missed: Option<u64>,
}

/// Why a master that starts does not simply go on from the store's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// From the end of the store's log, or from the newest backup.
    Continued,
    /// The store's log held writes past this database's newest: the master
    /// recovered to an earlier point than it had shipped (a lost disk
    /// cache, a restored copy). Those segments were removed; followers
    /// that applied them hold writes this master does not.
    Diverged {
        /// The newest write the database holds.
        latest: u64,
        /// The last write the removed segments held.
        shipped: u64,
    },
}

impl Shipper {
    /// A shipper that goes on from where the store's log of this database
    /// ends, else from `backed_up` (the sequence number of the newest backup
    /// this master made; 0 for none). Segments it cannot use are removed:
    /// damaged ones (a crash of a store that lost what it acknowledged),
    /// another database's (a store taken over), and any past the database's
    /// newest write (see [`Resumed::Diverged`]).
    pub fn resume(
        db: &Db,
        log: &dyn LogSink,
        lineage: String,
        backed_up: u64,
    ) -> Result<(Shipper, Resumed)> {
        let latest = db.latest_sequence_number();
        let mut firsts = log.segments()?;
        let mut shipped = None;
        let mut resumed = Resumed::Continued;
        while let Some(first) = firsts.pop() {
            let segment = log
                .read_segment(first)?
                .map(|bytes| Segment::decode(&bytes));
            match segment {
                // Gone since the listing (a purge): look at the one before.
                None => continue,
                Some(Ok(s)) if s.lineage != lineage => {
                    tracing::warn!(
                        lineage = %s.lineage,
                        "the backup store's log is another database's: removing it"
                    );
                    log.remove_segment(first)?;
                    for first in firsts.drain(..) {
                        log.remove_segment(first)?;
                    }
                }
                Some(Ok(s)) if s.last_seq() > latest => {
                    if !matches!(resumed, Resumed::Diverged { .. }) {
                        resumed = Resumed::Diverged {
                            latest,
                            shipped: s.last_seq(),
                        };
                    }
                    log.remove_segment(first)?;
                }
                Some(Ok(s)) => {
                    shipped = Some(s.last_seq());
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        segment = %log.segment_name(first),
                        error = %e,
                        "removing a damaged log segment: it is shipped again from the \
                         write-ahead log"
                    );
                    log.remove_segment(first)?;
                }
            }
        }
        let shipped = shipped.unwrap_or(backed_up.min(latest));
        let shipper = Shipper {
            lineage,
            since: shipped + 1,
            covered_ms: 0,
            missed: None,
            stats: ShipStats {
                shipped,
                ..ShipStats::default()
            },
        };
        Ok((shipper, resumed))
    }

    /// The last sequence number the store's log holds.
    pub fn shipped(&self) -> u64 {
        self.stats.shipped
    }

    /// What it has done since start.
    pub fn stats(&self) -> &ShipStats {
        &self.stats
    }

    /// Ships the writes since the last segment, if any, as one segment
    /// tagged with `token` (the owner's lease token): syncs the
    /// write-ahead log, reads the batches up to the newest write the sync
    /// covered, and commits them. On [`Shipped::Jumped`] the caller takes
    /// a backup at once.
    pub fn ship(&mut self, db: &Db, log: &dyn LogSink, token: &str) -> Result<Shipped> {
        // Read before the sync: every write up to here is in the log file
        // the sync makes durable (RocksDB writes the log before it
        // publishes a sequence number). And every write acknowledged
        // before `read_at` has a sequence number up to here.
        let read_at = crate::backup::now_ms();
        let target = db.latest_sequence_number();
        let shipped = self.stats.shipped;
        if target <= shipped {
            return Ok(Shipped::Nothing);
        }
        let started = Instant::now();
        let captured = match db.captured_since(shipped, MAX_BATCHES) {
            Capture::Batches(batches) => Some(batches),
            // Its writer may not be back from RocksDB yet: one step later
            // it is there, or it never will be.
            Capture::Missing if self.missed != Some(shipped) => {
                self.missed = Some(shipped);
                return Ok(Shipped::Nothing);
            }
            Capture::Missing | Capture::Off => None,
        };
        self.missed = None;
        db.sync_log()?;
        let read = match captured {
            Some(batches) => Ok(batches),
            None => db.updates_since(shipped, MAX_BATCHES),
        };
        let batches = match read {
            Ok(batches) => batches,
            Err(Error::LogGap { wanted, .. }) => {
                self.stats.shipped = target;
                self.stats.jumps += 1;
                return Ok(Shipped::Jumped {
                    from: wanted,
                    resumed_after: target,
                });
            }
            Err(e) => return Err(e),
        };
        let mut size = 0;
        let batches: Vec<_> = batches
            .into_iter()
            .take_while(|b| {
                let fits = *b.seqs().end() <= target
                    && (size == 0 || size + b.data().len() <= SEGMENT_BUDGET);
                size += b.data().len();
                fits
            })
            .collect();
        if batches.is_empty() {
            return Ok(Shipped::Nothing);
        }
        let count = batches.len() as u64;
        let segment = Segment::new(self.lineage.clone(), token.to_string(), batches)
            .map_err(|source| self.bad(log, shipped + 1, source))?
            .shipped_since(self.since);
        // A segment that holds every write up to `target` holds every write
        // acknowledged before `read_at`; one cut short of it, only what the
        // segment before covered.
        let more = segment.last_seq() < target;
        let covered = if more { self.covered_ms } else { read_at };
        let segment = segment.cut_at(covered);
        let bytes = segment.encode();
        if bytes.len() as u64 > MAX_SEGMENT_BYTES {
            return Err(self.bad(log, shipped + 1, SegmentError::TooLarge(MAX_SEGMENT_BYTES)));
        }
        log.write_segment(segment.first_seq(), &bytes)?;
        self.stats.shipped = segment.last_seq();
        self.covered_ms = covered;
        self.stats.segments += 1;
        self.stats.bytes += bytes.len() as u64;
        self.stats.batches += count;
        self.stats.last_duration = Some(started.elapsed());
        Ok(Shipped::Segment {
            first: segment.first_seq(),
            last: segment.last_seq(),
            bytes: bytes.len() as u64,
            batches: count,
            more,
        })
    }

    fn bad(&self, log: &dyn LogSink, first: u64, source: SegmentError) -> Error {
        Error::BadSegment {
            name: log.segment_name(first),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
