//! rkv-follower as a process, with a real master: replication within the
//! bound, reads across generation swaps, incremental catch-up cost, crash
//! recovery, corrupt backups, read-only serving and the staleness bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::util::{
    bulk, corrupt_private_manifest, db_flag, fill, get, refused, rkv, serves, serves_fresh,
    wait_until, Daemon, Sandbox, GENEROUS, REFUSE_AFTER_3S, SLOW_RESTORE,
};

/// A master taking backups on request only, without the log (these tests
/// are of the backup path: restores, generations, swaps; `tail.rs` has the
/// log's), and a follower polling every 100 ms, with `extra` flags for the
/// follower.
fn pair(s: &Sandbox, extra: &[&str]) -> (Daemon, Daemon) {
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &BACKUPS_ONLY);
    let mut flags = vec!["--poll-interval", "100ms"];
    flags.extend_from_slice(extra);
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &flags);
    (master, follower)
}

/// The master's flags for backups on request only, without the log.
const BACKUPS_ONLY: [&str; 4] = ["--interval", "0", "--log-interval", "0"];

/// Sets `key` on the master, backs up, and waits for the follower to serve it.
fn set_and_replicate(master: &Daemon, follower: &Daemon, key: &str, value: &str) {
    master
        .client()
        .call(&[b"SET", key.as_bytes(), value.as_bytes()])
        .unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    serves(follower, key, value);
}

#[test]
fn a_write_reaches_both_followers_within_the_bound() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "1s"]);
    let f1 = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "1s"],
    );
    let f2 = Daemon::follower(
        &s.path("backups"),
        &s.path("f2"),
        &["--poll-interval", "1s"],
    );
    // Before any backup, reads say why they cannot be answered.
    assert!(matches!(get(&f1, "user:1"), Some(Reply::Error(e)) if e.starts_with("MASTERDOWN")));

    master
        .client()
        .call(&[b"SET", b"user:1", b"Alice"])
        .unwrap();
    let started = Instant::now();
    for f in [&f1, &f2] {
        serves(f, "user:1", "Alice");
    }
    eprintln!("replicated to both followers in {:?}", started.elapsed());

    // Writes are refused, as on a Redis replica.
    let mut c = f1.client();
    assert_eq!(
        c.call_raw(&[b"SET", b"k", b"v"]).unwrap(),
        Reply::error("READONLY You can't write against a read only replica.")
    );
    let Reply::Array(Some(role)) = c.call(&[b"ROLE"]).unwrap() else {
        panic!()
    };
    assert_eq!(role[0], bulk("slave"));
    assert_eq!(f1.info("role").as_deref(), Some("slave"));
    assert_eq!(
        f1.info_num("rkv_applied_backup_id"),
        f1.info_num("rkv_newest_backup_id")
    );
    assert_eq!(f1.info_num("rkv_applied_seq"), 1);
    // Known once the follower has seen the master's heartbeat change.
    wait_until(GENEROUS, "the staleness measured", || {
        f1.info_num("rkv_staleness_ms") >= 0 && f1.info("rkv_staleness_ms").as_deref() != Some("-1")
    });
    assert_eq!(f1.info("healthy").as_deref(), Some("1"));
    let connect = format!("--connect={}", f1.addr);
    rkv(&[&connect, "put", "k", "v"]).fails(1, &["READONLY"]);

    // The CLI reads a follower's data dir, with the daemon and without.
    assert_eq!(
        rkv(&[&db_flag(&s.path("f2")), "get", "user:1"]).ok(),
        "Alice\n"
    );
    rkv(&[&db_flag(&s.path("f2")), "put", "k", "v"]).fails(1, &["READONLY"]);
    assert_eq!(f2.stop(), Some(0));
    assert_eq!(
        rkv(&[&db_flag(&s.path("f2")), "get", "user:1"]).ok(),
        "Alice\n"
    );
    assert_eq!(
        rkv(&[&db_flag(&s.path("f2")), "scan"]).ok(),
        "user:1 : Alice\n"
    );
    rkv(&[&db_flag(&s.path("f2")), "put", "k", "v"])
        .fails(1, &["rkv-follower data directory", "read-only"]);
    rkv(&[
        &db_flag(&s.path("f2")),
        "restore",
        &format!("--backup_dir={}", s.path("backups").display()),
    ])
    .fails(
        2,
        &[
            "rkv-follower data directory",
            "restore into another directory",
        ],
    );
}

