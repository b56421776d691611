use super::*;
use crate::backup::BackupDir;
use crate::tail::store::{LogSink, LogSource};

fn shipper(db: &Db, log: &BackupDir) -> Shipper {
    let (shipper, resumed) = Shipper::resume(db, log, "db-1".into(), 0).unwrap();
    assert_eq!(resumed, Resumed::Continued);
    shipper
}

fn segment(log: &BackupDir, first: u64) -> Segment {
    Segment::decode(
        &log.read_segment(first)
            .unwrap()
            .expect("the segment is there"),
    )
    .unwrap()
}

#[test]
fn segments_tile_the_sequence_and_hold_every_write_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    let mut shipper = shipper(&db, &log);
    assert_eq!(shipper.ship(&db, &log, "t1").unwrap(), Shipped::Nothing);

    db.put(b"a", b"1").unwrap();
    let mut group = db.batch();
    for key in [b"b", b"c"] {
        group.put(key, b"2", None, None);
    }
    db.write(group).unwrap();
    let shipped = shipper.ship(&db, &log, "t1").unwrap();
    assert!(
        matches!(
            shipped,
            Shipped::Segment {
                first: 1,
                last: 3,
                batches: 2,
                ..
            }
        ),
        "{shipped:?}"
    );
    assert_eq!(shipper.ship(&db, &log, "t1").unwrap(), Shipped::Nothing);

    db.put(b"d", b"3").unwrap();
    shipper.ship(&db, &log, "t1").unwrap();
    assert_eq!(log.segments().unwrap(), [1, 4]);
    let second = segment(&log, 4);
    assert_eq!((second.first_seq(), second.last_seq()), (4, 4));
    assert_eq!(
        (second.lineage.as_str(), second.token.as_str()),
        ("db-1", "t1")
    );
    assert_eq!(shipper.stats().segments, 2);
    assert_eq!(shipper.shipped(), db.latest_sequence_number());
}

#[test]
fn writes_past_a_segments_size_go_on_in_the_next_segment_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    let mut shipper = shipper(&db, &log);
    let value = vec![7u8; 1 << 20];
    for i in 0..6u8 {
        db.put(&[i], &value).unwrap();
    }
    let mut steps = Vec::new();
    loop {
        match shipper.ship(&db, &log, "t1").unwrap() {
            Shipped::Segment { batches, more, .. } => {
                steps.push((batches, more));
                if !more {
                    break;
                }
            }
            other => panic!("a segment was due, got {other:?} after {steps:?}"),
        }
    }
    assert!(steps.len() >= 2, "6 MiB fit one segment: {steps:?}");
    assert!(steps[..steps.len() - 1].iter().all(|&(_, more)| more));
    assert_eq!(steps.iter().map(|&(b, _)| b).sum::<u64>(), 6);
    assert_eq!(shipper.shipped(), db.latest_sequence_number());
}

#[test]
fn a_restarted_master_goes_on_from_the_end_of_the_stores_log() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    db.put(b"a", b"1").unwrap();
    shipper(&db, &log).ship(&db, &log, "t1").unwrap();
    db.put(b"b", b"2").unwrap();

    let mut again = shipper(&db, &log);
    assert_eq!(again.shipped(), 1);
    again.ship(&db, &log, "t2").unwrap();
    assert_eq!(log.segments().unwrap(), [1, 2]);

    // A segment the store damaged goes, and is shipped again.
    std::fs::write(log.path().join("log/00000000000000000002.seg"), b"RKVLOG").unwrap();
    let mut again = shipper(&db, &log);
    assert_eq!(again.shipped(), 1);
    again.ship(&db, &log, "t3").unwrap();
    assert_eq!(segment(&log, 2).token, "t3");
}

#[test]
fn a_log_past_the_databases_newest_write_is_removed_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let log = BackupDir::new(tmp.path().join("backups"));
    {
        let ahead = Db::open(
            &tmp.path().join("ahead"),
            crate::db::OpenMode::ReadWrite {
                create_if_missing: true,
            },
        )
        .unwrap();
        for key in [b"a", b"b", b"c"] {
            ahead.put(key, b"1").unwrap();
            shipper(&ahead, &log).ship(&ahead, &log, "t1").unwrap();
        }
    }
    // The same database recovered to its first write only.
    let db = Db::scratch(tmp.path());
    db.put(b"a", b"1").unwrap();
    let (shipper, resumed) = Shipper::resume(&db, &log, "db-1".into(), 0).unwrap();
    assert_eq!(
        resumed,
        Resumed::Diverged {
            latest: 1,
            shipped: 3
        }
    );
    assert_eq!(shipper.shipped(), 1);
    assert_eq!(log.segments().unwrap(), [1]);
}

