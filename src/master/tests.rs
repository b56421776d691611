//! The master's unit tests: when it backs up, what a restart knows, and
//! failed backups.

use super::*;
use crate::backup::s3::cut::Cut;
use crate::backup::s3::{Bucket, S3Config};
use crate::backup::{BackupDir, Heartbeat, S3Publisher};
use crate::server::Backend;
use crate::tail::ship::Shipped;

fn master(dir: &Path) -> Master {
    master_on(dir, BackupDir::new(dir.join("backups")))
}

/// A master of the database in `dir` on `store`, keeping two backups.
fn master_on(dir: &Path, store: impl BackupSink + 'static) -> Master {
    let retention = Retention {
        keep: 2,
        keep_within: Duration::ZERO,
    };
    Master::open(&dir.join("db"), store, retention, false, None, None).unwrap()
}

#[test]
fn backs_up_only_when_the_database_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = master(tmp.path());
    assert!(matches!(m.backup_step(), StepOutcome::Unchanged));
    m.db().put(b"k", b"v").unwrap();
    let StepOutcome::Created(stats) = m.backup_step() else {
        panic!("expected a backup")
    };
    assert_eq!(
        stats.info.metadata.unwrap().seq,
        m.db().latest_sequence_number()
    );
    assert!(matches!(m.backup_step(), StepOutcome::Unchanged));
    for i in 0..3 {
        m.db().put(format!("k{i}").as_bytes(), b"v").unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    }
    // Retention keeps two.
    assert_eq!(m.store.list().unwrap().len(), 2);
}

#[test]
fn a_restarted_master_knows_what_is_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let m = master(tmp.path());
        m.db().put(b"k", b"v").unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    }
    let m = master(tmp.path());
    assert!(!m.has_unbacked_changes());
    assert!(m.lastsave() > 0);
}

#[test]
fn a_failed_backup_is_counted_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    // The backup dir path is a regular file: every backup fails.
    std::fs::write(tmp.path().join("backups"), b"").unwrap();
    let retention = Retention {
        keep: 2,
        keep_within: Duration::ZERO,
    };
    let m = Master::open(
        &tmp.path().join("db"),
        BackupDir::new(tmp.path().join("backups")),
        retention,
        false,
        None,
        None,
    );
    let m = match m {
        Ok(m) => m,
        Err(e) => panic!("open must not need a usable backup dir: {e}"),
    };
    m.db().put(b"k", b"v").unwrap();
    assert!(matches!(m.backup_step(), StepOutcome::Failed(_)));
    assert!(matches!(m.backup_step(), StepOutcome::Failed(_)));
    assert_eq!(m.state().failed.total(), 2);
    assert!(m.has_unbacked_changes());
    std::fs::remove_file(tmp.path().join("backups")).unwrap();
    assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
}

/// A master on an object store (in memory, through the real publisher)
/// that the test can cut it off from, and a second client of the store, as
/// another host has.
fn master_on_a_store(dir: &Path) -> (Master, Arc<Cut>, Bucket) {
    let cut = Cut::in_memory();
    let bucket = Bucket::cuttable(S3Config::in_memory("b", "p"), Arc::clone(&cut)).unwrap();
    let other = bucket.clone_client().unwrap();
    let store = S3Publisher::on(bucket, BackupDir::new(dir.join("staging")), false).unwrap();
    (master_on(dir, store), cut, other)
}

#[test]
fn a_store_that_refuses_this_masters_writes_fences_it_everywhere() {
    for refused_by in ["heartbeat", "backup"] {
        let tmp = tempfile::tempdir().unwrap();
        let (m, _, other) = master_on_a_store(tmp.path());
        m.claim(false, Duration::from_secs(10)).unwrap();
        m.db().put(b"k", b"v").unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
        assert!(m.writer().is_ok());

        // Another master takes the store over: its heartbeat, its token.
        let other_staging = BackupDir::new(tmp.path().join("other-staging"));
        let other = S3Publisher::on(other, other_staging, false).unwrap();
        let theirs = Heartbeat {
            v: 1,
            seq: 1,
            ms: backup::now_ms(),
            master: "other:/db".into(),
            token: Some("theirs".into()),
            pid: Some(7),
            ..Heartbeat::default()
        };
        other.write_heartbeat(&theirs).unwrap();
        m.db().put(b"k", b"w").unwrap();
        match refused_by {
            "heartbeat" => {
                m.heartbeat();
            }
            _ => assert!(matches!(m.backup_step(), StepOutcome::Failed(_))),
        }
        // Writes refused, and every report says who holds the directory.
        let Err(crate::server::Refusal::Fenced { by }) = m.writer() else {
            panic!("{refused_by}: a fenced master took a write")
        };
        assert!(by.contains("other:/db"), "{refused_by}: {by}");
        let crate::status::DaemonStatus::Master(status) = m.status() else {
            panic!()
        };
        assert!(
            status
                .fenced_by
                .as_deref()
                .is_some_and(|b| b.contains("other:/db")),
            "{refused_by}: {status:?}"
        );
        assert!(m.status_line().starts_with("FENCED"), "{}", m.status_line());
    }
}