#[test]
fn readers_see_no_error_and_no_missing_key_across_20_swaps() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &[]);
    let mut m = master.client();
    m.call(&[b"SET", b"key:0", b"0"]).unwrap();
    m.call(&[b"SAVE"]).unwrap();
    serves(&follower, "key:0", "0");

    let present = Arc::new(AtomicU64::new(1)); // keys key:0..present exist
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (present, reads, stop, addr) = (
            Arc::clone(&present),
            Arc::clone(&reads),
            Arc::clone(&stop),
            follower.addr.clone(),
        );
        std::thread::spawn(move || {
            let mut c = rkv::client::Client::connect(&addr, None).unwrap();
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let known = present.load(Ordering::SeqCst);
                let key = format!("key:{}", i % known);
                match c.call_raw(&[b"GET", key.as_bytes()]) {
                    Ok(Reply::Bulk(Some(_))) => {}
                    other => failures.push(format!("{key}: {other:?}")),
                }
                reads.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            failures
        })
    };
    for n in 1..=20u64 {
        m.call(&[
            b"SET",
            format!("key:{n}").as_bytes(),
            n.to_string().as_bytes(),
        ])
        .unwrap();
        m.call(&[b"SAVE"]).unwrap();
        let id = (n + 1) as i64;
        wait_until(GENEROUS, "the follower to apply the backup", || {
            follower.info_num("rkv_applied_backup_id") == id
        });
        present.store(n + 1, Ordering::SeqCst);
        // Reads on every generation, however the threads are scheduled.
        let before = reads.load(Ordering::SeqCst);
        wait_until(GENEROUS, "the reader to read the new generation", || {
            reads.load(Ordering::SeqCst) >= before + 10
        });
    }
    stop.store(true, Ordering::SeqCst);
    let failures = reader.join().unwrap();
    let reads = reads.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(follower.info_num("rkv_applies_done"), 21);
    // Old generations are cleaned up once no reader holds them.
    wait_until(GENEROUS, "old generations removed", || {
        std::fs::read_dir(s.path("f1"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("gen-")
            })
            .count()
            == 1
    });
}

#[test]
fn a_small_change_copies_a_small_fraction_of_the_database() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &[]);
    fill(&master, "bulk", 24);
    master.client().call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "the large backup applied", || {
        follower.info_num("rkv_applied_backup_id") == 1
    });
    let full = follower.info_num("rkv_last_apply_bytes_copied");
    assert!(full > 20 << 20, "the first apply copied only {full} bytes");

    master
        .client()
        .call(&[b"SET", b"small", b"change"])
        .unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "the small backup applied", || {
        follower.info_num("rkv_applied_backup_id") == 2
    });
    let incremental = follower.info_num("rkv_last_apply_bytes_copied");
    eprintln!("full apply {full} bytes, incremental {incremental} bytes");
    assert!(
        incremental * 10 < full,
        "incremental apply copied {incremental} of {full} bytes"
    );
    assert_eq!(get(&follower, "small"), Some(bulk("change")));
}

