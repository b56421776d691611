//! BackupDir's unit tests: round trips, incremental restores, damage,
//! retention and errors.

use super::*;
use crate::backup::{BackupSink, Retention};
use crate::db::{Db, OpenMode};
use std::time::SystemTime;

fn new_db(path: &Path) -> Db {
    Db::open(
        path,
        OpenMode::ReadWrite {
            create_if_missing: true,
        },
    )
    .unwrap()
}

/// Writes `count` keys of about 1 KiB of incompressible-ish data.
fn fill(db: &Db, prefix: &str, count: usize) {
    for i in 0..count {
        let value: Vec<u8> = (0..1024u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i as u32 * 7919) >> 13) as u8)
            .collect();
        db.put(format!("{prefix}{i:08}").as_bytes(), &value)
            .unwrap();
    }
}

#[test]
fn create_list_restore_round_trip_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    assert!(matches!(store.list(), Err(Error::BackupDirMissing { .. })));
    db.put(b"k1", b"v1").unwrap();
    let first = store.create(&db, "host:/db").unwrap();
    db.put(b"k2", b"v2").unwrap();
    let second = store.create(&db, "host:/db").unwrap();
    assert!(second.info.id > first.info.id);

    assert_eq!(store.newest_id().unwrap(), Some(second.info.id));
    let list = store.list().unwrap();
    assert_eq!(
        list.iter().map(|b| b.id).collect::<Vec<_>>(),
        [first.info.id, second.info.id]
    );
    let meta = list[1].metadata.as_ref().unwrap();
    assert_eq!(meta.seq, db.latest_sequence_number());
    assert_eq!(meta.master, "host:/db");
    store.verify(second.info.id, &Default::default()).unwrap();

    let dest = tmp.path().join("restored");
    let stats = store
        .restore(Some(first.info.id), &dest, RestoreMode::Full)
        .unwrap();
    assert_eq!(stats.id, first.info.id);
    let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
    assert_eq!(restored.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(restored.get(b"k2").unwrap(), None);
    drop(restored);
    let stats = store.restore(None, &dest, RestoreMode::Full).unwrap();
    assert_eq!(stats.id, second.info.id);
    let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
    assert_eq!(restored.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
}

#[test]
fn incremental_restore_copies_only_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    fill(&db, "base", 8_000); // about 8 MiB
    let first = store.create(&db, "t").unwrap();
    fill(&db, "delta", 100); // about 100 KiB
    let second = store.create(&db, "t").unwrap();
    assert!(
        second.bytes_copied * 10 < first.bytes_copied,
        "second backup copied {} bytes, first {}",
        second.bytes_copied,
        first.bytes_copied
    );

    let dest = tmp.path().join("follower");
    let full = store
        .restore(Some(first.info.id), &dest, RestoreMode::Full)
        .unwrap();
    let incremental = store
        .restore(Some(second.info.id), &dest, RestoreMode::KeepMatchingFiles)
        .unwrap();
    assert!(incremental.files_kept > 0);
    assert!(
        incremental.bytes_copied * 10 < full.bytes_copied,
        "incremental restore copied {} bytes, full {}",
        incremental.bytes_copied,
        full.bytes_copied
    );
    let restored = Db::open(&dest, OpenMode::ReadOnly).unwrap();
    assert!(restored.get(b"delta00000099").unwrap().is_some());
    assert!(restored.get(b"base00000000").unwrap().is_some());
}

#[test]
fn verify_finds_a_flipped_byte_and_unknown_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    fill(&db, "k", 100);
    let info = store.create(&db, "t").unwrap().info;
    let id = info.id;
    // Every file checked is counted, as the CLI's progress bar shows.
    let meter = crate::progress::Meter::default();
    store.verify(id, &meter).unwrap();
    let checked = meter.done();
    assert_eq!(
        (checked.bytes, checked.files),
        (info.size, u64::from(info.files))
    );
    assert!(matches!(
        store.verify(id + 1, &Default::default()),
        Err(Error::BackupNotFound { .. })
    ));

    let sst = store
        .read_meta(id)
        .unwrap()
        .files
        .into_iter()
        .find(|f| f.path.ends_with(".sst"))
        .unwrap();
    let path = store.path().join(&sst.path);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let err = store.verify(id, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::BackupCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(".sst"), "{err}");
    let err = store
        .restore(Some(id), &tmp.path().join("r"), RestoreMode::Full)
        .unwrap_err();
    assert!(matches!(err, Error::BackupCorrupt { .. }), "{err}");
}

