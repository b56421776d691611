//! The follower against a store that fails: restores that fail, requests
//! that hang, backups purged mid-restore, a store that goes away.

use super::*;
use crate::backup::BackupLocation;

/// A source with faults on demand, around a real directory: its restore
/// fails, or the backup is purged between the list and the restore, or
/// the whole store goes away, or `contains` (`newest_id`) hangs, as a
/// request to a hung store, while a test holds `hang` (`hang_newest`).
struct FaultySource {
    inner: BackupDir,
    fail_restore: std::sync::atomic::AtomicBool,
    purge_on_restore: std::sync::atomic::AtomicBool,
    purged: Mutex<Vec<u32>>,
    gone: std::sync::atomic::AtomicBool,
    hang: Mutex<()>,
    asked: std::sync::atomic::AtomicBool,
    hang_newest: Mutex<()>,
}

impl FaultySource {
    fn new(inner: BackupDir) -> Arc<FaultySource> {
        Arc::new(FaultySource {
            inner,
            fail_restore: Default::default(),
            purge_on_restore: Default::default(),
            purged: Mutex::new(Vec::new()),
            gone: Default::default(),
            hang: Mutex::new(()),
            asked: Default::default(),
            hang_newest: Mutex::new(()),
        })
    }

    fn set(flag: &std::sync::atomic::AtomicBool, on: bool) {
        flag.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn missing(&self) -> Error {
        Error::BackupDirMissing {
            location: self.inner.location(),
        }
    }
}

impl BackupSource for Arc<FaultySource> {
    fn location(&self) -> BackupLocation {
        self.inner.location()
    }
    fn list(&self) -> Result<Vec<BackupInfo>> {
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.missing());
        }
        let purged = self.purged.lock().unwrap().clone();
        Ok(self
            .inner
            .list()?
            .into_iter()
            .filter(|b| !purged.contains(&b.id))
            .collect())
    }
    fn newest_id(&self) -> Result<Option<u32>> {
        drop(self.hang_newest.lock().unwrap());
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.missing());
        }
        self.inner.newest_id()
    }
    fn contains(&self, id: u32) -> Result<bool> {
        FaultySource::set(&self.asked, true);
        drop(self.hang.lock().unwrap());
        Ok(!self.purged.lock().unwrap().contains(&id) && self.inner.contains(id)?)
    }
    fn files(&self, ids: &[u32]) -> Result<std::collections::BTreeMap<String, u64>> {
        self.inner.files(ids)
    }
    fn verify(&self, id: u32, meter: &crate::progress::Meter) -> Result<()> {
        self.inner.verify(id, meter)
    }
    fn find_damage(&self, id: u32) -> Result<Option<String>> {
        self.inner.find_damage(id)
    }
    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.fail_restore.load(SeqCst) {
            return Err(Error::io(
                "restore",
                std::io::Error::other("injected: the disk is failing"),
            ));
        }
        if self.purge_on_restore.load(SeqCst) {
            let id = id.unwrap();
            self.purged.lock().unwrap().push(id);
            return Err(Error::BackupNotFound {
                id,
                location: self.inner.location(),
            });
        }
        self.inner.restore(id, dest, mode)
    }
    fn read_heartbeat(&self) -> Option<Heartbeat> {
        self.inner.read_heartbeat()
    }
    fn watch_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

fn faulty_follower(s: &Setup) -> (Follower, Arc<FaultySource>) {
    let source = FaultySource::new(BackupDir::new(s.store.path()));
    let follower = Follower::open(
        Arc::clone(&source),
        DataDir::lock(&s.data).unwrap(),
        None,
        StaleReads::Serve,
        None,
    )
    .unwrap();
    (follower, source)
}

fn backup(s: &Setup, value: &[u8]) {
    s.back_up(b"k", value);
}

/// A follower serving backup 1, with backup 2 in the store and the
/// source's restores failing.
fn with_a_failing_apply(s: &Setup) -> (Follower, Arc<FaultySource>) {
    let (f, source) = faulty_follower(s);
    backup(s, b"1");
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    backup(s, b"2");
    FaultySource::set(&source.fail_restore, true);
    (f, source)
}

