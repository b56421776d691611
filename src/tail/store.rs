//! Where the log's segments live: beside the backups, in the same store.
//! Each segment is named by its first sequence number, so a follower that
//! stands at sequence `n` knows the next segment's name (`n + 1`) and asks
//! for that one object: no listing while it keeps up.

use crate::error::Result;

/// The most bytes one segment may hold: the shipper cuts segments well
/// below it, and a reader refuses a larger object before reading it, so a
/// damaged or hostile store cannot make a follower allocate without bound.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;

/// The directory of the log's segments in a store, beside the backups.
pub const LOG_DIR: &str = "log";

/// A segment's name in the store: `log/<first, 20 digits>.seg`, so that
/// names sort as their sequence numbers do and the next one's is known.
pub fn segment_object(first: u64) -> String {
    format!("{LOG_DIR}/{first:020}.seg")
}

/// The first sequence number of the segment named `name` (the file name,
/// without `log/`); `None` for any other name (a dot-file being written).
pub fn parse_segment_file(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

/// The log as a follower reads it.
pub trait LogSource: Send + Sync {
    /// The bytes of the segment whose first batch starts at `first`, or
    /// `None` when the store holds none (yet). Whether the bytes are a
    /// segment is the caller's to check ([`super::Segment::decode`]).
    fn read_segment(&self, first: u64) -> Result<Option<Vec<u8>>>;

    /// The first sequence numbers of the segments the store holds, in
    /// order: a listing, for a follower finding where a restored backup
    /// joins the log, for retention and for `rkv status`; never a step of
    /// a follower that keeps up.
    fn segments(&self) -> Result<Vec<u64>>;

    /// The segment's name in the store, for messages.
    fn segment_name(&self, first: u64) -> String;
}

/// What a shipper commits to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The segment is in place under its name.
    New,
    /// The same bytes were already there (a retry whose first answer was
    /// lost, or a restart shipping again what it shipped before).
    AlreadyThere,
}

/// The log as the master writes it.
pub trait LogSink: LogSource {
    /// Commits `bytes` (an encoded segment) under `first` atomically: a
    /// reader sees the whole segment or none. Never replaces a segment:
    /// [`Error::SegmentExists`](crate::Error::SegmentExists) when different
    /// bytes are already there (another master shipped it).
    fn write_segment(&self, first: u64, bytes: &[u8]) -> Result<Committed>;

    /// Removes the segment starting at `first` (not an error when absent).
    fn remove_segment(&self, first: u64) -> Result<()>;
}

/// Removes the segments no retained backup needs: every one that ends at
/// or before `oldest_needed` (the sequence number of the oldest backup
/// retention keeps), since a follower restoring that backup goes on from
/// the segment holding the write after it. Returns how many went.
pub fn purge_before(sink: &dyn LogSink, oldest_needed: u64) -> Result<usize> {
    let firsts = sink.segments()?;
    let mut removed = 0;
    // A segment ends where the next one begins: only those with a next
    // segment are known to end, so the newest always stays.
    for pair in firsts.windows(2) {
        if pair[1] <= oldest_needed + 1 {
            sink.remove_segment(pair[0])?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// What a store's log covers, for `rkv status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRange {
    /// How many segments.
    pub segments: usize,
    /// The first sequence number of the oldest.
    pub first_seq: u64,
    /// When the oldest was cut (unix ms on the master's clock), when it
    /// says and reads whole.
    pub first_ms: Option<u64>,
    /// The last sequence number of the newest, when it reads whole.
    pub last_seq: Option<u64>,
    /// When the newest was cut.
    pub last_ms: Option<u64>,
}

/// What `log` covers: its oldest and newest segments, read; `None` when it
/// holds none.
pub fn range(log: &dyn LogSource) -> Result<Option<LogRange>> {
    let firsts = log.segments()?;
    let (Some(&first), Some(&last)) = (firsts.first(), firsts.last()) else {
        return Ok(None);
    };
    let read = |first| -> Result<Option<super::Segment>> {
        Ok(log
            .read_segment(first)?
            .and_then(|bytes| super::Segment::decode(&bytes).ok()))
    };
    let (oldest, newest) = (read(first)?, read(last)?);
    let dated = |s: &Option<super::Segment>| s.as_ref().map(|s| s.ms).filter(|&ms| ms > 0);
    Ok(Some(LogRange {
        segments: firsts.len(),
        first_seq: first,
        first_ms: dated(&oldest),
        last_seq: newest.as_ref().map(super::Segment::last_seq),
        last_ms: dated(&newest),
    }))
}
