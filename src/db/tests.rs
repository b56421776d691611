//! Unit tests of `db.rs`.

use super::*;

fn rw(create_if_missing: bool) -> OpenMode {
    OpenMode::ReadWrite { create_if_missing }
}

#[test]
fn missing_db_is_db_not_found_unless_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    assert!(matches!(
        Db::open(&path, rw(false)),
        Err(Error::DbNotFound { .. })
    ));
    assert!(matches!(
        Db::open(&path, OpenMode::ReadOnly),
        Err(Error::DbNotFound { .. })
    ));
    let db = Db::open(&path, rw(true)).unwrap();
    db.put(b"k", b"v").unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn iter_honours_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), rw(true)).unwrap();
    for k in ["a", "b", "c", "d"] {
        db.put(k.as_bytes(), b"x").unwrap();
    }
    let range = ScanRange {
        from: Some(b"b".to_vec()),
        to: Some(b"d".to_vec()),
    };
    let keys: Vec<_> = db.iter(&range).map(|e| e.unwrap().0).collect();
    assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(db.iter(&ScanRange::default()).count(), 4);
}

/// Writes `key` with a deadline `ms_from_now` away.
fn put_expiring(db: &Db, key: &[u8], value: &[u8], ms_from_now: u64) {
    let old = db.entry(key, now_ms()).unwrap();
    let mut batch = db.batch();
    batch.put(key, value, Some(now_ms() + ms_from_now), old.as_ref());
    db.write(batch).unwrap();
}

#[test]
fn a_database_of_an_earlier_release_reads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    {
        // As rkv wrote databases before keys could expire: the default
        // column family only.
        let raw = DB::open_default(dir.path()).unwrap();
        raw.put(b"a", b"1").unwrap();
        raw.put(b"b", [0u8, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap();
    }
    let ro = Db::open(dir.path(), OpenMode::ReadOnly).unwrap();
    assert_eq!(
        ro.get(b"b").unwrap(),
        Some(vec![0u8, 0, 0, 0, 0, 0, 0, 0, 9])
    );
    assert_eq!(ro.iter(&ScanRange::default()).count(), 2);
    drop(ro);
    let rw = Db::open(dir.path(), rw(false)).unwrap();
    assert_eq!(rw.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    put_expiring(&rw, b"c", b"3", 60_000);
    let keys: Vec<_> = rw
        .iter(&ScanRange::default())
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn a_key_moves_between_the_families_and_reads_merge_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), rw(true)).unwrap();
    db.put(b"a", b"1").unwrap();
    put_expiring(&db, b"b", b"2", 60_000);
    db.put(b"c", b"3").unwrap();
    // b gets a plain value: its deadline goes with the old value.
    db.put(b"b", b"plain").unwrap();
    assert_eq!(db.expiring_entry(b"b").unwrap(), None);
    // a gets a deadline: it leaves the default family.
    put_expiring(&db, b"a", b"x", 60_000);
    assert_eq!(db.inner.get(b"a").unwrap(), None);
    let entries: Vec<_> = db
        .entries(&ScanRange::default(), now_ms())
        .map(|e| e.unwrap())
        .collect();
    let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(entries[0].1.expires_at.is_some());
    assert_eq!(entries[1].1.expires_at, None);
    db.delete(b"a").unwrap();
    assert_eq!(db.get(b"a").unwrap(), None);
    assert_eq!(db.expiring_entry(b"a").unwrap(), None);
}

#[test]
fn an_expired_key_is_invisible_at_once_and_compaction_reclaims_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), rw(true)).unwrap();
    put_expiring(&db, b"soon", b"v", 150);
    put_expiring(&db, b"later", b"w", 600_000);
    db.put(b"plain", b"p").unwrap();
    // Visible until its deadline (asked at a moment before it, as a
    // slow machine may not get to ask in time), gone from then on.
    let deadline = db
        .expiring_entry(b"soon")
        .unwrap()
        .unwrap()
        .expires_at
        .unwrap();
    let before = db.entry(b"soon", deadline - 1).unwrap().unwrap();
    assert_eq!(before.value, b"v");
    assert_eq!(db.entry(b"soon", deadline).unwrap(), None);
    while now_ms() <= deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(db.get(b"soon").unwrap(), None);
    let live: Vec<_> = db
        .iter(&ScanRange::default())
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(live, [b"later".to_vec(), b"plain".to_vec()]);
    // Still stored until compaction drops it.
    assert!(db.expiring_entry(b"soon").unwrap().is_some());
    db.compact().unwrap();
    assert_eq!(db.expiring_entry(b"soon").unwrap(), None);
    assert!(db.expiring_entry(b"later").unwrap().is_some());
}

#[test]
fn delete_all_removes_every_key_of_both_families() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), rw(true)).unwrap();
    for k in [&b""[..], b"a", b"\xff\xff\xff"] {
        db.put(k, b"v").unwrap();
    }
    put_expiring(&db, b"\xff\xff\xff\xff", b"v", 60_000);
    let mut batch = db.batch();
    db.delete_all(&mut batch).unwrap();
    db.write(batch).unwrap();
    assert_eq!(db.iter(&ScanRange::default()).count(), 0);
    db.put(b"after", b"v").unwrap();
    assert_eq!(db.iter(&ScanRange::default()).count(), 1);
}

#[test]
fn read_only_open_sees_data_and_does_not_lock() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), rw(true)).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let ro = Db::open(dir.path(), OpenMode::ReadOnly).unwrap();
    assert_eq!(ro.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    // A read-write open still works while a read-only one is open.
    drop(Db::open(dir.path(), rw(false)).unwrap());
}
