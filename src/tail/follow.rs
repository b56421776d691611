//! The follower's side of the live tail: the segments after the served
//! data, applied batch by batch into the database it serves.
//!
//! Where the data stands is the database's own sequence number: a restored
//! backup holds exactly the writes up to it (RocksDB recovers whole batches
//! only), and [`Db::apply`] advances it by exactly each batch. So a
//! follower never needs a record of its own that could disagree with its
//! data, and a restart resumes from what RocksDB recovered.
//!
//! A follower that keeps up reads one segment by name: the one starting
//! just after the last it read. Only to join the log (after a restore or a
//! start) does it list the store, to find the segment holding the write
//! after its data; a backup's data usually ends inside a segment, whose
//! earlier batches it already holds and skips.

use super::store::LogSource;
use super::{Segment, SegmentError};
use crate::db::Db;
use crate::error::{Error, Result};

/// A follower's place in the store's log.
#[derive(Debug, Clone)]
pub struct Follow {
    lineage: String,
    /// The name of the next segment to read; `None` until joined.
    next: Option<u64>,
    /// The token of the master whose segment was applied last.
    token: Option<String>,
}

/// How a follower that has not found its place in the log may look for
/// it: the segment starting just after its data is asked for by name (one
/// request); a listing, which finds the segment its data ends inside, costs
/// a LIST on an object store, so the caller says when it is worth one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// By name only.
    ByName,
    /// By name, else by listing the log.
    ByListing,
}

/// How far [`Follow::replay`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to this sequence number (the last whole batch at or before it).
    Seq(u64),
    /// Up to the last segment whose `ms` is at or before this time (unix ms
    /// on the master's clock): every write acknowledged before that segment's
    /// `ms` is applied, and none committed after this time.
    Time(u64),
}

/// What one [`Follow::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Segments read (each applied whole, save what the data held).
    pub segments: u64,
    /// Batches applied.
    pub batches: u64,
    /// The `ms` of the last segment read (every write the master
    /// acknowledged before it is applied), when the segment says.
    pub last_ms: Option<u64>,
    /// A replay's point stopped it (not the end of the log).
    pub stopped: bool,
}

impl Follow {
    /// Follows the log of the database `lineage` names, from wherever the
    /// served data stands.
    pub fn new(lineage: String) -> Follow {
        Follow {
            lineage,
            next: None,
            token: None,
        }
    }

    /// Whether the follower has found its place in the store's log: it
    /// read a segment, and knows the next one's name. A store without a
    /// log (or one whose log has not reached the data yet) is never joined.
    pub fn joined(&self) -> bool {
        self.next.is_some()
    }

    /// The token of the master whose segment was read last, once joined.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The database the log must be of.
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    /// Applies the segments the store holds after `db`'s data, up to
    /// `max_segments` of them, in order. An error says why the log cannot
    /// be followed from here ([`Error::NotNext`]: it does not continue the
    /// data; [`Error::BadSegment`]: a segment fails its checks), and
    /// nothing of the offending segment was applied: only a backup brings
    /// the follower on. A store error leaves the place unchanged, to retry.
    pub fn step(
        &mut self,
        db: &Db,
        log: &dyn LogSource,
        max_segments: usize,
        how: Join,
    ) -> Result<Progress> {
        self.advance(db, log, max_segments, how, None)
    }

    /// [`Follow::step`] as far as `until` allows, for a restore to a point
    /// in time: whole batches only, so the data stops at the last batch
    /// boundary at or before the point.
    pub fn replay(&mut self, db: &Db, log: &dyn LogSource, until: Until) -> Result<Progress> {
        self.advance(db, log, usize::MAX, Join::ByListing, Some(until))
    }

