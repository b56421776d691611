//! A log segment: the master's write batches between two points of its
//! sequence, as one checksummed unit a follower applies whole or not at all.
//!
//! ```text
//! magic     8 bytes  "RKVLOG\0\x02" (the last byte is the format version)
//! lineage   u16 length + UTF-8   the database the writes are of
//! token     u16 length + UTF-8   the master (its lease token) that shipped them
//! since     u64                  the first sequence number that master shipped
//! ms        u64                  unix ms on the master's clock: every write it
//!                                acknowledged before then is in this segment
//!                                or an earlier one (0: unknown)
//! batches   u32 count, then per batch: u32 length + RocksDB WriteBatch bytes
//! crc32c    u32 of every byte before it
//! ```
//!
//! Integers are little-endian. A RocksDB write batch begins with its own
//! sequence number (8 bytes) and operation count (4 bytes), and takes one
//! sequence number per operation: the segment's range is read from its
//! batches, and decoding checks that each batch starts where the one
//! before it ends. So a segment cannot claim writes it does not hold, and
//! cannot hide a gap.
//!
//! `since` lets a follower tell a master that goes on from the log it
//! applied from one that does not: a segment of another token than the one
//! before it must be that master's first (`since` is its own first
//! sequence number), else the new master's history parted from the
//! follower's data (it recovered, or was promoted, at an earlier point).
//!
//! `ms` is how current the log is once the segment is applied: a follower
//! holding it holds every write the master acknowledged before `ms` (the
//! master reads the time, then its newest sequence number, and ships up to
//! that number). Version 1 (without `ms`) is still read, its `ms` unknown
//! (0).

use std::ops::RangeInclusive;

/// What begins every segment: `RKVLOG`, a zero, the format version.
const MAGIC: [u8; 8] = *b"RKVLOG\x00\x02";
/// The first format, without `ms`.
const MAGIC_V1: [u8; 8] = *b"RKVLOG\x00\x01";
/// A write batch's header: its sequence number and operation count.
const BATCH_HEADER: usize = 12;
/// The longest lineage or token a segment carries.
const MAX_LABEL: usize = 1024;

/// One write batch as the master's log holds it: the RocksDB `WriteBatch`
/// representation, its first sequence number in the first 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    data: Vec<u8>,
}

impl Batch {
    /// A batch from its RocksDB representation; `None` if it is too short
    /// to hold the header or holds no operation.
    pub fn from_data(data: Vec<u8>) -> Option<Batch> {
        let batch = Batch { data };
        (batch.data.len() >= BATCH_HEADER && batch.count() > 0).then_some(batch)
    }

    /// The batch's first sequence number.
    pub fn seq(&self) -> u64 {
        u64::from_le_bytes(self.data[..8].try_into().expect("8 bytes"))
    }

    /// How many operations (and so sequence numbers) it holds.
    pub fn count(&self) -> u64 {
        u64::from(u32::from_le_bytes(
            self.data[8..12].try_into().expect("4 bytes"),
        ))
    }

    /// The sequence numbers it takes.
    pub fn seqs(&self) -> RangeInclusive<u64> {
        self.seq()..=self.seq() + self.count() - 1
    }

    /// The RocksDB representation, for `WriteBatch::from_data`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// A run of write batches, contiguous by sequence number, of one database
/// and shipped by one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The database the writes are of (its lineage).
    pub lineage: String,
    /// The master that shipped them (its lease token).
    pub token: String,
    /// The first sequence number that master shipped (at or before this
    /// segment's first).
    pub since: u64,
    /// Unix milliseconds on the master's clock: every write the master
    /// acknowledged before then is in this segment or an earlier one. 0
    /// when unknown.
    pub ms: u64,
    batches: Vec<Batch>,
}

/// Why bytes are not a segment. Each says what a reader checked; none is
/// ever applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The bytes do not begin as a segment of a version this rkv reads.
    #[error("not an rkv log segment (or of a newer format)")]
    NotASegment,
    /// The bytes end before the segment does (a cut-short write or copy).
    #[error("cut short: {0} bytes, the segment says more")]
    Truncated(usize),
    /// The checksum does not match: a byte changed.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// The crc32c the segment carries.
        stored: u32,
        /// The crc32c of its bytes.
        computed: u32,
    },
    /// Bytes follow the checksum.
    #[error("{0} bytes after the end of the segment")]
    TrailingBytes(usize),
    /// A lineage or token that is not UTF-8, or too long.
    #[error("a malformed {0}")]
    BadLabel(&'static str),
    /// No batches: a segment holds at least one write.
    #[error("no write batches")]
    Empty,
    /// A batch too short to be one, or with no operation.
    #[error("batch {0} is not a RocksDB write batch")]
    BadBatch(usize),
    /// The segment says its master shipped from a point after it.
    #[error("it says its master shipped from sequence {0}, after its own first")]
    BadSince(u64),
    /// The segment does not start where its name in the store says.
    #[error("it starts at sequence {starts}, not where its name says")]
    Misnamed {
        /// Where it starts.
        starts: u64,
    },
    /// The segment is another database's.
    #[error("it is of another database ({lineage})")]
    OtherDatabase {
        /// The lineage it carries.
        lineage: String,
    },
    /// More bytes than any segment holds (see [`super::store::MAX_SEGMENT_BYTES`]).
    #[error("larger than a segment may be ({0} bytes)")]
    TooLarge(u64),
    /// A batch does not start where the one before it ends.
    #[error("batch {index} starts at sequence {found}, not at {expected}: a gap or an overlap")]
    NotContiguous {
        /// Which batch.
        index: usize,
        /// Where it should start.
        expected: u64,
        /// Where it starts.
        found: u64,
    },
}

