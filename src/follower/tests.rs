//! The follower's unit tests: applies, swaps, crashes, damaged and
//! replaced stores, staleness, and a faulty source.

use super::*;
use crate::backup::{BackupDir, BackupSink};
use crate::db::OpenMode;
use crate::server::{Backend, Refusal};

struct Setup {
    _tmp: tempfile::TempDir,
    master: Db,
    store: BackupDir,
    data: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let master = Db::scratch_keeping_log(tmp.path());
    let store = BackupDir::new(tmp.path().join("backups"));
    let data = tmp.path().join("data");
    Setup {
        _tmp: tmp,
        master,
        store,
        data,
    }
}

impl Setup {
    /// Writes `key` on the master and backs it up; returns the backup id.
    fn back_up(&self, key: &[u8], value: &[u8]) -> u32 {
        self.master.put(key, value).unwrap();
        self.store.create(&self.master, "t").unwrap().info.id
    }
}

fn follower(s: &Setup) -> Follower {
    Follower::open(
        BackupDir::new(s.store.path()),
        DataDir::lock(&s.data).unwrap(),
        None,
        StaleReads::Serve,
        Some(BlockCache::new(8 << 20)),
    )
    .unwrap()
}

/// A follower that refuses reads staler than `max`.
fn bounded_follower(s: &Setup, max: Duration) -> Follower {
    Follower::open(
        BackupDir::new(s.store.path()),
        DataDir::lock(&s.data).unwrap(),
        Some(max),
        StaleReads::Refuse,
        None,
    )
    .unwrap()
}

fn get(f: &Follower, key: &[u8]) -> Option<Vec<u8>> {
    f.reader().ok().unwrap().get(key).unwrap()
}

#[test]
fn applies_each_new_backup_and_jumps_to_the_newest() {
    let s = setup();
    let f = follower(&s);
    assert!(
        matches!(f.poll(), PollOutcome::Failed(_)),
        "no backup dir yet"
    );
    assert!(f.reader().is_err());
    s.back_up(b"k", b"1");
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
    assert!(matches!(f.poll(), PollOutcome::UpToDate));

    // Three backups behind: one apply, straight to the newest.
    for v in [b"2", b"3", b"4"] {
        s.back_up(b"k", v);
    }
    let PollOutcome::Applied(stats) = f.poll() else {
        panic!()
    };
    assert_eq!(stats.id, 4);
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"4"[..]));
    // Only the serving generation is left on disk.
    let gens: Vec<_> = std::fs::read_dir(&s.data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .collect();
    assert_eq!(gens.len(), 1);
}

#[test]
fn a_reader_keeps_its_generation_across_a_swap() {
    let s = setup();
    let f = follower(&s);
    s.back_up(b"k", b"old");
    f.poll();
    let held = f.reader().unwrap();
    s.back_up(b"k", b"new");
    f.poll();
    f.release_retired();
    // The old handle still reads its own data; new readers see the new.
    assert_eq!(held.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"new"[..]));
    drop(held);
    f.release_retired();
    assert!(!s.data.join("gen-000001").exists());
}

#[test]
fn a_restarted_follower_serves_current_at_once() {
    let s = setup();
    {
        let f = follower(&s);
        s.back_up(b"k", b"v");
        f.poll();
    }
    // A crash left a partial behind.
    std::fs::create_dir(s.data.join("gen-000002.partial")).unwrap();
    let f = follower(&s);
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"v"[..]));
    assert!(!s.data.join("gen-000002.partial").exists());
}

#[test]
fn staleness_bound_refuses_reads_when_asked() {
    let s = setup();
    s.back_up(b"k", b"v");
    let f = bounded_follower(&s, Duration::from_millis(1));
    f.poll();
    std::thread::sleep(Duration::from_millis(5));
    assert!(!f.healthy());
    let Err(Refusal::Stale { reason }) = f.reader() else {
        panic!("stale reads must be refused")
    };
    assert!(reason.contains("max-staleness"), "{reason}");
    assert!(matches!(f.writer(), Err(Refusal::ReadOnlyReplica)));
}

