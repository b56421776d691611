//! The follower on the live tail: writes between backups arrive through
//! the log into the served database, without a new generation; a log that
//! cannot be followed falls back to the newest backup.

use super::*;
use crate::status::DaemonStatus;
use crate::tail::ship::Shipper;
use crate::tail::store::{LogSink, LogSource};

/// The master's shipper, tagging segments as the master does.
fn shipper(s: &Setup) -> Shipper {
    let lineage = s.master.identity().expect("the master has an identity");
    Shipper::resume(&s.master, &s.store, lineage, 0).unwrap().0
}

/// Ships the master's writes, and says so in its heartbeat, as the master
/// does.
fn ship(s: &Setup, shipper: &mut Shipper) {
    shipper.ship(&s.master, &s.store, "t").unwrap();
    let heartbeat = Heartbeat {
        token: Some("t".into()),
        log_interval_ms: Some(10),
        ..super::heartbeat(
            s,
            crate::backup::now_ms(),
            s.master.latest_sequence_number(),
        )
    };
    s.store.write_heartbeat(&heartbeat).unwrap();
}

/// Sets `a` on the master and ships it.
fn write_a(s: &Setup, shipper: &mut Shipper, value: &[u8]) {
    s.master.put(b"a", value).unwrap();
    ship(s, shipper);
}

fn a(f: &Follower) -> Option<Vec<u8>> {
    get(f, b"a")
}

/// A follower of `a = 1`, backed up, that took `a = 2` from the log.
fn following(s: &Setup, shipper: &mut Shipper) -> Follower {
    s.back_up(b"a", b"1");
    let f = follower(s);
    f.poll();
    write_a(s, shipper, b"2");
    f.poll();
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]));
    f
}

/// Flips the last byte of the store's newest segment.
fn damage_newest_segment(s: &Setup) {
    let newest = *s.store.segments().unwrap().last().unwrap();
    let name = s.store.segment_name(newest);
    let mut bytes = std::fs::read(&name).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&name, &bytes).unwrap();
}

/// The follower's status: its log's, and where its data stands.
fn log_status(f: &Follower) -> (crate::status::FollowedLog, u64) {
    let DaemonStatus::Follower(status) = f.status() else {
        panic!("a follower's status")
    };
    (status.log.expect("the log is followed"), status.applied_seq)
}

#[test]
fn writes_between_backups_arrive_through_the_log_into_the_served_database() {
    let s = setup();
    let mut shipper = shipper(&s);
    s.back_up(b"a", b"1");
    let f = follower(&s);
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    let generation = f.serving().unwrap();
    assert!(generation.writable);

    s.master.put(b"a", b"2").unwrap();
    s.master.put(b"b", b"1").unwrap();
    ship(&s, &mut shipper);
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]));
    assert_eq!(get(&f, b"b").as_deref(), Some(&b"1"[..]));
    // The segment says how current the data is now: the staleness's
    // evidence between heartbeats.
    let newest = *s.store.segments().unwrap().last().unwrap();
    let segment =
        crate::tail::Segment::decode(&s.store.read_segment(newest).unwrap().unwrap()).unwrap();
    assert!(segment.ms > 0);
    assert_eq!(
        f.state().log.covered_ms,
        Some((generation.path.clone(), segment.ms))
    );
    // The same generation, the same open database: no swap.
    let now = f.serving().unwrap();
    assert!(Arc::ptr_eq(&generation.db, &now.db));
    assert_eq!(
        now.db.latest_sequence_number(),
        s.master.latest_sequence_number()
    );

    // A newer backup the log already brought the data past is not restored.
    s.back_up(b"c", b"1");
    ship(&s, &mut shipper);
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert!(Arc::ptr_eq(&generation.db, &f.serving().unwrap().db));
    assert_eq!(get(&f, b"c").as_deref(), Some(&b"1"[..]));
    let (log, applied) = log_status(&f);
    // a=2, b=1 and c=1; the backup held a=1 already.
    assert_eq!((log.batches, log.fallbacks), (3, 0));
    assert_eq!(applied, s.master.latest_sequence_number());
}

#[test]
fn a_restarted_follower_resumes_the_log_where_its_data_stands() {
    let s = setup();
    let mut shipper = shipper(&s);
    drop(following(&s, &mut shipper));
    write_a(&s, &mut shipper, b"3");
    let f = follower(&s);
    // Served at once from what it applied before; then the log goes on.
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]));
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert_eq!(a(&f).as_deref(), Some(&b"3"[..]));
}