    fn advance(
        &mut self,
        db: &Db,
        log: &dyn LogSource,
        max_segments: usize,
        how: Join,
        until: Option<Until>,
    ) -> Result<Progress> {
        let mut progress = Progress::default();
        while (progress.segments as usize) < max_segments {
            let at = db.latest_sequence_number();
            let found = match self.next {
                Some(next) => log.read_segment(next)?.map(|bytes| (next, bytes)),
                None => join(log, at, how)?,
            };
            let Some((first, bytes)) = found else {
                break;
            };
            let segment = self.check(log, first, &bytes)?;
            if let Some(token) = self.token.as_deref() {
                // Another master's segment must be its first: one that
                // shipped from earlier holds other writes than ours there.
                if token != segment.token && segment.since != segment.first_seq() {
                    return Err(Error::Diverged {
                        at,
                        detail: format!(
                            "segment {} is of another master, which shipped from sequence {} on",
                            log.segment_name(first),
                            segment.since
                        ),
                    });
                }
            }
            if let Some(Until::Time(ms)) = until {
                // Undated (the first format) or later: not at or before.
                if segment.ms == 0 || segment.ms > ms {
                    progress.stopped = true;
                    break;
                }
            }
            let limit = match until {
                Some(Until::Seq(n)) => n,
                _ => u64::MAX,
            };
            let mut stopped = false;
            for batch in segment.batches() {
                let end = *batch.seqs().end();
                if end > limit {
                    stopped = true;
                    break;
                }
                if end > db.latest_sequence_number() {
                    db.apply(batch)?;
                    progress.batches += 1;
                }
            }
            progress.segments += 1;
            progress.last_ms = Some(segment.ms).filter(|&ms| ms > 0);
            if stopped || segment.last_seq() == limit {
                progress.stopped = true;
                break;
            }
            self.next = Some(segment.last_seq() + 1);
            self.token = Some(segment.token);
        }
        Ok(progress)
    }

    /// Whether the log went on without the segment this follower waits
    /// for: [`Error::NotNext`] when a later segment is in the store and the
    /// awaited one is not (the master's log jumped, or the segment was
    /// purged while this follower was away). Segments are committed in
    /// order, so the awaited one is read again after the listing: one that
    /// landed just before a later one is not a gap. A listing, so asked
    /// only when there is reason to (a newer backup waits).
    pub fn check_stranded(&self, log: &dyn LogSource) -> Result<()> {
        let Some(next) = self.next else {
            return Ok(());
        };
        let later = log.segments()?.into_iter().find(|&f| f > next);
        match later {
            Some(later) if log.read_segment(next)?.is_none() => Err(Error::NotNext {
                at: next - 1,
                batch: later,
            }),
            _ => Ok(()),
        }
    }

    /// The segment named `first`, decoded and checked: of this database,
    /// starting where its name says.
    fn check(&self, log: &dyn LogSource, first: u64, bytes: &[u8]) -> Result<Segment> {
        let bad = |source| Error::BadSegment {
            name: log.segment_name(first),
            source,
        };
        let segment = Segment::decode(bytes).map_err(bad)?;
        if segment.first_seq() != first {
            return Err(bad(SegmentError::Misnamed {
                starts: segment.first_seq(),
            }));
        }
        if segment.lineage != self.lineage {
            return Err(bad(SegmentError::OtherDatabase {
                lineage: segment.lineage,
            }));
        }
        Ok(segment)
    }
}

/// The segment holding write `at + 1`: the one starting there, asked for
/// by name; else (when `how` allows) found by listing, the last one that
/// starts at or before it. `None` when the log has not reached it yet;
/// [`Error::NotNext`] when the log goes on past it without it (a jump: only
/// a backup bridges that).
fn join(log: &dyn LogSource, at: u64, how: Join) -> Result<Option<(u64, Vec<u8>)>> {
    if let Some(bytes) = log.read_segment(at + 1)? {
        return Ok(Some((at + 1, bytes)));
    }
    if how == Join::ByName {
        return Ok(None);
    }
    let firsts = log.segments()?;
    let holding = firsts.iter().rev().find(|&&f| f <= at + 1).copied();
    let Some(first) = holding else {
        return match firsts.first() {
            Some(&past) => Err(Error::NotNext { at, batch: past }),
            None => Ok(None),
        };
    };
    // Purged since the listing: the log moved on without this follower.
    Ok(log.read_segment(first)?.map(|bytes| (first, bytes)))
}

#[cfg(test)]
mod tests;