fn gen_dirs(s: &Setup) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&s.data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    names.sort();
    names
}

fn heartbeat(s: &Setup, ms: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        v: 1,
        seq,
        ms,
        master: "t".into(),
        db_id: s.master.identity(),
        token: Some("token".into()),
        pid: None,
        keep_within_ms: None,
        lease_term_ms: None,
        log_interval_ms: None,
        superseded: Vec::new(),
        handover: false,
    }
}

#[test]
fn a_failed_apply_leaves_no_partial_behind() {
    let s = setup();
    let f = follower(&s);
    s.back_up(b"k", b"1");
    f.poll();
    let id = s.back_up(b"k", b"2");
    let private = s.store.path().join(format!("private/{id}"));
    let manifest = std::fs::read_dir(&private)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("MANIFEST"))
        .unwrap();
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();

    let PollOutcome::Failed(Error::BackupCorrupt { .. }) = f.poll() else {
        panic!("a corrupt backup must fail")
    };
    let message = f.state().last_error.clone().unwrap();
    // The message names the damaged file.
    assert!(message.contains("MANIFEST"), "{message}");
    assert_eq!(gen_dirs(&s), ["gen-000001"], "the partial was left behind");
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_truncated_meta_file_is_reported_not_skipped_silently() {
    let s = setup();
    let f = follower(&s);
    s.back_up(b"k", b"1");
    f.poll();
    s.back_up(b"k", b"2");
    let meta = s.store.path().join("meta/2");
    let text = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &text[..text.len() / 2]).unwrap();
    f.poll();
    let error = f.state().last_error.clone().unwrap_or_default();
    assert!(error.contains("backup 2 skipped"), "{error:?}");
    let failures = f.state().failures.clone();
    assert_eq!(failures.total(), 1);
    assert!(failures.by_kind().any(|kind| kind == ("skipped", 1)));
    // Said once, not counted again on every poll.
    f.poll();
    assert_eq!(f.state().failures.total(), 1);
}

#[test]
fn a_reader_holding_the_old_database_keeps_its_files_with_few_open_files() {
    let s = setup();
    // Many SST files, more than RocksDB may keep open.
    for i in 0..40 {
        s.master.put(format!("k{i:03}").as_bytes(), b"old").unwrap();
        s.master.flush().unwrap();
    }
    s.store.create(&s.master, "t").unwrap();
    let f = Follower::open_with(
        BackupDir::new(s.store.path()),
        DataDir::lock(&s.data).unwrap(),
        None,
        StaleReads::Serve,
        None,
        Some(10),
    )
    .unwrap();
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    let held = f.reader().unwrap();
    drop(f.serving());
    s.back_up(b"new", b"1");
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    f.release_retired();
    // Every SST of the old generation is read again by path.
    for i in 0..40 {
        let value = held.get(format!("k{i:03}").as_bytes()).unwrap();
        assert_eq!(value.as_deref(), Some(&b"old"[..]), "key {i}");
    }
    drop(held);
    f.release_retired();
    assert_eq!(gen_dirs(&s), ["gen-000002"]);
}

#[test]
fn an_unopenable_current_generation_is_kept() {
    let s = setup();
    {
        let f = follower(&s);
        s.back_up(b"k", b"v");
        f.poll();
    }
    let gen = s.data.join("gen-000001");
    std::fs::rename(gen.join("CURRENT"), gen.join("CURRENT.away")).unwrap();
    let f = follower(&s);
    assert!(f.serving().is_none());
    assert!(gen.exists(), "the only local copy was deleted");
    drop(f);
    std::fs::rename(gen.join("CURRENT.away"), gen.join("CURRENT")).unwrap();
    let f = follower(&s);
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_replaced_backup_directory_is_re_bootstrapped() {
    let s = setup();
    let f = follower(&s);
    for v in [b"1", b"2", b"3"] {
        s.back_up(b"k", v);
    }
    f.poll();
    assert_eq!(f.serving().unwrap().backup.id, 3);
    // The directory is replaced by one of a new database: ids restart.
    std::fs::remove_dir_all(s.store.path()).unwrap();
    let other = Db::open(
        &s._tmp.path().join("db2"),
        OpenMode::ReadWrite {
            create_if_missing: true,
        },
    )
    .unwrap();
    other.put(b"k", b"new").unwrap();
    s.store.create(&other, "t").unwrap();
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"new"[..]));
    assert!(f.healthy());

    // Once more, and the new ids pass the served one: the identity tells.
    std::fs::remove_dir_all(s.store.path()).unwrap();
    for v in [b"a", b"b", b"c"] {
        s.back_up(b"k", v);
    }
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"c"[..]));
    assert!(f.healthy());
}

