//! The master's unit tests: when it backs up, what a restart knows, and
//! failed backups.

use super::*;
use crate::backup::BackupDir;
use crate::server::Backend;

fn master(dir: &Path) -> Master {
    let retention = Retention {
        keep: 2,
        keep_within: Duration::ZERO,
    };
    Master::open(
        &dir.join("db"),
        BackupDir::new(dir.join("backups")),
        retention,
        false,
        None,
    )
    .unwrap()
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
