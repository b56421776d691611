//! The master's unit tests: when it backs up, what a restart knows, and
//! failed backups.

use super::*;
use crate::backup::BackupDir;
use crate::server::Backend;

fn master(dir: &Path) -> Master {
    master_on(dir, BackupDir::new(dir.join("backups")))
}

/// A master of the database in `dir` on `store`, keeping two backups.
fn master_on(dir: &Path, store: impl BackupSink + 'static) -> Master {
    let retention = Retention {
        keep: 2,
        keep_within: Duration::ZERO,
    };
    Master::open(&dir.join("db"), store, retention, false, None).unwrap()
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

/// A store that another master has taken over, as an object store finds
/// out: its writes are refused (`Error::Fenced`, after reading back the
/// other master's token), while reads of its heartbeat keep failing, so
/// the master's own look at the heartbeat cannot tell. Or one the master
/// is cut off from (`cut`): every write fails, nothing says why. Around a
/// real directory.
struct TakenOver {
    inner: BackupDir,
    taken: AtomicBool,
    cut: AtomicBool,
}

impl TakenOver {
    fn new(dir: &Path) -> Arc<TakenOver> {
        std::fs::create_dir_all(dir).unwrap();
        Arc::new(TakenOver {
            inner: BackupDir::new(dir),
            taken: AtomicBool::new(false),
            cut: AtomicBool::new(false),
        })
    }

    fn refuse(&self) -> Result<()> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(Error::Store {
                location: backup::BackupSource::location(&self.inner),
                context: "write latest".into(),
                failure: crate::error::StoreFailure::TimedOut,
                source: None,
            });
        }
        match self.taken.load(Ordering::SeqCst) {
            true => Err(Error::Fenced {
                by: "other:/db (pid 7)".into(),
            }),
            false => Ok(()),
        }
    }
}

impl backup::BackupSource for Arc<TakenOver> {
    fn location(&self) -> backup::BackupLocation {
        self.inner.location()
    }
    fn list(&self) -> Result<Vec<backup::BackupInfo>> {
        self.inner.list()
    }
    fn newest_id(&self) -> Result<Option<u32>> {
        self.inner.newest_id()
    }
    fn contains(&self, id: u32) -> Result<bool> {
        self.inner.contains(id)
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
    fn restore(
        &self,
        id: Option<u32>,
        dest: &Path,
        mode: backup::RestoreMode,
    ) -> Result<backup::RestoreStats> {
        self.inner.restore(id, dest, mode)
    }
    fn read_heartbeat(&self) -> Option<backup::Heartbeat> {
        // Reads fail once it is taken over: the refusal alone tells.
        match self.taken.load(Ordering::SeqCst) {
            true => None,
            false => self.inner.read_heartbeat(),
        }
    }
    fn watch_paths(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

impl BackupSink for Arc<TakenOver> {
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats> {
        self.refuse()?;
        self.inner.create(db, master)
    }
    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>> {
        self.inner.purge(retention, now)
    }
    fn write_heartbeat(&self, heartbeat: &backup::Heartbeat) -> Result<()> {
        self.refuse()?;
        self.inner.write_heartbeat(heartbeat)
    }
    fn lock_for_master(&self) -> Result<backup::MasterLock> {
        Ok(backup::MasterLock::none())
    }
    fn fence(&self) -> &backup::Fence {
        self.inner.fence()
    }
    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage> {
        self.inner.scrub(cursor, budget)
    }
    fn remove_damaged(&self, damage: &[Damage]) -> Result<()> {
        self.inner.remove_damaged(damage)
    }
    fn drop_incomplete(&self) -> Result<Vec<u32>> {
        self.inner.drop_incomplete()
    }
}

#[test]
fn a_store_that_refuses_this_masters_writes_fences_it_everywhere() {
    for refused_by in ["heartbeat", "backup"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = TakenOver::new(&tmp.path().join("backups"));
        let m = master_on(tmp.path(), Arc::clone(&store));
        m.claim(false, Duration::from_secs(10)).unwrap();
        m.db().put(b"k", b"v").unwrap();
        assert!(matches!(m.backup_step(), StepOutcome::Created(_)));
        assert!(m.writer().is_ok());

        store.taken.store(true, Ordering::SeqCst);
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
    let store = TakenOver::new(&tmp.path().join("backups"));
    let m = master_on(tmp.path(), Arc::clone(&store));
    let term = Duration::from_millis(300);
    m.claim(false, term).unwrap();
    assert!(m.writer().is_ok(), "the first heartbeat landed");
    assert_eq!(
        m.store.read_heartbeat().and_then(|h| h.lease_term_ms),
        Some(300),
        "the heartbeat carries the term, for a promotion to wait out"
    );

    store.cut.store(true, Ordering::SeqCst);
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
    store.cut.store(false, Ordering::SeqCst);
    m.heartbeat();
    assert!(m.writer().is_ok(), "{:?}", m.lease_expired());
    assert!(crate::metrics::health(&m.status()).is_ok());
}