#[test]
fn a_master_cut_off_from_the_store_past_its_term_refuses_writes_until_it_renews() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, store, _) = master_on_a_store(tmp.path());
    let term = Duration::from_millis(300);
    m.claim(false, term).unwrap();
    assert!(m.writer().is_ok(), "the first heartbeat landed");
    assert_eq!(
        m.store.read_heartbeat().and_then(|h| h.lease_term_ms),
        Some(300),
        "the heartbeat carries the term, for a promotion to wait out"
    );

    store.cut();
    let cut_at = Instant::now();
    // Heartbeats fail from now on; writes go on within the term, and stop
    // once it has passed since the last renewal.
    let refused = loop {
        m.heartbeat();
        match m.writer() {
            Ok(_) => assert!(
                cut_at.elapsed() < Duration::from_secs(120),
                "writes still taken long after the term: {:?}",
                m.lease_expired()
            ),
            Err(refusal) => break refusal,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let crate::server::Refusal::LeaseExpired { since, term: said } = refused else {
        panic!("refused for another reason: {refused:?}")
    };
    assert!(since > term && said == term, "{since:?} {said:?}");
    let crate::status::DaemonStatus::Master(status) = m.status() else {
        panic!()
    };
    assert!(status.lease_expired && status.lease_term == Some(term));
    assert!(crate::metrics::health(&m.status()).is_err());
    assert!(
        m.status_line().starts_with("READ-ONLY"),
        "{}",
        m.status_line()
    );

    // Back in touch: the next heartbeat renews, writes are taken again.
    store.mend();
    m.heartbeat();
    assert!(m.writer().is_ok(), "{:?}", m.lease_expired());
    assert!(crate::metrics::health(&m.status()).is_ok());
}

#[test]
fn the_log_ships_what_no_backup_holds_and_a_master_without_it_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = Stop::new();
    {
        let m = Arc::new(master(tmp.path()));
        m.db().put(b"a", b"1").unwrap();
        // A long interval: the steps below are the test's own.
        let thread = m.start_log(Duration::from_secs(3600), 0.0, &stop).unwrap();
        m.db().put(b"b", b"2").unwrap();
        // `a`, written before the log began, was not captured: the first
        // step waits for it, the second reads it from the write-ahead log.
        assert_eq!(m.ship_step(), Some(Shipped::Nothing));
        let shipped = m.ship_step();
        assert!(
            matches!(
                shipped,
                Some(crate::tail::ship::Shipped::Segment {
                    first: 1,
                    last: 2,
                    ..
                })
            ),
            "{shipped:?}"
        );
        let log = m.log_status().expect("the log is on");
        assert_eq!(
            (log.stats.shipped, log.stats.segments, log.error),
            (2, 1, None)
        );
        stop.stop();
        thread.expect("a directory keeps a log").join().unwrap();
    }
    let log = BackupDir::new(tmp.path().join("backups"));
    assert_eq!(crate::tail::store::LogSource::segments(&log).unwrap(), [1]);
    // Started again with the log off: the old log would keep followers
    // waiting on segments that no longer come.
    master(tmp.path()).remove_log().unwrap();
    assert!(crate::tail::store::LogSource::segments(&log)
        .unwrap()
        .is_empty());
}