#[test]
fn kill_9_during_a_restore_then_restart_serves_at_once_and_catches_up() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &BACKUPS_ONLY);
    // A slow restore (2 MiB/s) makes the window to kill in wide.
    let slow = ["--poll-interval", "100ms", "--restore-rate-limit", "2MiB"];
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &slow);
    master
        .client()
        .call(&[b"SET", b"before", b"crash"])
        .unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    serves(&follower, "before", "crash");

    fill(&master, "big", 12);
    master.client().call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "a restore in progress", || {
        s.path("f1/gen-000002.partial").exists()
    });
    follower.kill();

    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms"],
    );
    // Daemon::follower returns once PING answers: the old generation must
    // be serving already, whatever the catch-up is doing.
    let first = get(&follower, "before");
    assert!(
        first == Some(bulk("crash")),
        "right after restart the follower answered {first:?}"
    );
    wait_until(GENEROUS, "the catch-up", || {
        follower.info_num("rkv_applied_backup_id") == 2
    });
    assert!(matches!(
        get(&follower, "big:000000:00"),
        Some(Reply::Bulk(Some(_)))
    ));
    assert!(!s.path("f1/gen-000002.partial").exists());
}

#[test]
fn a_corrupt_backup_keeps_the_old_data_serving_until_an_intact_one() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &[]);
    set_and_replicate(&master, &follower, "k", "1");
    assert_eq!(follower.stop(), Some(0));

    master.client().call(&[b"SET", b"k", b"2"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    // Flip a byte of the MANIFEST only backup 2 holds (same size: RocksDB
    // lists the backup; only the checksum tells).
    corrupt_private_manifest(&s.path("backups"), 2);

    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms"],
    );
    wait_until(GENEROUS, "the failure reported", || {
        follower.info_num("rkv_apply_failures") >= 1
    });
    let error = follower.info("rkv_last_error").unwrap();
    assert!(
        error.contains("backup 2") && error.contains("corrupt"),
        "{error}"
    );
    assert_eq!(get(&follower, "k"), Some(bulk("1")));
    assert_eq!(follower.info_num("rkv_applied_backup_id"), 1);
    assert_eq!(follower.info_num("rkv_newest_backup_id"), 2);

    master.client().call(&[b"SET", b"k", b"3"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    serves(&follower, "k", "3");
    assert_eq!(follower.info("rkv_last_error").as_deref(), Some(""));
}

#[test]
fn stale_reads_are_refused_once_the_master_stops() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "200ms"]);
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &REFUSE_AFTER_3S);
    let mut m = master.client();
    m.call(&[b"SET", b"k", b"v"]).unwrap();
    serves(&follower, "k", "v");
    // An idle master is not a dead one: its heartbeat keeps the data fresh
    // well past the bound.
    std::thread::sleep(Duration::from_secs(5));
    serves_fresh(&follower, "k", "v", 3000);
    assert_eq!(master.stop(), Some(0));
    wait_until(
        GENEROUS,
        "reads refused",
        || matches!(get(&follower, "k"), Some(Reply::Error(e)) if e.starts_with("MASTERDOWN")),
    );
    let Some(Reply::Error(e)) = get(&follower, "k") else {
        unreachable!()
    };
    assert!(e.contains("max-staleness"), "{e}");
    assert_eq!(follower.info("healthy").as_deref(), Some("0"));
}

#[test]
fn a_follower_waits_for_the_backup_dir_and_a_second_one_is_refused() {
    let s = Sandbox::new();
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms"],
    );
    let stderr = refused(
        env!("CARGO_BIN_EXE_rkv-follower"),
        &[
            "--backup-dir",
            &s.path("backups").display().to_string(),
            "--data",
            &s.path("f1").display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
        1,
    );
    assert!(
        stderr.contains("another rkv-follower is already using"),
        "{stderr}"
    );

    wait_until(GENEROUS, "the wait logged", || {
        follower.log().contains("waiting for the backup directory")
    });
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "200ms"]);
    master
        .client()
        .call(&[b"SET", b"late", b"arrival"])
        .unwrap();
    serves(&follower, "late", "arrival");
}