impl Segment {
    /// A segment of `batches`, which must be contiguous.
    pub fn new(
        lineage: String,
        token: String,
        batches: Vec<Batch>,
    ) -> Result<Segment, SegmentError> {
        if lineage.len() > MAX_LABEL {
            return Err(SegmentError::BadLabel("lineage"));
        }
        if token.len() > MAX_LABEL {
            return Err(SegmentError::BadLabel("token"));
        }
        check_contiguous(&batches)?;
        Ok(Segment {
            lineage,
            token,
            since: batches[0].seq(),
            ms: 0,
            batches,
        })
    }

    /// The same segment, covering every write acknowledged before `ms`
    /// (unix milliseconds on the master's clock) with those before it.
    pub fn cut_at(mut self, ms: u64) -> Segment {
        self.ms = ms;
        self
    }

    /// The same segment, of a master that shipped from `since` on (at or
    /// before the segment's first sequence number).
    pub fn shipped_since(mut self, since: u64) -> Segment {
        self.since = since.min(self.first_seq());
        self
    }

    /// The batches, in sequence order.
    pub fn batches(&self) -> &[Batch] {
        &self.batches
    }

    /// The first sequence number the segment holds.
    pub fn first_seq(&self) -> u64 {
        self.batches[0].seq()
    }

    /// The last sequence number the segment holds.
    pub fn last_seq(&self) -> u64 {
        *self.batches[self.batches.len() - 1].seqs().end()
    }

    /// The segment's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let size = self.batches.iter().map(|b| 4 + b.data.len()).sum::<usize>();
        let mut out =
            Vec::with_capacity(8 + 4 + self.lineage.len() + self.token.len() + 16 + 4 + size + 4);
        out.extend_from_slice(&MAGIC);
        for label in [&self.lineage, &self.token] {
            out.extend_from_slice(&(label.len() as u16).to_le_bytes());
            out.extend_from_slice(label.as_bytes());
        }
        out.extend_from_slice(&self.since.to_le_bytes());
        out.extend_from_slice(&self.ms.to_le_bytes());
        out.extend_from_slice(&(self.batches.len() as u32).to_le_bytes());
        for batch in &self.batches {
            out.extend_from_slice(&(batch.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&batch.data);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a segment, checking its checksum first and then every length
    /// and sequence number in it: memory is bounded by the input's size,
    /// whatever the bytes claim.
    pub fn decode(bytes: &[u8]) -> Result<Segment, SegmentError> {
        if bytes.len() < MAGIC.len()
            || ![MAGIC, MAGIC_V1].contains(&bytes[..8].try_into().expect("8"))
        {
            return Err(SegmentError::NotASegment);
        }
        if bytes.len() < MAGIC.len() + 4 {
            return Err(SegmentError::Truncated(bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            // A cut-short segment fails its checksum too: say which it is
            // when the structure shows it.
            if let Err(e @ SegmentError::Truncated(_)) = parse(bytes) {
                return Err(e);
            }
            return Err(SegmentError::Checksum { stored, computed });
        }
        let (segment, used) = parse(body)?;
        if used != body.len() {
            return Err(SegmentError::TrailingBytes(body.len() - used));
        }
        Ok(segment)
    }
}

/// The segment at the start of `bytes` and how many bytes it took (the
/// checksum excluded).
fn parse(bytes: &[u8]) -> Result<(Segment, usize), SegmentError> {
    let mut r = Reader { bytes, at: 0 };
    let v1 = r.take(MAGIC.len())? == MAGIC_V1;
    let lineage = r.label("lineage")?;
    let token = r.label("token")?;
    let since = r.u64()?;
    let ms = if v1 { 0 } else { r.u64()? };
    let count = r.u32()? as usize;
    // Each batch takes at least its length and its header.
    if count > r.left() / (4 + BATCH_HEADER) + 1 {
        return Err(SegmentError::Truncated(bytes.len()));
    }
    let mut batches = Vec::with_capacity(count);
    for index in 0..count {
        let len = r.u32()? as usize;
        let data = r.take(len)?.to_vec();
        batches.push(Batch::from_data(data).ok_or(SegmentError::BadBatch(index))?);
    }
    check_contiguous(&batches)?;
    if since > batches[0].seq() {
        return Err(SegmentError::BadSince(since));
    }
    Ok((
        Segment {
            lineage,
            token,
            since,
            ms,
            batches,
        },
        r.at,
    ))
}

fn check_contiguous(batches: &[Batch]) -> Result<(), SegmentError> {
    if batches.is_empty() {
        return Err(SegmentError::Empty);
    }
    for (index, pair) in batches.windows(2).enumerate() {
        let expected = pair[0].seqs().end() + 1;
        if pair[1].seq() != expected {
            return Err(SegmentError::NotContiguous {
                index: index + 1,
                expected,
                found: pair[1].seq(),
            });
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SegmentError> {
        if n > self.left() {
            return Err(SegmentError::Truncated(self.bytes.len()));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, SegmentError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn u32(&mut self) -> Result<u32, SegmentError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn label(&mut self, what: &'static str) -> Result<String, SegmentError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize;
        if len > MAX_LABEL {
            return Err(SegmentError::BadLabel(what));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| SegmentError::BadLabel(what))
    }
}

#[cfg(test)]
mod tests;
