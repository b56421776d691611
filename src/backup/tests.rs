use super::*;

fn backup(id: u32, created_ms: u64) -> BackupInfo {
    BackupInfo {
        id,
        timestamp: created_ms / 1000,
        size: 0,
        files: 0,
        metadata: Some(AppMetadata {
            v: 1,
            seq: 0,
            created_ms,
            master: String::new(),
            db_id: None,
        }),
    }
}

#[test]
fn shared_names_give_number_size_and_restored_name() {
    let name = SharedName::parse("000009_sP2XNP78RDOUC7UDOMCJC_1476.sst");
    assert_eq!(
        name,
        Some(SharedName {
            number: 9,
            size: 1476,
            ext: "sst"
        })
    );
    assert_eq!(
        SharedName::parse("000012_s1_0.blob").map(|n| (n.number, n.size)),
        Some((12, 0))
    );
    assert_eq!(
        SharedName::parse("000012_3456_77.sst").map(|n| n.size),
        Some(77)
    );
    assert_eq!(SharedName::parse("CURRENT"), None);
    assert_eq!(SharedName::parse("x_y.sst"), None);
    assert_eq!(
        restored_name("shared_checksum/000009_sP2XNP78RDOUC7UDOMCJC_1476.sst"),
        "000009.sst"
    );
    assert_eq!(
        restored_name("private/3/MANIFEST-000017"),
        "MANIFEST-000017"
    );
    assert_eq!(restored_name("shared/000012.blob"), "000012.blob");
}

#[test]
fn retention_keeps_newest_n_and_everything_young() {
    let now = UNIX_EPOCH + Duration::from_secs(10_000);
    // Ten backups, one every 100 s, the newest 100 s old.
    let backups: Vec<_> = (1..=10)
        .map(|i| backup(i, (10_000 - (11 - i as u64) * 100) * 1000))
        .collect();
    let r = |keep, secs| Retention {
        keep,
        keep_within: Duration::from_secs(secs),
    };
    assert_eq!(r(3, 0).keep_count(&backups, now), 3);
    // Younger than 450 s: the ones 100..400 s old.
    assert_eq!(r(2, 450).keep_count(&backups, now), 4);
    assert_eq!(r(20, 0).keep_count(&backups, now), 10);
    // Never purge the newest, even when asked to keep none.
    assert_eq!(r(0, 0).keep_count(&backups, now), 1);
    assert_eq!(r(0, 0).keep_count(&[], now), 0);
}

#[test]
fn metadata_round_trips_and_tolerates_foreign_backups() {
    let meta = AppMetadata {
        v: 1,
        seq: 7,
        created_ms: 1_700_000_000_123,
        master: "h:/db".into(),
        db_id: Some("id".into()),
    };
    let json = serde_json::to_vec(&meta).unwrap();
    assert_eq!(AppMetadata::parse(&json), Some(meta));
    assert_eq!(AppMetadata::parse(b""), None);
    assert_eq!(AppMetadata::parse(b"not json"), None);
}
