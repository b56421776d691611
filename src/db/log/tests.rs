use super::*;
use crate::tail::Segment;

#[test]
fn the_log_gives_each_write_batch_whole_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    db.put(b"a", b"1").unwrap();
    let mut group = db.batch();
    for key in [b"b", b"c", b"d"] {
        group.put(key, b"2", None, None);
    }
    db.write(group).unwrap();
    db.put(b"e", b"3").unwrap();
    let latest = db.latest_sequence_number();

    let batches = db.updates_since(0, 100).unwrap();
    let ranges: Vec<_> = batches.iter().map(|b| b.seqs()).collect();
    assert_eq!(ranges, [1..=1, 2..=4, 5..=5]);
    assert_eq!(*ranges[2].end(), latest);
    // They make a segment: contiguous, nothing missing.
    let segment = Segment::new("db".into(), "t".into(), batches).unwrap();
    assert_eq!((segment.first_seq(), segment.last_seq()), (1, latest));

    // From a batch's end, the next batch; up to a limit; nothing past the end.
    let next = db.updates_since(1, 1).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seqs(), 2..=4);
    assert!(db.updates_since(latest, 100).unwrap().is_empty());
}

#[test]
fn a_point_inside_a_batch_is_a_gap_never_half_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    let mut group = db.batch();
    for key in [b"a", b"b", b"c"] {
        group.put(key, b"1", None, None);
    }
    db.write(group).unwrap();
    db.put(b"d", b"2").unwrap();
    match db.updates_since(2, 100) {
        Err(Error::LogGap { wanted: 3, found }) => assert_eq!(found, Some(4)),
        other => panic!("expected a gap at 3, got {other:?}"),
    }
}

#[test]
fn writes_whose_log_files_were_removed_are_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::scratch(tmp.path());
    db.put(b"a", b"1").unwrap();
    let logs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(tmp.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect()
    };
    let before = logs();
    assert!(!before.is_empty(), "no write-ahead log file");
    // A flush makes the log file holding write 1 obsolete; without a TTL,
    // RocksDB removes it (perhaps just after the flush returns).
    db.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while before.iter().any(|p| p.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the obsolete log files {before:?} were never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    db.put(b"b", b"2").unwrap();
    match db.updates_since(0, 100) {
        Err(e @ Error::LogGap { wanted: 1, .. }) => assert!(e.hint().is_some()),
        other => panic!("expected a gap at 1, got {other:?}"),
    }
    // What the log still holds is still given.
    assert_eq!(db.updates_since(1, 100).unwrap()[0].seqs(), 2..=2);
}
