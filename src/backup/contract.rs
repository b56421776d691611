//! The contract of [`BackupSource`] and [`BackupSink`], as one suite run
//! against every store, in-process: a directory ([`BackupDir`]), and an
//! object store ([`S3Publisher`] and [`S3Reader`]) on `object_store`'s in-memory store, which
//! honours the same conditional writes as S3 (the moto tests in `tests/`
//! keep the real HTTP path). What a caller may rely on, whichever store it
//! was given.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::s3::client::Mode;
use super::s3::{Bucket, S3Config};
use super::{
    BackupDir, BackupSink, BackupSource, Heartbeat, MasterLock, RestoreMode, Retention,
    S3Publisher, S3Reader,
};
use crate::db::{Db, OpenMode};
use crate::error::Error;
use crate::tail::follow::{Follow, Join};
use crate::tail::ship::Shipper;
use crate::tail::store::{purge_before, segment_object, Committed, MAX_SEGMENT_BYTES};
use crate::tail::{Segment, SegmentError};

/// Opens a reader of the store, caching in the given directory.
type OpenReader = Box<dyn Fn(&Path) -> Box<dyn BackupSource>>;
/// Opens a second master on the store, staging in the given directory.
type OpenSecond = Box<dyn Fn(&Path) -> crate::Result<Box<dyn BackupSink>>>;
/// Deletes a file from the store, behind the master's back.
type Lose = Box<dyn Fn(&str)>;
/// Writes a file into the store, behind the master's back.
type Plant = Box<dyn Fn(&str, &[u8])>;

/// A store under test: a master's sink on it and a database to back up,
/// and a reader of the same store, as a follower opens it.
struct Fixture {
    kind: &'static str,
    /// A master holds the directory's lock for its lifetime.
    _lock: MasterLock,
    tmp: tempfile::TempDir,
    db: Db,
    sink: Box<dyn BackupSink>,
    reader: OpenReader,
    /// A second master on the same store, as another host would open it.
    second: OpenSecond,
    lose: Lose,
    plant: Plant,
}

fn directory() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("backups");
    let sink = BackupDir::new(&path);
    let lock = sink.lock_for_master().unwrap();
    let (reader_path, second_path, lose_path, plant_path) =
        (path.clone(), path.clone(), path.clone(), path.clone());
    Fixture {
        kind: "directory",
        _lock: lock,
        db: Db::scratch(tmp.path()),
        tmp,
        sink: Box::new(sink),
        reader: Box::new(move |_| Box::new(BackupDir::new(&reader_path))),
        second: Box::new(move |_| {
            let second = BackupDir::new(&second_path);
            second.lock_for_master()?;
            Ok(Box::new(second) as Box<dyn BackupSink>)
        }),
        lose: Box::new(move |name| std::fs::remove_file(lose_path.join(name)).unwrap()),
        plant: Box::new(move |name, bytes| {
            let path = plant_path.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }),
    }
}

fn object_store() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory(S3Config::in_memory("contract", "prod")).unwrap();
    let (for_reader, for_second, for_loss, for_plant) = (
        bucket.clone_client().unwrap(),
        bucket.clone_client().unwrap(),
        bucket.clone_client().unwrap(),
        bucket.clone_client().unwrap(),
    );
    let sink = S3Publisher::on(bucket, BackupDir::new(tmp.path().join("staging")), false).unwrap();
    let for_reader = std::sync::Mutex::new(Some(for_reader));
    let for_second = std::sync::Mutex::new(Some(for_second));
    Fixture {
        kind: "object store",
        _lock: MasterLock::none(),
        db: Db::scratch(tmp.path()),
        tmp,
        sink: Box::new(sink),
        reader: Box::new(move |cache| {
            let bucket = for_reader
                .lock()
                .unwrap()
                .take()
                .expect("one reader a test");
            Box::new(S3Reader::on(bucket, BackupDir::new(cache)))
        }),
        second: Box::new(move |staging| {
            let bucket = for_second
                .lock()
                .unwrap()
                .take()
                .expect("one second master");
            Ok(
                Box::new(S3Publisher::on(bucket, BackupDir::new(staging), false)?)
                    as Box<dyn BackupSink>,
            )
        }),
        lose: Box::new(move |name| for_loss.delete(name).unwrap()),
        plant: Box::new(move |name, bytes| {
            let body = bytes::Bytes::copy_from_slice(bytes);
            for_plant.put(name, body, Mode::Overwrite).unwrap();
        }),
    }
}