#[test]
fn a_vanished_backup_dir_keeps_the_data_serving_and_is_reported() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &[]);
    set_and_replicate(&master, &follower, "k", "v");
    assert_eq!(master.stop(), Some(0));

    std::fs::rename(s.path("backups"), s.path("moved")).unwrap();
    wait_until(GENEROUS, "the loss reported", || {
        follower.info("master_link_status").as_deref() == Some("down")
    });
    assert!(follower
        .info("rkv_last_error")
        .unwrap()
        .contains("no backup directory"));
    assert_eq!(get(&follower, "k"), Some(bulk("v")));

    std::fs::rename(s.path("moved"), s.path("backups")).unwrap();
    wait_until(GENEROUS, "the link back up", || {
        follower.info("master_link_status").as_deref() == Some("up")
    });
}

#[test]
fn a_backup_purged_during_its_restore_gives_way_to_the_newest() {
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &[
            "--interval",
            "0",
            "--log-interval",
            "0",
            "--keep",
            "1",
            "--keep-within",
            "10s",
        ],
    );
    let slow = ["--poll-interval", "100ms", "--restore-rate-limit", "1MiB"];
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &slow);
    set_and_replicate(&master, &follower, "a", "1");

    // A restore of backup 2 at 1 MiB/s outlasts its --keep-within.
    fill(&master, "big", 16);
    master.client().call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "the restore of backup 2 under way", || {
        s.path("f1/gen-000002.partial").exists()
    });
    std::thread::sleep(Duration::from_secs(10));
    // Backup 3 makes retention purge backup 2 while it is being restored.
    master.client().call(&[b"SET", b"b", b"2"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    assert!(
        !s.path("backups/meta/2").exists(),
        "backup 2 was not purged"
    );

    wait_until(GENEROUS, "backup 3 applied", || {
        follower.info_num("rkv_applied_backup_id") == 3
    });
    assert_eq!(get(&follower, "b"), Some(bulk("2")));
    assert!(matches!(
        get(&follower, "big:000000:00"),
        Some(Reply::Bulk(Some(_)))
    ));
    assert_eq!(follower.info("rkv_last_error").as_deref(), Some(""));
}

#[test]
fn stale_reads_are_served_but_reported_by_default() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &["--max-staleness", "1s"]);
    set_and_replicate(&master, &follower, "k", "v");
    wait_until(GENEROUS, "the staleness measured", || {
        follower.info("healthy").as_deref() == Some("1")
    });
    assert_eq!(master.stop(), Some(0));
    wait_until(GENEROUS, "the follower to report itself unhealthy", || {
        follower.info("healthy").as_deref() == Some("0")
    });
    // --stale-reads serve (the default): old data, answered.
    assert_eq!(get(&follower, "k"), Some(bulk("v")));
    assert_eq!(follower.info("rkv_stale_reads").as_deref(), Some("serve"));
    assert!(follower.info_num("rkv_staleness_ms") > 1000);
}

#[test]
fn json_logs_carry_the_apply_as_fields() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &["--log-format", "json"]);
    set_and_replicate(&master, &follower, "k", "v");
    let log = follower.log();
    let applied = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "applied backup")
        .unwrap_or_else(|| panic!("no applied-backup line in:\n{log}"));
    let fields = &applied["fields"];
    assert_eq!(fields["backup_id"], 1);
    assert!(fields["bytes_copied"].as_u64().unwrap() > 0, "{applied}");
    assert!(fields["duration_ms"].is_u64(), "{applied}");
}

