use super::*;

/// A real RocksDB write batch of `ops` puts, stamped with `seq`.
fn batch(seq: u64, ops: u32) -> Batch {
    let mut wb = rocksdb::WriteBatch::default();
    for i in 0..ops {
        wb.put(format!("k{seq}.{i}"), b"v");
    }
    let mut data = wb.data().to_vec();
    data[..8].copy_from_slice(&seq.to_le_bytes());
    Batch::from_data(data).unwrap()
}

fn segment() -> Segment {
    Segment::new(
        "db-1".into(),
        "master-token".into(),
        vec![batch(5, 1), batch(6, 3), batch(9, 2)],
    )
    .unwrap()
    .cut_at(1_796_572_235_866)
}

#[test]
fn a_segment_round_trips_and_knows_its_range_from_its_batches() {
    let s = segment();
    assert_eq!((s.first_seq(), s.last_seq()), (5, 10));
    let decoded = Segment::decode(&s.encode()).unwrap();
    assert_eq!(decoded, s);
    assert_eq!(decoded.ms, 1_796_572_235_866);
    assert_eq!(decoded.batches()[1].seqs(), 6..=8);
    let wb = rocksdb::WriteBatch::from_data(decoded.batches()[1].data());
    assert_eq!(wb.len(), 3);
}

#[test]
fn a_gap_or_an_overlap_between_batches_is_refused() {
    let gap = Segment::new("l".into(), "t".into(), vec![batch(5, 1), batch(7, 1)]);
    assert_eq!(
        gap,
        Err(SegmentError::NotContiguous {
            index: 1,
            expected: 6,
            found: 7
        })
    );
    let overlap = Segment::new("l".into(), "t".into(), vec![batch(5, 2), batch(6, 1)]);
    assert!(matches!(overlap, Err(SegmentError::NotContiguous { .. })));
    assert_eq!(
        Segment::new("l".into(), "t".into(), vec![]),
        Err(SegmentError::Empty)
    );
}

#[test]
fn every_flipped_byte_and_every_cut_is_caught() {
    let bytes = segment().encode();
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(
            Segment::decode(&bad).is_err(),
            "a flip at byte {at} went unseen"
        );
    }
    for len in 0..bytes.len() {
        assert!(
            Segment::decode(&bytes[..len]).is_err(),
            "a cut at {len} went unseen"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Segment::decode(&longer).is_err());
}

#[test]
fn lengths_that_lie_cost_no_memory_beyond_the_input() {
    // A valid checksum over a header claiming four billion batches.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        Segment::decode(&bytes),
        Err(SegmentError::Truncated(_))
    ));
    assert_eq!(
        Segment::decode(b"not a segment at all"),
        Err(SegmentError::NotASegment)
    );
}

#[test]
fn a_first_format_segment_is_read_with_its_time_unknown() {
    let s = segment();
    // Version 1: the same, without `ms`.
    let mut v1 = s.encode();
    v1.truncate(v1.len() - 4);
    v1[7] = 1;
    let at = 8 + 2 + s.lineage.len() + 2 + s.token.len() + 8;
    v1.drain(at..at + 8);
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let decoded = Segment::decode(&v1).unwrap();
    assert_eq!(decoded, s.cut_at(0));
}