#[test]
fn purge_keeps_what_retention_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    for i in 0..5 {
        db.put(format!("k{i}").as_bytes(), b"v").unwrap();
        store.create(&db, "t").unwrap();
    }
    let ids: Vec<u32> = store.list().unwrap().iter().map(|b| b.id).collect();
    let now = SystemTime::now();
    // Everything is younger than an hour: nothing goes.
    let within = Retention {
        keep: 2,
        keep_within: Duration::from_secs(3600),
    };
    assert!(store.purge(&within, now).unwrap().is_empty());
    let keep2 = Retention {
        keep: 2,
        keep_within: Duration::ZERO,
    };
    assert_eq!(store.purge(&keep2, now).unwrap(), ids[..3]);
    let left: Vec<u32> = store.list().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(left, ids[3..]);
    store.verify(ids[4], &Default::default()).unwrap();
    store
        .restore(None, &tmp.path().join("r"), RestoreMode::Full)
        .unwrap();
}

#[test]
fn restore_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupDir::new(tmp.path().join("none"));
    let dest = tmp.path().join("r");
    assert!(matches!(
        store.restore(None, &dest, RestoreMode::Full),
        Err(Error::BackupDirMissing { .. })
    ));
    let empty = BackupDir::new(tmp.path());
    assert!(matches!(
        empty.restore(None, &dest, RestoreMode::Full),
        Err(Error::NoBackups { .. })
    ));
    // Reading did not create the layout in a directory it does not own.
    assert!(!tmp.path().join("meta").exists());
}

#[test]
fn a_directory_replaced_behind_the_masters_engine_is_loaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    fill(&db, "a", 50);
    store.create(&db, "host:/db").unwrap();
    fill(&db, "b", 50);
    assert_eq!(store.create(&db, "host:/db").unwrap().info.id, 2);
    // Emptied by an operator while the master runs: the engine's view of
    // shared files is no longer true, and a backup built on it would list
    // files the directory lacks.
    std::fs::remove_dir_all(store.path()).unwrap();
    std::fs::create_dir_all(store.path().join(META_DIR)).unwrap();
    fill(&db, "c", 1);
    let again = store.create(&db, "host:/db").unwrap();
    assert_eq!(again.info.id, 1, "ids restart in the new directory");
    store.verify(1, &Default::default()).unwrap();
    let described = store.describe(1).unwrap();
    assert_eq!(described.files, again.info.files);
    assert_eq!(described.metadata, again.info.metadata);
    let restored = tmp.path().join("restored");
    store.restore(None, &restored, RestoreMode::Full).unwrap();
    let copy = Db::open(&restored, OpenMode::ReadOnly).unwrap();
    assert!(copy.get(b"a00000049").unwrap().is_some());
    assert!(copy.get(b"c00000000").unwrap().is_some());
}

#[test]
fn describe_reads_one_backup_and_names_what_makes_it_unloadable() {
    let tmp = tempfile::tempdir().unwrap();
    let db = new_db(&tmp.path().join("db"));
    let store = BackupDir::new(tmp.path().join("backups"));
    fill(&db, "a", 100);
    let made = store.create(&db, "host:/db").unwrap();
    let listed = store.list().unwrap().remove(0);
    let described = store.describe(1).unwrap();
    assert_eq!(described.timestamp, listed.timestamp);
    assert_eq!(described.size, listed.size);
    assert_eq!(described.files, listed.files);
    assert_eq!(described.metadata, made.info.metadata);
    assert!(matches!(
        store.describe(7),
        Err(Error::BackupNotFound { id: 7, .. })
    ));
    let sst = store
        .read_meta(1)
        .unwrap()
        .files
        .into_iter()
        .find(|f| f.path.ends_with(".sst"))
        .unwrap();
    std::fs::remove_file(store.path().join(&sst.path)).unwrap();
    match store.describe(1) {
        Err(Error::BackupCorrupt { id: 1, detail }) => {
            assert!(detail.contains(&sst.path), "{detail}")
        }
        other => panic!("expected BackupCorrupt, got {other:?}"),
    }
}

#[test]
fn an_engine_open_racing_a_purge_is_told_from_other_failures() {
    // RocksDB's message when a meta file it listed is gone by the time it
    // reads it: the purge won; a fresh open sees the directory as it is.
    assert!(purged_while_opening(
        "IO error: No such file or directory: While opening a file for sequentially \
         reading: backups/meta/12: No such file or directory"
    ));
    // A missing shared file is damage, not a race: no retry hides it.
    assert!(!purged_while_opening(
        "IO error: No such file or directory: While opening a file for sequentially \
         reading: backups/shared_checksum/000009_s1_16830620.sst: No such file or directory"
    ));
    assert!(!purged_while_opening(
        "Corruption: Size mismatch for existing backup file: meta/3"
    ));
}

#[test]
fn a_meta_file_gone_while_an_engine_opens_is_a_purge_race() {
    assert!(super::purged_while_opening(
        "IO error: No such file or directory: While opening a file for sequentially reading: \
         /b/meta/7: No such file or directory"
    ));
    assert!(super::purged_while_opening("NotFound: "));
    assert!(!super::purged_while_opening("Corruption: bad meta file"));
    assert!(!super::purged_while_opening(
        "IO error: No such file or directory: /b/shared/x"
    ));
}
