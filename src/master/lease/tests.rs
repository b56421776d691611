//! Unit tests of `lease.rs`.

use super::*;
use crate::backup::BackupDir;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn me(label: &str, id: &str) -> Identity {
    Identity {
        label: label.into(),
        db_id: Some(id.into()),
    }
}

fn backup(label: &str, id: Option<&str>) -> BackupInfo {
    BackupInfo {
        id: 7,
        timestamp: 0,
        size: 0,
        files: 0,
        metadata: Some(AppMetadata {
            v: 1,
            seq: 1,
            created_ms: 0,
            master: label.into(),
            db_id: id.map(Into::into),
        }),
    }
}

#[test]
fn backups_of_another_database_need_take_over() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path());
    let a = me("h:/a", "A");
    claim(
        &store as &dyn BackupSink,
        &a,
        Some(&backup("h:/a", Some("A"))),
        false,
    )
    .unwrap();
    // Same path, new database: another lineage.
    let err = claim(
        &store as &dyn BackupSink,
        &a,
        Some(&backup("h:/a", Some("B"))),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ForeignBackups { id: 7, .. }), "{err}");
    let claimed = claim(
        &store as &dyn BackupSink,
        &a,
        Some(&backup("h:/a", Some("B"))),
        true,
    )
    .unwrap();
    assert!(claimed.took_over.as_deref().unwrap().contains('B'));
    drop(claimed);
    // Backups from before db ids: the label decides.
    claim(
        &store as &dyn BackupSink,
        &a,
        Some(&backup("h:/a", None)),
        false,
    )
    .unwrap();
    assert!(claim(
        &store as &dyn BackupSink,
        &a,
        Some(&backup("h:/b", None)),
        false
    )
    .is_err());
}

#[test]
fn a_held_lock_refuses_a_second_master() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path());
    let first = claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap();
    let err = claim(&store as &dyn BackupSink, &me("h:/b", "B"), None, false).unwrap_err();
    assert!(matches!(err, Error::BackupDirLocked { .. }), "{err}");
    drop(first);
    claim(&store as &dyn BackupSink, &me("h:/b", "B"), None, false).unwrap();
}

#[test]
fn a_renewed_heartbeat_of_another_master_refuses_even_without_locks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path());
    let heartbeat = |ms| Heartbeat {
        v: 1,
        seq: 0,
        ms,
        master: "other:/db".into(),
        db_id: Some("O".into()),
        token: Some("t".into()),
        pid: Some(1),
        keep_within_ms: None,
        lease_term_ms: None,
        log_interval_ms: None,
        superseded: Vec::new(),
        handover: false,
    };
    store.write_heartbeat(&heartbeat(1)).unwrap();
    // Renewed until the claim has answered, however long it takes.
    let renewing = Arc::new(AtomicBool::new(true));
    let renewer = {
        let (store, renewing) = (store.clone(), Arc::clone(&renewing));
        std::thread::spawn(move || {
            let mut ms = 2;
            while renewing.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                store.write_heartbeat(&heartbeat(ms)).unwrap();
                ms += 1;
            }
        })
    };
    let err = claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap_err();
    assert!(matches!(err, Error::BackupDirLeased { .. }), "{err}");
    renewing.store(false, Ordering::SeqCst);
    renewer.join().unwrap();
    // It stopped renewing: after the timeout the directory is free.
    claim(&store as &dyn BackupSink, &me("h:/a", "A"), None, false).unwrap();
}

#[test]
fn a_hand_over_lets_the_successor_in_and_keeps_the_superseded_out() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path());
    let old = me("h:/old", "A");
    let new = me("h:/new", "A");
    drop(claim(&store as &dyn BackupSink, &old, None, false).unwrap());
    store
        .write_heartbeat(&Heartbeat {
            v: 1,
            seq: 5,
            ms: 1,
            master: old.label.clone(),
            db_id: old.db_id.clone(),
            token: Some("old-run".into()),
            pid: Some(1),
            keep_within_ms: Some(60_000),
            lease_term_ms: Some(10_000),
            log_interval_ms: None,
            superseded: vec!["h:/older".into()],
            handover: false,
        })
        .unwrap();
    let seen = check_free(&store);
    assert!(!seen.live, "nobody renews it");
    let handed = hand_over(&store, &new, 5, seen.heartbeat.as_ref(), false).unwrap();
    assert!(handed.handover && handed.master == "h:/new");
    assert_eq!(handed.superseded, ["h:/older", "h:/old"]);
    assert_eq!(handed.keep_within_ms, Some(60_000));

    // The old master is refused at once, --take-over lets it back.
    let err = claim(&store as &dyn BackupSink, &old, None, false).unwrap_err();
    assert!(matches!(err, Error::Superseded { .. }), "{err}");
    // The successor starts without waiting out a lease, even on backups
    // of another database.
    let started = Instant::now();
    let claimed = claim(
        &store as &dyn BackupSink,
        &new,
        Some(&backup("h:/x", Some("X"))),
        false,
    )
    .unwrap();
    assert!(started.elapsed() < LEASE_TIMEOUT);
    assert_eq!(claimed.superseded, ["h:/older", "h:/old"]);
    drop(claimed);
    let back = claim(&store as &dyn BackupSink, &old, None, true).unwrap();
    assert_eq!(back.superseded, ["h:/older"]);
}

#[test]
fn a_hand_over_is_refused_when_a_master_wrote_since_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path());
    let beat = |master: &str, ms| Heartbeat {
        v: 1,
        seq: 1,
        ms,
        master: master.into(),
        db_id: Some("A".into()),
        token: Some(format!("{master}-run")),
        pid: Some(1),
        keep_within_ms: None,
        lease_term_ms: None,
        log_interval_ms: None,
        superseded: Vec::new(),
        handover: false,
    };
    let seen = beat("h:/old", 1);
    store.write_heartbeat(&seen).unwrap();
    // Another master wrote after promote's check.
    store.write_heartbeat(&beat("h:/other", 2)).unwrap();
    let new = me("h:/new", "A");
    let err = hand_over(&store, &new, 1, Some(&seen), false).unwrap_err();
    assert!(matches!(err, Error::BackupDirLeased { ref owner, .. } if owner.contains("other")));
    assert_eq!(store.read_heartbeat().unwrap().master, "h:/other");
}