#[test]
fn a_segment_a_fenced_master_left_where_the_log_goes_on_is_removed_by_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = Stop::new();
    let m = Arc::new(master(tmp.path()));
    m.claim(false, Duration::from_secs(10)).unwrap();
    // Stopped at once, after its last step: the steps below are the test's.
    stop.stop();
    let thread = m.start_log(Duration::from_secs(3600), 0.0, &stop).unwrap();
    thread.unwrap().join().unwrap();
    m.db().put(b"a", b"1").unwrap();
    let log = BackupDir::new(tmp.path().join("backups"));
    // What a master fenced off the store shipped before it knew.
    let stray = crate::tail::Segment::new(
        "another".into(),
        "fenced-token".into(),
        vec![crate::tail::Batch::from_data({
            let other = crate::db::Db::scratch(&tmp.path().join("other"));
            other.put(b"x", b"1").unwrap();
            other.updates_since(0, 1).unwrap().remove(0).data().to_vec()
        })
        .unwrap()],
    )
    .unwrap();
    crate::tail::store::LogSink::write_segment(&log, 1, &stray.encode()).unwrap();
    assert_eq!(m.ship_step(), None, "refused: a segment is there");
    let error = m.log_status().unwrap().error.unwrap_or_default();
    assert!(error.contains("another master"), "{error}");
    assert!(m.store.fence().by().is_none(), "the owner is not fenced");
    assert!(matches!(
        m.ship_step(),
        Some(crate::tail::ship::Shipped::Segment { first: 1, .. })
    ));
    let shipped = crate::tail::Segment::decode(
        &crate::tail::store::LogSource::read_segment(&log, 1)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(Some(shipped.token), m.token());
}

#[test]
fn a_log_grown_past_its_share_of_the_database_makes_the_loop_back_up() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = Stop::new();
    let m = Arc::new(master(tmp.path()));
    m.db().put(b"small", b"1").unwrap();
    assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    // The loop: no timer; the shipper's steps below are the test's own.
    let backup_loop = m.start_loop(Duration::ZERO, Duration::ZERO, &stop);
    let log_stop = Stop::new();
    log_stop.stop();
    let log_thread = m
        .start_log(Duration::from_secs(3600), 0.5, &log_stop)
        .unwrap();
    log_thread.unwrap().join().unwrap();
    let ship_all = || while let Some(Shipped::Segment { more: true, .. }) = m.ship_step() {};
    // Under the floor: the log may outgrow a tiny database, but no backup
    // is taken for less than 4 MiB of it.
    let value = vec![7u8; 64 << 10];
    for i in 0..16 {
        m.db().put(format!("k{i}").as_bytes(), &value).unwrap();
    }
    ship_all();
    assert!(!m.state().log_due);
    assert_eq!(m.store.list().unwrap().len(), 1);
    // Past it, and past half the database's (flushed) size: due, and taken.
    for i in 16..80 {
        m.db().put(format!("k{i}").as_bytes(), &value).unwrap();
    }
    ship_all();
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.store.list().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no backup after the log outgrew the database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let newest = m.store.list().unwrap().pop().unwrap();
    assert_eq!(
        newest.metadata.unwrap().seq,
        m.db().latest_sequence_number()
    );
    // The new backup holds that log: a little more is not due.
    m.db().put(b"after", b"1").unwrap();
    ship_all();
    assert!(!m.state().log_due);
    stop.stop();
    backup_loop.join().unwrap();
}

#[test]
fn the_log_younger_than_keep_within_outlives_the_backups_before_it() {
    // A follower a moment behind must not lose the segments it is about to
    // apply because a backup was just taken past them.
    let tmp = tempfile::tempdir().unwrap();
    let retention = Retention {
        keep: 1,
        keep_within: Duration::from_secs(2),
    };
    let store = BackupDir::new(tmp.path().join("backups"));
    let m = Arc::new(
        Master::open(&tmp.path().join("db"), store, retention, false, None, None).unwrap(),
    );
    let stop = Stop::new();
    stop.stop();
    let thread = m.start_log(Duration::from_secs(3600), 0.0, &stop).unwrap();
    thread.unwrap().join().unwrap();
    let write = |key: &[u8]| {
        m.db().put(key, b"1").unwrap();
        while !matches!(m.ship_step(), Some(Shipped::Segment { .. })) {}
    };
    write(b"a");
    assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    // The shipper marks how far it stands at most once a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(m.ship_step(), Some(Shipped::Nothing));
    std::thread::sleep(Duration::from_millis(2100));
    write(b"b");
    write(b"c");
    // Backup 1 is past --keep-within and goes; of the log, only what is
    // both before the kept backup and older than --keep-within.
    assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
    assert_eq!(m.store.list().unwrap().len(), 1);
    let log = BackupDir::new(tmp.path().join("backups"));
    assert_eq!(
        crate::tail::store::LogSource::segments(&log).unwrap(),
        [2, 3],
        "the young segments stay though the kept backup holds them"
    );
}