#[test]
fn a_source_whose_restore_fails_keeps_the_old_data_and_no_partial() {
    let s = setup();
    let (f, source) = with_a_failing_apply(&s);
    let PollOutcome::Failed(Error::Io { .. }) = f.poll() else {
        panic!("the restore failed")
    };
    let message = f.state().last_error.clone().unwrap();
    assert!(message.contains("the disk is failing"), "{message}");
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
    assert_eq!(gen_dirs(&s), ["gen-000001"]);
    FaultySource::set(&source.fail_restore, false);
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"2"[..]));
    assert_eq!(f.state().last_error, None);
}

#[test]
fn a_hung_store_holds_up_neither_reads_nor_status_after_a_failed_apply() {
    let s = setup();
    let (f, source) = with_a_failing_apply(&s);
    // The apply fails; the follower then asks the store whether the backup
    // was purged, and that request hangs.
    let hung = source.hang.lock().unwrap();
    let answered = std::thread::scope(|scope| {
        let polling = scope.spawn(|| f.poll());
        let asked = wait(|| source.asked.load(std::sync::atomic::Ordering::SeqCst));
        // Meanwhile a client reads and asks for INFO.
        let client = scope.spawn(|| (get(&f, b"k"), f.status(), f.healthy()));
        let answered = asked && wait(|| client.is_finished());
        drop(hung);
        assert!(matches!(polling.join().unwrap(), PollOutcome::Failed(_)));
        assert!(asked, "the failed apply never asked the store");
        answered.then(|| client.join().unwrap())
    });
    let Some((read, _, healthy)) = answered else {
        panic!("a read and INFO waited on a hung store request")
    };
    assert_eq!(read.as_deref(), Some(&b"1"[..]));
    assert!(healthy);
}

#[test]
fn a_store_that_does_not_answer_is_a_down_link_at_once() {
    let s = setup();
    let (f, source) = faulty_follower(&s);
    let f = f.with_link_timeout(Duration::from_millis(200));
    let link = |f: &Follower| match f.status() {
        crate::status::DaemonStatus::Follower(status) => (status.link_up, status.last_error),
        other => panic!("{other:?}"),
    };
    backup(&s, b"1");
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(link(&f), (true, None));
    // The next poll's request hangs: past the link timeout the link is
    // down and INFO says why, while the request still hangs.
    let hung = source.hang_newest.lock().unwrap();
    let reported = std::thread::scope(|scope| {
        let polling = scope.spawn(|| f.poll());
        let reported = wait(|| {
            let (up, error) = link(&f);
            !up && error.is_some_and(|e| e.contains("has not answered"))
        });
        drop(hung);
        polling.join().unwrap();
        reported
    });
    assert!(reported, "a hung store was reported as a healthy link");
    // Answered again: up.
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert_eq!(link(&f), (true, None));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
}

/// Polls `check` until it holds (true) or a generous minute passes (false).
fn wait(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn a_backup_purged_between_list_and_restore_is_reported_as_purged() {
    let s = setup();
    let (f, source) = faulty_follower(&s);
    backup(&s, b"1");
    f.poll();
    FaultySource::set(&source.purge_on_restore, true);
    backup(&s, b"2");
    let PollOutcome::Failed(Error::BackupPurged { id: 2, .. }) = f.poll() else {
        panic!()
    };
    let first = f.state().last_error.clone().unwrap();
    assert!(
        first.contains("purged") && !first.contains("in a row"),
        "{first}"
    );
    backup(&s, b"3");
    let PollOutcome::Failed(Error::BackupPurged { id: 3, .. }) = f.poll() else {
        panic!()
    };
    let second = f.state().last_error.clone().unwrap();
    assert!(second.contains("2 restores in a row"), "{second}");
    assert!(second.contains("raise --keep-within"), "{second}");
    FaultySource::set(&source.purge_on_restore, false);
    backup(&s, b"4");
    assert!(matches!(f.poll(), PollOutcome::Applied(_)));
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"4"[..]));
}

#[test]
fn a_source_that_goes_away_keeps_the_data_serving_and_says_so() {
    let s = setup();
    let (f, source) = faulty_follower(&s);
    backup(&s, b"1");
    f.poll();
    FaultySource::set(&source.gone, true);
    assert!(matches!(f.poll(), PollOutcome::Failed(_)));
    assert!(!f.state().last_poll_ok);
    assert_eq!(get(&f, b"k").as_deref(), Some(&b"1"[..]));
    FaultySource::set(&source.gone, false);
    assert!(matches!(f.poll(), PollOutcome::UpToDate));
    assert!(f.state().last_poll_ok && f.state().last_error.is_none());
}
