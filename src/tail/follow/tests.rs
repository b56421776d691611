use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::backup::{BackupDir, BackupSink, BackupSource, RestoreMode};
use crate::db::OpenMode;
use crate::tail::ship::Shipper;
use crate::tail::store::{LogSink, LogSource};

struct Setup {
    tmp: tempfile::TempDir,
    master: Db,
    store: BackupDir,
    shipper: Shipper,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let master = Db::scratch_keeping_log(tmp.path());
    let store = BackupDir::new(tmp.path().join("backups"));
    let (shipper, _) = Shipper::resume(&master, &store, "db-1".into(), 0).unwrap();
    Setup {
        tmp,
        master,
        store,
        shipper,
    }
}

impl Setup {
    fn ship(&mut self) {
        self.shipper.ship(&self.master, &self.store, "t").unwrap();
    }

    /// The newest backup, restored and opened as a follower opens it.
    fn restore(&self, name: &str) -> Db {
        restore(&self.store, &self.tmp.path().join(name))
    }
}

fn restore(store: &BackupDir, dest: &std::path::Path) -> Db {
    store.restore(None, dest, RestoreMode::Full).unwrap();
    let mode = OpenMode::ReadWrite {
        create_if_missing: false,
    };
    Db::open(dest, mode).unwrap()
}

/// `a = 1` backed up, then `a = 2` shipped: a follower restoring the
/// backup (returned, restored) joins the log inside its one segment.
fn one_write_past_a_backup() -> (Setup, Db) {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.store.create(&s.master, "m").unwrap();
    s.master.put(b"a", b"2").unwrap();
    s.ship();
    let follower = s.restore("f");
    (s, follower)
}

/// Segments read and batches applied.
fn counts(progress: Progress) -> (u64, u64) {
    (progress.segments, progress.batches)
}

fn value(db: &Db, key: &[u8]) -> Option<String> {
    db.get(key).unwrap().map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn a_follower_joins_the_log_inside_a_segment_and_ends_where_the_master_is() {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.master.put(b"b", b"1").unwrap();
    s.store.create(&s.master, "m").unwrap();
    s.master.put(b"a", b"2").unwrap();
    // One segment holding writes before and after the backup.
    s.ship();
    assert_eq!(s.store.segments().unwrap(), [1]);

    let follower = s.restore("f");
    assert_eq!(follower.latest_sequence_number(), 2);
    let mut follow = Follow::new("db-1".into());
    let progress = follow
        .step(&follower, &s.store, 100, Join::ByListing)
        .unwrap();
    assert_eq!(counts(progress), (1, 1));
    assert_eq!(value(&follower, b"a").as_deref(), Some("2"));

    // Then segment by segment, by name.
    let mut group = s.master.batch();
    group.put(b"b", b"2", None, None);
    group.put(b"c", b"2", None, None);
    s.master.write(group).unwrap();
    s.ship();
    s.master.delete(b"a").unwrap();
    s.ship();
    let progress = follow
        .step(&follower, &s.store, 100, Join::ByListing)
        .unwrap();
    assert_eq!(counts(progress), (2, 2));
    assert_eq!(
        follower.latest_sequence_number(),
        s.master.latest_sequence_number()
    );
    assert_eq!(value(&follower, b"a"), None);
    assert_eq!(value(&follower, b"c").as_deref(), Some("2"));
    assert_eq!(
        follow
            .step(&follower, &s.store, 100, Join::ByListing)
            .unwrap(),
        Progress::default()
    );
}

/// A store that counts its listings.
struct Listings {
    log: BackupDir,
    count: std::sync::atomic::AtomicU32,
}

impl Listings {
    fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

impl LogSource for Listings {
    fn read_segment(&self, first: u64) -> crate::Result<Option<Vec<u8>>> {
        self.log.read_segment(first)
    }

    fn segments(&self) -> crate::Result<Vec<u64>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.log.segments()
    }

    fn segment_name(&self, first: u64) -> String {
        self.log.segment_name(first)
    }
}

#[test]
fn a_follower_joins_by_name_where_the_log_goes_on_from_its_data_and_lists_only_when_allowed() {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.ship();
    s.store.create(&s.master, "m").unwrap();
    let follower = s.restore("f");
    let log = Listings {
        log: BackupDir::new(s.store.path()),
        count: Default::default(),
    };
    let mut follow = Follow::new("db-1".into());
    // Nothing after the data yet: one request by name, no listing.
    let progress = follow.step(&follower, &log, 100, Join::ByName).unwrap();
    assert_eq!((progress, follow.joined()), (Progress::default(), false));
    s.master.put(b"a", b"2").unwrap();
    s.ship();
    let progress = follow.step(&follower, &log, 100, Join::ByName).unwrap();
    assert_eq!((progress.batches, follow.joined()), (1, true));
    assert_eq!(value(&follower, b"a").as_deref(), Some("2"));
    assert_eq!(log.count(), 0, "joined by name");

    // Data that ends inside a segment is joined by a listing only.
    s.master.put(b"b", b"1").unwrap();
    s.store.create(&s.master, "m").unwrap();
    s.master.put(b"b", b"2").unwrap();
    s.ship();
    let inside = s.restore("g");
    let mut follow = Follow::new("db-1".into());
    let progress = follow.step(&inside, &log, 100, Join::ByName).unwrap();
    assert_eq!((progress, log.count()), (Progress::default(), 0));
    let progress = follow.step(&inside, &log, 100, Join::ByListing).unwrap();
    assert_eq!((progress.batches, log.count()), (1, 1));
    assert_eq!(value(&inside, b"b").as_deref(), Some("2"));
}

/// The claim the whole tail rests on: a restored backup's sequence number
/// is exactly that of the writes it holds, even with writes racing the
/// backup. Each write sets `n` to its own index in its own batch, so the
/// data at sequence `seq` holds `n = seq - base`: one more or one fewer
/// would re-apply or skip a write.
#[test]
fn a_restored_backup_holds_exactly_the_writes_up_to_its_sequence_number() {
    let s = setup();
    let master = Arc::new(s.master);
    master.put(b"n", b"0").unwrap();
    let base = master.latest_sequence_number();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let master = Arc::clone(&master);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                master.put(b"n", n.to_string().as_bytes()).unwrap();
            }
            n
        })
    };
    for round in 0..5 {
        // Each backup while the writer runs, restored and checked.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while master.latest_sequence_number() < base + 200 * (round + 1) {
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            std::thread::yield_now();
        }
        s.store.create(&master, "m").unwrap();
        let restored = restore(&s.store, &s.tmp.path().join(format!("f{round}")));
        let at = restored.latest_sequence_number();
        let n: u64 = value(&restored, b"n").unwrap().parse().unwrap();
        assert_eq!(
            n,
            at - base,
            "backup {round}: the data is not the writes up to {at}"
        );
    }
    done.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written >= 1000, "only {written} writes raced the backups");
}