#[test]
fn another_databases_log_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    db.put(b"a", b"1").unwrap();
    let (mut other, _) = Shipper::resume(&db, &log, "db-0".into(), 0).unwrap();
    other.ship(&db, &log, "t0").unwrap();
    let (shipper, resumed) = Shipper::resume(&db, &log, "db-1".into(), 0).unwrap();
    assert_eq!(resumed, Resumed::Continued);
    assert_eq!(shipper.shipped(), 0);
    assert!(log.segments().unwrap().is_empty());
}

#[test]
fn a_log_the_database_no_longer_holds_jumps_to_its_newest_write() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    db.put(b"a", b"1").unwrap();
    db.flush().unwrap();
    // Without a kept log, RocksDB removes the obsolete file (perhaps just
    // after the flush returns).
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.updates_since(0, 1).is_ok() {
        assert!(Instant::now() < deadline, "the flushed log file stayed");
        std::thread::sleep(Duration::from_millis(10));
    }
    db.put(b"b", b"2").unwrap();
    let mut shipper = shipper(&db, &log);
    assert_eq!(
        shipper.ship(&db, &log, "t1").unwrap(),
        Shipped::Jumped {
            from: 1,
            resumed_after: 2
        }
    );
    assert!(log.segments().unwrap().is_empty());
    db.put(b"c", b"3").unwrap();
    assert!(matches!(
        shipper.ship(&db, &log, "t1").unwrap(),
        Shipped::Segment {
            first: 3,
            last: 3,
            ..
        }
    ));
}

#[test]
fn a_different_segment_under_the_same_name_is_another_masters() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    db.put(b"a", b"1").unwrap();
    let mut first = shipper(&db, &log);
    let mut second = shipper(&db, &log);
    first.ship(&db, &log, "t1").unwrap();
    match second.ship(&db, &log, "t2") {
        Err(e @ Error::SegmentExists { .. }) => assert_eq!(e.kind(), "fenced"),
        other => panic!("expected the segment to be another master's, got {other:?}"),
    }
    // The same bytes again are a retry whose answer was lost, not a conflict.
    let again = log.write_segment(1, &segment(&log, 1).encode()).unwrap();
    assert_eq!(again, crate::tail::store::Committed::AlreadyThere);
}

#[test]
fn captured_writes_ship_as_the_log_holds_them_and_the_rest_comes_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let log = BackupDir::new(tmp.path().join("backups"));
    // Written before the capture began: only the write-ahead log has it.
    db.put(b"a", b"1").unwrap();
    db.capture_writes(1 << 20);
    let mut shipper = shipper(&db, &log);
    db.put(b"b", b"2").unwrap();
    // Missing from the capture: its writer may not be back yet, so the
    // first step waits; the second reads the write-ahead log.
    assert_eq!(shipper.ship(&db, &log, "t1").unwrap(), Shipped::Nothing);
    let shipped = shipper.ship(&db, &log, "t1").unwrap();
    assert!(
        matches!(
            shipped,
            Shipped::Segment {
                first: 1,
                last: 2,
                ..
            }
        ),
        "{shipped:?}"
    );

    // From the capture at once, the same batches as the log holds.
    let mut group = db.batch();
    for key in [b"c", b"d"] {
        group.put(key, b"3", None, None);
    }
    db.write(group).unwrap();
    db.put(b"e", b"4").unwrap();
    let shipped = shipper.ship(&db, &log, "t1").unwrap();
    assert!(
        matches!(
            shipped,
            Shipped::Segment {
                first: 3,
                last: 5,
                batches: 2,
                ..
            }
        ),
        "{shipped:?}"
    );
    assert_eq!(
        segment(&log, 3).batches(),
        db.updates_since(2, 10).unwrap().as_slice()
    );

    // Past its limit the capture drops the oldest, which the log supplies.
    let value = vec![9u8; 700 << 10];
    for key in [b"f", b"g", b"h"] {
        db.put(key, &value).unwrap();
    }
    assert_eq!(shipper.ship(&db, &log, "t1").unwrap(), Shipped::Nothing);
    let mut last = 0;
    while let Shipped::Segment { last: l, more, .. } = shipper.ship(&db, &log, "t1").unwrap() {
        last = l;
        if !more {
            break;
        }
    }
    assert_eq!(last, db.latest_sequence_number());
    assert_eq!(
        log.segments()
            .unwrap()
            .last()
            .map(|&first| segment(&log, first).last_seq()),
        Some(8)
    );
}