#[test]
fn a_long_bootstrap_logs_its_progress() {
    let s = Sandbox::new();
    // One backup, on SAVE: none as the log grows past the database.
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--interval", "0", "--log-backup-ratio", "0"],
    );
    fill(&master, "big", 8);
    master.client().call(&[b"SAVE"]).unwrap();
    // 8 MiB at 1 MiB/s: past the first 5 s report.
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &SLOW_RESTORE);
    wait_until(GENEROUS, "the bootstrap applied", || {
        follower.info_num("rkv_applied_backup_id") == 1
    });
    let log = follower.log();
    let line = log
        .lines()
        .find(|l| l.contains("bootstrap: restoring backup 1:"))
        .unwrap_or_else(|| panic!("no progress line in:\n{log}"));
    assert!(
        line.contains("MiB of 8.") && line.contains("%") && line.contains("files"),
        "{line}"
    );
    // Only a bootstrap reports: a small incremental apply says nothing.
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    serves(&follower, "k", "v");
    assert_eq!(
        follower.log().matches("restoring backup").count(),
        log.matches("restoring backup").count()
    );
}

/// A probe that knows the true age of what a follower serves: a writer
/// records when each write was acknowledged (on this host's clock, the
/// daemons' too), and a reader pipelines INFO then GET: data that holds
/// writes up to `n` is at least as old as the acknowledgment of `n + 1`.
/// The reported staleness must never be below that, including right after
/// the follower restarts (when it knows nothing of the master's clock yet,
/// and so may claim no age at all, but never a small one).
#[test]
fn reported_staleness_is_never_below_the_true_age_across_restarts() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "300ms"]);
    let flags = ["--poll-interval", "200ms"];
    let mut follower = Daemon::follower(&s.path("backups"), &s.path("f"), &flags);

    let acked: Arc<std::sync::Mutex<Vec<std::time::SystemTime>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let mut c = master.client();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = n.to_string();
                c.call(&[b"SET", b"last", v.as_bytes()]).unwrap();
                acked.lock().unwrap().push(std::time::SystemTime::now());
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (mut checked, mut unknown, mut worst_margin) = (0u64, 0u64, i64::MAX);
    for round in 0..4 {
        if round > 0 {
            follower.stop();
            follower = Daemon::follower(&s.path("backups"), &s.path("f"), &flags);
        }
        let mut c = follower.client();
        let round_started = Instant::now();
        let mut round_checked = 0;
        while round_checked < 100 || round_started.elapsed() < Duration::from_secs(3) {
            assert!(
                round_started.elapsed() < GENEROUS,
                "round {round}: {round_checked} reads checked in {GENEROUS:?}"
            );
            let sent = std::time::SystemTime::now();
            let replies = c
                .pipeline(&[
                    vec![b"INFO".as_slice(), b"replication"],
                    vec![b"GET", b"last"],
                ])
                .unwrap();
            let Reply::Bulk(Some(info)) = &replies[0] else {
                panic!("{:?}", replies[0])
            };
            let info = String::from_utf8_lossy(info);
            let staleness = info
                .lines()
                .find_map(|l| l.strip_prefix("rkv_staleness_ms:"))
                .map(str::trim)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|ms| *ms >= 0); // -1: unknown
            let Reply::Bulk(Some(last)) = &replies[1] else {
                std::thread::sleep(Duration::from_millis(5));
                continue; // nothing served yet
            };
            let served: usize = String::from_utf8_lossy(last).parse().unwrap();
            let Some(staleness) = staleness else {
                unknown += 1;
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            // The first write the served data lacks, if any was acknowledged
            // before the read was sent.
            let next = acked.lock().unwrap().get(served + 1).copied();
            if let Some(next) = next.filter(|t| *t < sent) {
                let true_age = sent.duration_since(next).unwrap().as_millis() as i64;
                assert!(
                    staleness >= true_age,
                    "round {round}: staleness {staleness} ms reported for data {true_age} ms \
                     old (serving last={served})"
                );
                worst_margin = worst_margin.min(staleness - true_age);
            }
            checked += 1;
            round_checked += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        checked >= 400,
        "{checked} reads checked, {unknown} of unknown age"
    );
    eprintln!(
        "{checked} reads checked across 3 restarts ({unknown} of unknown age); the closest \
         reported staleness was {worst_margin} ms above the true age"
    );
}