/// Runs `test` against every store.
fn each(test: impl Fn(Fixture)) {
    test(directory());
    test(object_store());
}

/// `n` keys of 1 KiB that do not compress, flushed into SST files by the
/// backup.
fn fill(db: &Db, n: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        db.put(format!("fill:{i:06}").as_bytes(), &value).unwrap();
    }
}

fn heartbeat(master: &str, token: &str, ms: u64) -> Heartbeat {
    Heartbeat {
        v: 1,
        seq: 1,
        ms,
        master: master.into(),
        token: Some(token.into()),
        lease_term_ms: Some(10_000),
        ..Heartbeat::default()
    }
}

#[test]
fn a_store_with_no_backup_names_none() {
    each(|f| {
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        match reader.newest_id() {
            Ok(None) | Err(Error::BackupDirMissing { .. }) => {}
            other => panic!("{}: {other:?}", f.kind),
        }
        assert!(!reader.contains(1).unwrap(), "{}", f.kind);
    });
}

#[test]
fn a_backup_created_is_listed_described_and_newest_for_a_reader() {
    each(|f| {
        f.db.put(b"k", b"v1").unwrap();
        let first = f.sink.create(&f.db, "h:/db").unwrap();
        f.db.put(b"k", b"v2").unwrap();
        let second = f.sink.create(&f.db, "h:/db").unwrap();
        assert!(second.info.id > first.info.id, "{}", f.kind);
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        assert_eq!(
            reader.newest_id().unwrap(),
            Some(second.info.id),
            "{}",
            f.kind
        );
        let listed: Vec<u32> = reader.list().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(listed, [first.info.id, second.info.id], "{}", f.kind);
        let described = reader.describe(second.info.id).unwrap();
        let meta = described.metadata.expect("rkv's metadata");
        assert_eq!(meta.seq, f.db.latest_sequence_number(), "{}", f.kind);
        assert_eq!(meta.master, "h:/db", "{}", f.kind);
        assert!(reader.contains(second.info.id).unwrap(), "{}", f.kind);
        assert!(
            matches!(
                reader.describe(99),
                Err(Error::BackupNotFound { id: 99, .. })
            ),
            "{}",
            f.kind
        );
    });
}