#[test]
fn a_damaged_segment_is_never_applied() {
    let (s, follower) = one_write_past_a_backup();
    let path = s.store.path().join("log/00000000000000000001.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let mut follow = Follow::new("db-1".into());
    match follow.step(&follower, &s.store, 100, Join::ByListing) {
        Err(Error::BadSegment {
            source: SegmentError::Checksum { .. },
            ..
        }) => {}
        other => panic!("expected a checksum failure, got {other:?}"),
    }
    assert_eq!(value(&follower, b"a").as_deref(), Some("1"));
}

#[test]
fn another_databases_segment_is_never_applied() {
    let (s, follower) = one_write_past_a_backup();
    let mut follow = Follow::new("db-2".into());
    match follow.step(&follower, &s.store, 100, Join::ByListing) {
        Err(Error::BadSegment {
            source: SegmentError::OtherDatabase { .. },
            ..
        }) => {}
        other => panic!("expected another database's segment, got {other:?}"),
    }
    assert_eq!(value(&follower, b"a").as_deref(), Some("1"));
}

#[test]
fn a_log_that_goes_on_past_the_data_without_it_is_a_gap() {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.store.create(&s.master, "m").unwrap();
    s.master.put(b"a", b"2").unwrap();
    s.master.put(b"a", b"3").unwrap();
    s.ship();
    // The segment holding write 2 is gone; the log goes on at 3.
    let segment = Segment::decode(&s.store.read_segment(1).unwrap().unwrap()).unwrap();
    let later: Vec<_> = segment.batches()[2..].to_vec();
    s.store.remove_segment(1).unwrap();
    let later = Segment::new("db-1".into(), "t".into(), later).unwrap();
    s.store.write_segment(3, &later.encode()).unwrap();

    let follower = s.restore("f");
    let mut follow = Follow::new("db-1".into());
    match follow.step(&follower, &s.store, 100, Join::ByListing) {
        Err(Error::NotNext { at: 1, batch: 3 }) => {}
        other => panic!("expected a gap after 1, got {other:?}"),
    }
    assert_eq!(value(&follower, b"a").as_deref(), Some("1"));
}

#[test]
fn a_follower_ahead_of_the_log_waits_for_it() {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.ship();
    s.master.put(b"a", b"2").unwrap();
    s.store.create(&s.master, "m").unwrap();
    let follower = s.restore("f");
    let mut follow = Follow::new("db-1".into());
    // Segment 1 is behind the data: read, nothing applied.
    assert_eq!(
        counts(
            follow
                .step(&follower, &s.store, 100, Join::ByListing)
                .unwrap()
        ),
        (1, 0)
    );
    s.master.put(b"a", b"3").unwrap();
    s.ship();
    assert_eq!(
        counts(
            follow
                .step(&follower, &s.store, 100, Join::ByListing)
                .unwrap()
        ),
        (1, 1)
    );
    assert_eq!(value(&follower, b"a").as_deref(), Some("3"));
}

#[test]
fn another_masters_segment_is_applied_only_where_its_log_begins() {
    let (s, follower) = one_write_past_a_backup();
    let mut follow = Follow::new("db-1".into());
    follow
        .step(&follower, &s.store, 100, Join::ByListing)
        .unwrap();
    assert_eq!(follow.token(), Some("t"));

    // Another master (a new lease token) whose log began before write 3:
    // its history there is not the one the follower applied.
    s.master.put(b"a", b"3").unwrap();
    let batches = s.master.updates_since(2, 10).unwrap();
    let other = Segment::new("db-1".into(), "t2".into(), batches).unwrap();
    s.store
        .write_segment(3, &other.clone().shipped_since(2).encode())
        .unwrap();
    match follow.step(&follower, &s.store, 100, Join::ByListing) {
        Err(Error::Diverged { at: 2, .. }) => {}
        other => panic!("expected a divergence at 2, got {other:?}"),
    }
    assert_eq!(value(&follower, b"a").as_deref(), Some("2"));

    // One whose log begins just after the follower's data goes on from it.
    s.store.remove_segment(3).unwrap();
    s.store.write_segment(3, &other.encode()).unwrap();
    follow
        .step(&follower, &s.store, 100, Join::ByListing)
        .unwrap();
    assert_eq!(value(&follower, b"a").as_deref(), Some("3"));
    assert_eq!(follow.token(), Some("t2"));
}

#[test]
fn a_replay_stops_at_the_last_whole_batch_at_or_before_its_point() {
    let mut s = setup();
    s.master.put(b"a", b"1").unwrap();
    s.store.create(&s.master, "m").unwrap();
    s.master.put(b"a", b"2").unwrap();
    s.ship();
    // A batch of two writes (seq 3 and 4), then one (seq 5).
    let mut group = s.master.batch();
    group.put(b"a", b"3", None, None);
    group.put(b"b", b"3", None, None);
    s.master.write(group).unwrap();
    s.ship();
    s.master.put(b"a", b"5").unwrap();
    s.ship();

    // To sequence 3: inside the batch of 3 and 4, so up to 2.
    let db = s.restore("to-3");
    let progress = Follow::new("db-1".into())
        .replay(&db, &s.store, Until::Seq(3))
        .unwrap();
    assert_eq!((db.latest_sequence_number(), progress.batches), (2, 1));
    assert_eq!(value(&db, b"a").as_deref(), Some("2"));
    let db = s.restore("to-4");
    Follow::new("db-1".into())
        .replay(&db, &s.store, Until::Seq(4))
        .unwrap();
    assert_eq!(db.latest_sequence_number(), 4);
    assert_eq!(value(&db, b"b").as_deref(), Some("3"));

    // By time: every segment cut at or before it, and none after.
    let cuts: Vec<u64> = s
        .store
        .segments()
        .unwrap()
        .into_iter()
        .map(|first| {
            Segment::decode(&s.store.read_segment(first).unwrap().unwrap())
                .unwrap()
                .ms
        })
        .collect();
    assert!(cuts.iter().all(|&ms| ms > 0), "{cuts:?}");
    let db = s.restore("to-time");
    let progress = Follow::new("db-1".into())
        .replay(&db, &s.store, Until::Time(cuts[1]))
        .unwrap();
    assert_eq!(progress.last_ms, Some(cuts[1]));
    // The third segment was cut in the same millisecond or later: it is
    // applied only if cut at or before the point too.
    let expected = if cuts[2] <= cuts[1] { 5 } else { 4 };
    assert_eq!(db.latest_sequence_number(), expected);
    let db = s.restore("before-all");
    Follow::new("db-1".into())
        .replay(&db, &s.store, Until::Time(cuts[0] - 1))
        .unwrap();
    assert_eq!(db.latest_sequence_number(), 1);
}