#[test]
fn staleness_is_never_below_the_true_age_of_the_data() {
    let s = setup();
    let f = follower(&s);
    let id = s.back_up(b"k", b"v");
    let seq = s.master.latest_sequence_number();
    s.store
        .write_heartbeat(&heartbeat(&s, crate::backup::now_ms(), seq))
        .unwrap();
    assert!(matches!(f.poll(), PollOutcome::Applied(ref a) if a.id == id));
    f.poll();
    // A heartbeat (on this host's clock: no skew) read a while after it was
    // written, as when a poll comes late or after an apply: the data is at
    // least that old, and the follower must not say younger.
    let written = crate::backup::now_ms();
    s.store
        .write_heartbeat(&heartbeat(&s, written, seq))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.poll();
    let true_age = crate::backup::now_ms() - written;
    let said = f.staleness().unwrap().as_millis() as u64;
    assert!(
        said >= true_age,
        "staleness {said} ms, below the data's true age of {true_age} ms"
    );
}

#[test]
fn staleness_is_measured_on_the_followers_clock_whatever_the_masters() {
    let s = setup();
    let f = bounded_follower(&s, Duration::from_secs(3));
    s.master.put(b"k", b"v").unwrap();
    // The master's clock is two hours ahead: its backup and heartbeats
    // say so.
    let ahead = crate::backup::now_ms() + 2 * 3600 * 1000;
    s.store.create(&s.master, "t").unwrap();
    let seq = s.master.latest_sequence_number();
    s.store.write_heartbeat(&heartbeat(&s, ahead, seq)).unwrap();
    f.poll();
    assert_eq!(f.staleness(), None, "no heartbeat seen changing yet");
    assert!(!f.healthy());
    // Stamped when written, as the master does (however long the backup
    // above took on this machine).
    std::thread::sleep(Duration::from_millis(50));
    let ahead = crate::backup::now_ms() + 2 * 3600 * 1000;
    s.store.write_heartbeat(&heartbeat(&s, ahead, seq)).unwrap();
    f.poll();
    let age = f.staleness().unwrap();
    assert!(age < Duration::from_secs(1), "{age:?}");
    assert!(f.healthy());
    let skew = f.clock_skew_ms().unwrap();
    assert!((skew - 7_200_000).abs() < 1000, "skew {skew}");

    // The master stops: no new heartbeat. Its clock being ahead must not
    // keep the data looking fresh.
    std::thread::sleep(Duration::from_millis(3100));
    f.poll();
    assert!(f.staleness().unwrap() > Duration::from_secs(3));
    assert!(!f.healthy());
    assert!(f.reader().is_err());

    // Two hours behind instead, and alive: fresh data is served. (A new
    // follower: one that saw the clock ahead distrusts a clock that
    // steps back for a window of heartbeats, erring on the stale side.)
    drop(f);
    let f = bounded_follower(&s, Duration::from_secs(3));
    let behind = crate::backup::now_ms() - 2 * 3600 * 1000;
    for i in 0..2 {
        s.store
            .write_heartbeat(&heartbeat(&s, behind + i, seq))
            .unwrap();
        f.poll();
    }
    assert!(f.staleness().unwrap() < Duration::from_secs(1));
    assert!(f.reader().is_ok());
}

mod faults;
mod tail;