#[test]
fn a_log_that_went_on_without_the_follower_falls_back_to_the_newest_backup() {
    let s = setup();
    let mut shipper = shipper(&s);
    let f = following(&s, &mut shipper);
    let joined = f.serving().unwrap();

    // The next segment is lost; the log goes on after it.
    write_a(&s, &mut shipper, b"3");
    let lost = shipper.shipped();
    s.store.remove_segment(lost).unwrap();
    write_a(&s, &mut shipper, b"4");
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]), "nothing crossed the gap");

    // The newest backup bridges it; the log goes on from there.
    s.back_up(b"b", b"1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Arc::ptr_eq(&joined.db, &f.serving().unwrap().db) {
        assert!(
            Instant::now() < deadline,
            "the follower never fell back to the backup"
        );
        f.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a(&f).as_deref(), Some(&b"4"[..]));
    write_a(&s, &mut shipper, b"5");
    f.poll();
    assert_eq!(a(&f).as_deref(), Some(&b"5"[..]));
    let (log, _) = log_status(&f);
    assert_eq!(log.fallbacks, 1);
    assert_eq!(log.broken, None);
}

#[test]
fn a_damaged_segment_is_reported_never_applied_and_a_backup_recovers() {
    let s = setup();
    let mut shipper = shipper(&s);
    s.back_up(b"a", b"1");
    let f = follower(&s);
    f.poll();
    write_a(&s, &mut shipper, b"2");
    damage_newest_segment(&s);
    f.poll();
    assert_eq!(a(&f).as_deref(), Some(&b"1"[..]));
    let broken = log_status(&f).0.broken.expect("the damage is reported");
    assert!(broken.contains("checksum"), "{broken}");

    s.back_up(b"b", b"1");
    f.poll();
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]));
    assert_eq!(get(&f, b"b").as_deref(), Some(&b"1"[..]));
}

/// A master of the same database whose history parted below the data (a
/// laggard promoted): the follower restores again even the backup it
/// serves, since the log took its data past where the master stands.
#[test]
fn data_the_log_took_past_a_diverged_master_is_restored_again_from_the_same_backup() {
    let s = setup();
    let mut shipper = shipper(&s);
    let f = following(&s, &mut shipper);
    let served = f.serving().unwrap();
    assert_eq!(a(&f).as_deref(), Some(&b"2"[..]));
    // Another run of the master, standing at the backup's sequence number:
    // `rkv promote`'s hand-over, which ships no log (seen all the same).
    let at_backup = served.backup.metadata.as_ref().unwrap().seq;
    let other = Heartbeat {
        token: Some("promoted".into()),
        log_interval_ms: None,
        handover: true,
        ..super::heartbeat(&s, crate::backup::now_ms(), at_backup)
    };
    s.store.write_heartbeat(&other).unwrap();
    f.poll();
    f.poll();
    assert_eq!(
        a(&f).as_deref(),
        Some(&b"1"[..]),
        "the follower still serves a write the master lost"
    );
    let now = f.serving().unwrap();
    assert_eq!(now.backup.id, served.backup.id);
    assert_ne!(now.path, served.path, "restored into a new generation");
}

/// While no backup of the diverged master's can replace the data (its
/// newest is past where it parted from the follower's), the follower says
/// it is not healthy: its data holds writes the master lost.
#[test]
fn a_diverged_follower_waiting_for_the_masters_backup_is_not_healthy() {
    let s = setup();
    let mut shipper = shipper(&s);
    let f = following(&s, &mut shipper);
    let at_backup = f.serving().unwrap().backup.metadata.as_ref().unwrap().seq;
    // The master's newest backup stands past the point it parted at.
    s.back_up(b"c", b"1");
    let other = Heartbeat {
        token: Some("promoted".into()),
        log_interval_ms: Some(10),
        ..super::heartbeat(&s, crate::backup::now_ms(), at_backup)
    };
    s.store.write_heartbeat(&other).unwrap();
    f.poll();
    assert!(
        !f.healthy(),
        "a follower serving lost writes says it is healthy"
    );
    let reason = f.unhealthy_reason();
    assert!(reason.contains("history does not"), "{reason}");
}

#[test]
fn a_wake_by_segments_steps_the_log_alone_and_a_break_asks_for_a_poll() {
    let s = setup();
    let mut shipper = shipper(&s);
    s.back_up(b"a", b"1");
    let f = follower(&s);
    // Nothing served yet: only a poll can restore.
    assert!(!f.step_log());
    f.poll();
    write_a(&s, &mut shipper, b"2");
    f.poll();
    // A segment, and no new heartbeat: the log alone brings the write.
    s.master.put(b"a", b"3").unwrap();
    shipper.ship(&s.master, &s.store, "t").unwrap();
    assert!(f.step_log());
    assert_eq!(a(&f).as_deref(), Some(&b"3"[..]));
    // A damaged segment is not applied, and asks for a poll.
    s.master.put(b"a", b"4").unwrap();
    shipper.ship(&s.master, &s.store, "t").unwrap();
    damage_newest_segment(&s);
    assert!(!f.step_log());
    assert_eq!(a(&f).as_deref(), Some(&b"3"[..]));
    // Still broken, it asks for no poll on every segment: the polls that
    // come anyway wait for the backup that mends it.
    assert!(f.step_log());
}
