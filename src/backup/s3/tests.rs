//! The object store's own rules: object names, `latest`, errors, the
//! AWS settings files, and what a publisher sends.

use super::client::{classify, ini_section};
use super::*;
use crate::backup::{BackupSink, BackupSource};
use crate::error::StoreFailure;

#[test]
fn a_meta_file_cannot_name_a_path_outside_the_backup() {
    assert!(inside_backup("shared_checksum/000009_sABC_123.sst"));
    assert!(inside_backup("private/3/MANIFEST-000005"));
    assert!(!inside_backup("../../etc/passwd"));
    assert!(!inside_backup("/etc/passwd"));
    assert!(!inside_backup("shared_checksum/../../x"));
    assert!(!inside_backup("private/3//x"));
    assert!(!inside_backup("meta/3"));
    assert!(!inside_backup("shared_checksum"));
}

#[test]
fn objects_name_their_backup() {
    assert_eq!(backup_of("meta/12", META_DIR), Some(12));
    assert_eq!(
        backup_of("private/12/MANIFEST-000005", PRIVATE_DIR),
        Some(12)
    );
    assert_eq!(backup_of("private/12/x", META_DIR), None);
    assert_eq!(backup_of("metadata/1", META_DIR), None);
    assert_eq!(backup_of("meta/.1.tmp", META_DIR), None);
}

#[test]
fn latest_round_trips_and_a_tool_may_omit_the_heartbeat() {
    let latest = Latest {
        v: 1,
        backup: Some(LatestBackup {
            id: 7,
            seq: 42,
            created_ms: 1_700_000_000_000,
        }),
        heartbeat: None,
    };
    let json = serde_json::to_string(&latest).unwrap();
    assert_eq!(
        json,
        r#"{"v":1,"backup":{"id":7,"seq":42,"created_ms":1700000000000}}"#
    );
    assert_eq!(serde_json::from_str::<Latest>(&json).unwrap(), latest);
}

#[test]
fn a_failure_is_classified_from_its_variant_and_its_http_cause() {
    use object_store::client::{HttpError, HttpErrorKind};
    let http = |kind| object_store::Error::Generic {
        store: "S3",
        source: Box::new(HttpError::new(kind, std::io::Error::other("refused"))),
    };
    assert_eq!(
        classify(&http(HttpErrorKind::Connect)),
        StoreFailure::Unreachable
    );
    assert_eq!(
        classify(&http(HttpErrorKind::Timeout)),
        StoreFailure::TimedOut
    );
    assert_eq!(
        classify(&http(HttpErrorKind::Interrupted)),
        StoreFailure::Broken
    );
    let denied = object_store::Error::PermissionDenied {
        path: "latest".into(),
        source: "403".into(),
    };
    assert_eq!(classify(&denied), StoreFailure::Denied);
    let status = object_store::Error::Generic {
        store: "S3",
        source: "Server returned non-2xx status code: 503 Service Unavailable".into(),
    };
    assert_eq!(classify(&status), StoreFailure::Failed);
}

#[test]
fn a_store_error_prints_its_cause_once() {
    use object_store::client::{HttpError, HttpErrorKind};
    let cause = HttpError::new(
        HttpErrorKind::Connect,
        std::io::Error::other("tcp connect error: Connection refused"),
    );
    let e = object_store::Error::Generic {
        store: "S3",
        source: Box::new(cause),
    };
    let bucket = in_memory();
    let error = bucket.error("read latest".into(), e);
    assert_eq!(
        error.to_string(),
        "object store s3://b/p: read latest: cannot connect"
    );
    let report = error.report().to_string();
    assert_eq!(
        report,
        "object store s3://b/p: read latest: cannot connect: Generic S3 error: HTTP error: \
         tcp connect error: Connection refused"
    );
    assert!(error.hint().unwrap().contains("--s3-endpoint"));
}

#[test]
fn reads_a_profile_from_an_aws_ini_file() {
    let text = "[default]\naws_access_key_id = A\n# comment\naws_secret_access_key=B\n\n\
                [profile x]\nregion = eu-west-1\n[other]\naws_access_key_id = C\n";
    let default = ini_section(text, "default");
    assert_eq!(
        default,
        vec![
            ("aws_access_key_id".to_string(), "A".to_string()),
            ("aws_secret_access_key".to_string(), "B".to_string())
        ]
    );
    assert_eq!(
        ini_section(text, "profile x"),
        vec![("region".to_string(), "eu-west-1".to_string())]
    );
    assert!(ini_section(text, "missing").is_empty());
}

fn in_memory() -> Bucket {
    Bucket::in_memory(S3Config::in_memory("b", "p")).unwrap()
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        v: 1,
        seq: 1,
        ms: 1,
        master: "host:/db".into(),
        token: Some("t".into()),
        ..Heartbeat::default()
    }
}

/// The newest backup `latest` names, as a follower reads it.
fn published(bucket: &Bucket, tmp: &Path) -> Option<u32> {
    let cache = tmp.join(format!("cache-{}", crate::backup::now_ms()));
    let reader = S3Reader::on(bucket.clone_client().unwrap(), BackupDir::new(cache));
    reader.newest_id().unwrap()
}

#[test]
fn a_hand_over_publishes_no_backup_even_with_one_in_its_staging_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = in_memory();
    let db = crate::db::Db::scratch(tmp.path());
    db.put(b"k", b"v").unwrap();
    // Something left a backup where the hand-over stages: not its own.
    let staging = BackupDir::new(tmp.path().join("hand-over"));
    staging.create(&db, "elsewhere").unwrap();
    let hand_over = S3Publisher::for_hand_over(bucket.clone_client().unwrap(), staging).unwrap();
    hand_over.write_heartbeat(&heartbeat()).unwrap();
    assert_eq!(published(&bucket, tmp.path()), None);
    assert_eq!(
        hand_over.read_heartbeat().map(|h| h.master),
        Some("host:/db".into())
    );
}

#[test]
fn a_backup_the_last_run_staged_but_did_not_publish_goes_out_with_the_first_heartbeat() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = in_memory();
    let db = crate::db::Db::scratch(tmp.path());
    let staging = tmp.path().join("staging");
    {
        let first = S3Publisher::on(
            bucket.clone_client().unwrap(),
            BackupDir::new(&staging),
            false,
        )
        .unwrap();
        db.put(b"k", b"1").unwrap();
        let one = first.create(&db, "host:/db").unwrap().info.id;
        assert_eq!(published(&bucket, tmp.path()), Some(one));
        // Staged, then the run ends before its publish.
        db.put(b"k", b"2").unwrap();
        BackupDir::new(&staging).create(&db, "host:/db").unwrap();
        assert_eq!(published(&bucket, tmp.path()), Some(one));
    }
    let second = S3Publisher::on(
        bucket.clone_client().unwrap(),
        BackupDir::new(&staging),
        false,
    )
    .unwrap();
    let staged = BackupDir::new(&staging).newest_id().unwrap();
    second.write_heartbeat(&heartbeat()).unwrap();
    assert_eq!(published(&bucket, tmp.path()), staged);
}