#[test]
fn a_reader_restores_what_the_master_backed_up_and_verifies_it() {
    each(|f| {
        f.db.put(b"k", b"v").unwrap();
        let made = f.sink.create(&f.db, "h:/db").unwrap();
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let dest = f.tmp.path().join("restored");
        let restored = reader.restore(None, &dest, RestoreMode::Full).unwrap();
        assert_eq!(restored.id, made.info.id, "{}", f.kind);
        let db = Db::open(&dest, OpenMode::ReadOnly).unwrap();
        assert_eq!(
            db.get(b"k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "{}",
            f.kind
        );
        reader
            .verify(made.info.id, &crate::progress::Meter::default())
            .unwrap();
        assert_eq!(
            reader.find_damage(made.info.id).unwrap(),
            None,
            "{}",
            f.kind
        );
    });
}

#[test]
fn an_unchanged_database_shares_its_files_with_the_backup_before() {
    each(|f| {
        fill(&f.db, 2000);
        let first = f.sink.create(&f.db, "h:/db").unwrap();
        f.db.put(b"small", b"change").unwrap();
        let second = f.sink.create(&f.db, "h:/db").unwrap();
        assert!(
            second.bytes_copied < first.bytes_copied / 4,
            "{}: {} bytes copied after {}",
            f.kind,
            second.bytes_copied,
            first.bytes_copied
        );
    });
}

#[test]
fn retention_purges_the_oldest_and_never_the_newest() {
    each(|f| {
        let mut ids = Vec::new();
        for i in 0..3 {
            f.db.put(b"k", format!("v{i}").as_bytes()).unwrap();
            ids.push(f.sink.create(&f.db, "h:/db").unwrap().info.id);
        }
        let keep_one = Retention {
            keep: 1,
            keep_within: Duration::ZERO,
        };
        let purged = f.sink.purge(&keep_one, SystemTime::now()).unwrap();
        assert_eq!(purged, ids[..2], "{}", f.kind);
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let listed: Vec<u32> = reader.list().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(listed, [ids[2]], "{}", f.kind);
        assert!(!reader.contains(ids[0]).unwrap(), "{}", f.kind);
        // What is left still restores whole.
        let dest = f.tmp.path().join("restored");
        reader.restore(None, &dest, RestoreMode::Full).unwrap();
    });
}

#[test]
fn a_heartbeat_written_is_what_a_reader_reads() {
    each(|f| {
        f.db.put(b"k", b"v").unwrap();
        f.sink.create(&f.db, "h:/db").unwrap();
        let beat = heartbeat("h:/db", "run-1", 42);
        f.sink.write_heartbeat(&beat).unwrap();
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        assert_eq!(reader.read_heartbeat(), Some(beat), "{}", f.kind);
    });
}

#[test]
fn a_second_master_is_refused_or_fences_the_first() {
    each(|f| {
        f.db.put(b"k", b"v").unwrap();
        f.sink.create(&f.db, "h:/a").unwrap();
        f.sink
            .write_heartbeat(&heartbeat("h:/a", "run-a", 1))
            .unwrap();
        match (f.second)(&f.tmp.path().join("staging-b")) {
            // A directory: the lock refuses the second at once.
            Err(Error::BackupDirLocked { .. }) => assert_eq!(f.kind, "directory"),
            // An object store: the second's write of `latest` wins the
            // race, and the first, writing next, finds itself fenced.
            Ok(second) => {
                assert_eq!(f.kind, "object store", "a second master was let in");
                second
                    .write_heartbeat(&heartbeat("h:/b", "run-b", 2))
                    .unwrap();
                let err = f
                    .sink
                    .write_heartbeat(&heartbeat("h:/a", "run-a", 3))
                    .unwrap_err();
                assert!(
                    matches!(&err, Error::Fenced { by } if by.contains("h:/b")),
                    "{}: {err}",
                    f.kind
                );
                f.db.put(b"k", b"w").unwrap();
                assert!(
                    matches!(f.sink.create(&f.db, "h:/a"), Err(Error::Fenced { .. })),
                    "{}: a fenced master published",
                    f.kind
                );
            }
            Err(e) => panic!("{}: {e}", f.kind),
        }
    });
}

#[test]
fn a_file_the_store_lost_is_written_again_by_the_next_backup_cycle() {
    each(|f| {
        fill(&f.db, 500);
        let first = f.sink.create(&f.db, "h:/db").unwrap();
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let files = reader.files(&[first.info.id]).unwrap();
        let lost = files
            .keys()
            .find(|name| name.starts_with("shared"))
            .expect("a shared table file");
        (f.lose)(lost);
        // The master's cycle, as its backup step runs it: back up (again,
        // without the damaged file, if the store says one is), then purge.
        f.db.put(b"after", b"loss").unwrap();
        let created = match f.sink.create(&f.db, "h:/db") {
            Err(Error::DamagedFile { path, detail }) => {
                let damage = super::Damage {
                    path,
                    detail,
                    backups: Vec::new(),
                };
                f.sink.remove_damaged(&[damage]).unwrap();
                f.sink.create(&f.db, "h:/db").unwrap()
            }
            other => other.unwrap(),
        };
        let keep_all = Retention {
            keep: 10,
            keep_within: Duration::ZERO,
        };
        f.sink.purge(&keep_all, SystemTime::now()).unwrap();
        let dest = f.tmp.path().join("restored");
        let restored = reader.restore(None, &dest, RestoreMode::Full).unwrap();
        assert_eq!(restored.id, created.info.id, "{}", f.kind);
        let db = Db::open(&dest, OpenMode::ReadOnly).unwrap();
        assert!(db.get(b"fill:000000").unwrap().is_some(), "{}", f.kind);
        assert_eq!(
            db.get(b"after").unwrap().as_deref(),
            Some(&b"loss"[..]),
            "{}",
            f.kind
        );
    });
}

#[test]
fn the_log_a_master_ships_brings_a_readers_restored_backup_to_the_masters_state() {
    each(|f| {
        let sink = f.sink.log_sink().expect("the store keeps a log");
        let (mut shipper, _) = Shipper::resume(&f.db, sink, "db-1".into(), 0).unwrap();
        f.db.put(b"k", b"1").unwrap();
        shipper.ship(&f.db, sink, "t").unwrap();
        f.sink.create(&f.db, "h:/db").unwrap();
        for i in 2..5 {
            f.db.put(b"k", format!("{i}").as_bytes()).unwrap();
            f.db.put(format!("key{i}").as_bytes(), b"x").unwrap();
            shipper.ship(&f.db, sink, "t").unwrap();
        }
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let log = reader.log().expect("a reader of the store reads its log");
        assert_eq!(log.segments().unwrap(), [1, 2, 4, 6], "{}", f.kind);
        let segment = Segment::decode(&log.read_segment(4).unwrap().unwrap()).unwrap();
        assert_eq!((segment.first_seq(), segment.last_seq()), (4, 5));
        assert_eq!(log.read_segment(8).unwrap(), None, "{}", f.kind);

        let dest = f.tmp.path().join("restored");
        reader.restore(None, &dest, RestoreMode::Full).unwrap();
        let mode = OpenMode::ReadWrite {
            create_if_missing: false,
        };
        let follower = Db::open(&dest, mode).unwrap();
        assert_eq!(follower.latest_sequence_number(), 1, "{}", f.kind);
        let progress = Follow::new("db-1".into())
            .step(&follower, log, 100, Join::ByListing)
            .unwrap();
        assert_eq!(progress.batches, 6, "{}", f.kind);
        assert_eq!(
            follower.latest_sequence_number(),
            f.db.latest_sequence_number()
        );
        assert_eq!(follower.get(b"k").unwrap().as_deref(), Some(&b"4"[..]));
    });
}

#[test]
fn a_segment_is_committed_once_and_never_replaced() {
    each(|f| {
        let sink = f.sink.log_sink().expect("the store keeps a log");
        assert_eq!(sink.write_segment(5, b"first").unwrap(), Committed::New);
        // A retry whose reply was lost.
        assert_eq!(
            sink.write_segment(5, b"first").unwrap(),
            Committed::AlreadyThere,
            "{}",
            f.kind
        );
        let err = sink.write_segment(5, b"other").unwrap_err();
        assert!(
            matches!(err, Error::SegmentExists { .. }),
            "{}: {err}",
            f.kind
        );
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let log = reader.log().unwrap();
        assert_eq!(log.read_segment(5).unwrap().as_deref(), Some(&b"first"[..]));

        f.sink.fence().set("h:/other");
        let err = sink.write_segment(9, b"late").unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{}: {err}", f.kind);
        assert_eq!(
            log.segments().unwrap(),
            [5],
            "{}: a fenced master shipped",
            f.kind
        );
    });
}

#[test]
fn a_segment_too_large_is_refused_without_being_read_whole() {
    each(|f| {
        (f.plant)(&segment_object(1), &vec![0; MAX_SEGMENT_BYTES as usize + 1]);
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        let err = reader.log().unwrap().read_segment(1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadSegment {
                    source: SegmentError::TooLarge(_),
                    ..
                }
            ),
            "{}: {err}",
            f.kind
        );
    });
}

#[test]
fn the_log_keeps_what_the_oldest_backup_needs_and_the_newest_segment() {
    each(|f| {
        let sink = f.sink.log_sink().unwrap();
        for first in [1, 4, 9] {
            sink.write_segment(first, format!("{first}").as_bytes())
                .unwrap();
        }
        // A follower restoring a backup of 5 needs the segment from 4 on.
        assert_eq!(purge_before(sink, 5).unwrap(), 1, "{}", f.kind);
        let reader = (f.reader)(&f.tmp.path().join("cache"));
        assert_eq!(reader.log().unwrap().segments().unwrap(), [4, 9]);
        assert_eq!(purge_before(sink, 100).unwrap(), 1, "{}", f.kind);
        assert_eq!(sink.segments().unwrap(), [9], "{}", f.kind);
        sink.remove_segment(9).unwrap();
        sink.remove_segment(9).unwrap();
        assert!(sink.segments().unwrap().is_empty(), "{}", f.kind);
    });
}
