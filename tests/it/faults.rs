//! The faults an operator meets, each as a process test named for the
//! failure it pins: retention shorter than a restore, damaged files in the
//! backup directory, two masters on one directory, a replaced directory,
//! skewed clocks, a full database disk, a stalled filesystem, and an idle
//! follower that must stay idle.

use std::path::Path;
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::util::{
    fill, get, incompressible, partials, refused, run_bin, serves, serves_fresh, wait_until,
    Daemon, Sandbox, GENEROUS, REFUSE_AFTER_3S, SLOW_RESTORE,
};

fn set(d: &Daemon, key: &str, value: &str) -> Reply {
    d.client()
        .call_raw(&[b"SET", key.as_bytes(), value.as_bytes()])
        .unwrap()
}

fn shared_ssts(backups: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(backups.join("shared_checksum"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    files
}

#[test]
fn retention_shorter_than_a_restore_says_why_and_leaks_no_partial() {
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        // Backups on the timer alone: one as the log grows would make
        // the first backup smaller than the restore this test needs.
        &[
            "--interval",
            "1s",
            "--keep",
            "1",
            "--keep-within",
            "10s",
            "--log-backup-ratio",
            "0",
        ],
    );
    fill(&master, "big", 16);
    // A follower restoring at 1 MiB/s, one file at a time, needs 16 s:
    // every backup it starts is purged 10 s after it was made, and its own
    // files with it. (Side by side, the small files are copied first and
    // the race is rarer, not gone: what is measured here is what the
    // follower says when it loses.)
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &SLOW_RESTORE);
    let started = Instant::now();
    let mut most_partials = 0;
    let mut n = 0;
    while started.elapsed() < GENEROUS {
        set(&master, "tick", &n.to_string());
        n += 1;
        most_partials = most_partials.max(partials(&s.path("f1")));
        let error = follower.info("rkv_last_error").unwrap_or_default();
        if error.contains("--keep-within") && error.contains("in a row") {
            eprintln!("after {:?}: {error}", started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let error = follower.info("rkv_last_error").unwrap_or_default();
    assert!(
        error.contains("purged") && error.contains("raise --keep-within"),
        "{error:?}"
    );
    assert!(
        error.contains("10s"),
        "names the master's --keep-within: {error}"
    );
    assert!(
        most_partials <= 1,
        "{most_partials} partial generations at once"
    );
    assert!(follower.log().contains("raise --keep-within"));

    // And the master refuses retention too short to protect any restore.
    let stderr = refused(
        env!("CARGO_BIN_EXE_rkv-master"),
        &[
            "--db",
            &s.path("db2").display().to_string(),
            "--backup-dir",
            &s.path("b2").display().to_string(),
            "--keep-within",
            "2s",
        ],
        2,
    );
    assert!(stderr.contains("at least 10s"), "{stderr}");
}

/// A master that scrubs fast, a first follower, and data in an SST file.
fn damaged_setup(s: &Sandbox, scrub: &str) -> (Daemon, Daemon) {
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--interval", "200ms", "--scrub-interval", scrub],
    );
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms"],
    );
    fill(&master, "data", 2);
    master.client().call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "the data replicated", || {
        matches!(get(&follower, "data:000000:00"), Some(Reply::Bulk(Some(_))))
    });
    (master, follower)
}

/// A new follower must get the damaged file's data: the master heals it.
fn a_new_follower_gets_everything(s: &Sandbox, master: &Daemon) {
    set(master, "after", "damage");
    let f2 = Daemon::follower(
        &s.path("backups"),
        &s.path("f2"),
        &["--poll-interval", "100ms"],
    );
    serves(&f2, "after", "damage");
    let mut c = f2.client();
    for batch in [0, 15, 31] {
        let key = format!("data:{batch:06}:07");
        let reply = c.call_raw(&[b"GET", key.as_bytes()]).unwrap();
        assert!(matches!(reply, Reply::Bulk(Some(_))), "{key}: {reply:?}");
    }
    assert!(master.info_num("rkv_damaged_files_found") >= 1);
    assert!(master
        .log()
        .contains("damaged file in the backup directory"));
}

#[test]
fn a_flipped_byte_in_a_shared_sst_is_found_by_the_scrub_and_healed() {
    let s = Sandbox::new();
    let (master, _follower) = damaged_setup(&s, "200ms");
    let sst = shared_ssts(&s.path("backups")).pop().unwrap();
    // In place, one byte: rewriting the whole file would truncate it first,
    // and a scrub reading in between would find a short file instead.
    let bytes = std::fs::read(&sst).unwrap();
    let middle = bytes.len() / 2;
    let file = std::fs::OpenOptions::new().write(true).open(&sst).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &[bytes[middle] ^ 0x01], middle as u64).unwrap();
    wait_until(GENEROUS, "the damage found", || {
        master.info_num("rkv_damaged_files_found") >= 1
    });
    let damage = master.info("rkv_last_damage").unwrap();
    assert!(
        damage.contains(".sst") && damage.contains("crc32c"),
        "{damage}"
    );
    a_new_follower_gets_everything(&s, &master);
}

#[test]
fn a_truncated_shared_sst_does_not_fail_every_later_backup() {
    let s = Sandbox::new();
    // No scrub: the next backup meets the damaged file itself.
    let (master, _follower) = damaged_setup(&s, "0");
    let sst = shared_ssts(&s.path("backups")).pop().unwrap();
    let len = std::fs::metadata(&sst).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sst)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    a_new_follower_gets_everything(&s, &master);
    // The backup after the damage went through: its error is cleared.
    set(&master, "one", "more");
    assert_eq!(master.client().call(&[b"SAVE"]).unwrap(), Reply::ok());
    assert_eq!(master.info("rkv_last_backup_error").as_deref(), Some(""));
}

#[test]
fn a_second_master_on_one_backup_dir_is_refused_and_a_take_over_is_explicit() {
    let s = Sandbox::new();
    let a = Daemon::master(&s.path("a"), &s.path("backups"), &["--interval", "200ms"]);
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms"],
    );
    set(&a, "who", "a");
    serves(&follower, "who", "a");
    let start_b = |extra: &[&str]| {
        let mut args = vec![
            "--db".to_string(),
            s.path("b").display().to_string(),
            "--backup-dir".to_string(),
            s.path("backups").display().to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_bin(env!("CARGO_BIN_EXE_rkv-master"), &args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Same host: the lock refuses it at once, naming the owner.
    let (code, stderr) = start_b(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another rkv-master is using"), "{stderr}");
    // A filesystem whose locks do not work across hosts: the lease does.
    std::fs::remove_file(s.path("backups/rkv-master.lock")).unwrap();
    let (code, stderr) = start_b(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("keeps renewing its heartbeat"), "{stderr}");

    // The first master dies: its backups are another database's, so the
    // second needs --take-over, and then followers switch to it.
    a.kill();
    let (code, stderr) = start_b(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("of another database") && stderr.contains("--take-over"),
        "{stderr}"
    );
    let b = Daemon::master(
        &s.path("b"),
        &s.path("backups"),
        &["--interval", "200ms", "--take-over"],
    );
    set(&b, "who", "b");
    serves(&follower, "who", "b");
    assert!(follower.log().contains("another database's backups"));
    assert_eq!(follower.info("rkv_lineage_change").as_deref(), Some(""));
    assert_eq!(follower.info("healthy").as_deref(), Some("1"));

    // Another master takes the directory from a running one: the running
    // one stops backing up and refuses writes instead of losing them.
    let heartbeat = s.path("backups/rkv-heartbeat.json");
    let mut stolen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&heartbeat).unwrap()).unwrap();
    stolen["token"] = "someone-else".into();
    stolen["master"] = "elsewhere:/db".into();
    // Rewritten until b sees it, as `rkv promote` does: in a directory, a
    // write between b's read of the heartbeat and its rewrite is lost.
    wait_until(GENEROUS, "b fenced", || {
        std::fs::write(&heartbeat, stolen.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        b.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let reply = set(&b, "k", "v");
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("READONLY") && e.contains("elsewhere")),
        "{reply:?}"
    );
}

#[test]
fn a_replaced_backup_dir_makes_the_follower_rebootstrap_not_serve_old_data() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "100ms", "--max-staleness", "30s"],
    );
    for i in 1..=6 {
        set(&master, "k", &format!("old{i}"));
        master.client().call(&[b"SAVE"]).unwrap();
    }
    serves(&follower, "k", "old6");
    assert_eq!(master.stop(), Some(0));

    // The operator starts over: a new database at the same path, and a new
    // backup directory where the old one was. Ids restart at 1.
    std::fs::remove_dir_all(s.path("db")).unwrap();
    std::fs::remove_dir_all(s.path("backups")).unwrap();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    set(&master, "k", "new1");
    master.client().call(&[b"SAVE"]).unwrap();
    serves(&follower, "k", "new1");
    assert_eq!(follower.info_num("rkv_applied_backup_id"), 1);
    assert!(follower.log().contains("re-bootstrapping"));
    wait_until(GENEROUS, "healthy again", || {
        follower.info("healthy").as_deref() == Some("1")
    });
}

/// libfaketime's preload library, when Debian's `faketime` is installed.
fn libfaketime() -> Option<String> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

#[test]
fn staleness_holds_with_the_masters_clock_hours_off() {
    let Some(lib) = libfaketime() else {
        eprintln!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    for skew in ["+2h", "-2h"] {
        let s = Sandbox::new();
        let env = [
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", skew),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let master = Daemon::master_with_env(
            &s.path("db"),
            &s.path("backups"),
            &["--interval", "200ms"],
            &env,
        );
        let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &REFUSE_AFTER_3S);
        set(&master, "k", "v");
        serves(&follower, "k", "v");
        // Past the first heartbeats, the master's clock being off must not
        // make fresh data look stale: healthy, and fresh by the bound.
        std::thread::sleep(Duration::from_secs(2));
        serves_fresh(&follower, "k", "v", 3000);
        let skew_ms = follower.info_num("rkv_master_clock_skew_ms");
        let expected = if skew.starts_with('+') {
            7_200_000
        } else {
            -7_200_000
        };
        assert!(
            (skew_ms - expected).abs() < 5_000,
            "skew {skew_ms} for {skew}"
        );

        master.kill();
        let died = Instant::now();
        wait_until(
            GENEROUS,
            "stale reads refused",
            || matches!(get(&follower, "k"), Some(Reply::Error(e)) if e.starts_with("MASTERDOWN")),
        );
        // Refused because the data is older than the bound, by the
        // follower's own clock: neither early nor hours off.
        let staleness = follower.info_num("rkv_staleness_ms");
        let most = died.elapsed().as_millis() as i64 + 3000 + 60_000;
        assert!(
            (3000..most).contains(&staleness),
            "clock {skew}: refused at a staleness of {staleness} ms"
        );
    }
}

#[test]
fn a_full_database_disk_recovers_by_itself_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let s = Sandbox::new();
    let Some(disk) = crate::tmpfs::Tmpfs::mount(&s.path("disk"), "400m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    };
    let master = Daemon::master(
        &s.path("disk/db"),
        &s.path("backups"),
        &["--interval", "1s"],
    );
    set(&master, "before", "full");
    // Fill the disk but for a little, then write until RocksDB refuses.
    let filler = disk.fill(2 << 20);
    // Incompressible values: RocksDB preallocates its log, and a flush of
    // compressible data would still fit.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut acknowledged = Vec::new();
    let mut refused = None;
    let mut c = master.client();
    for i in 0..6000 {
        let value = incompressible(64 << 10, &mut x);
        match c
            .call_raw(&[b"SET", format!("k{i}").as_bytes(), &value])
            .unwrap()
        {
            Reply::Simple(_) => acknowledged.push(i),
            Reply::Error(e) => {
                refused = Some(e);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let refused = refused.expect("the full disk never refused a write");
    assert!(refused.contains("No space left"), "{refused}");
    wait_until(GENEROUS, "read-only reported", || {
        master.info("rkv_db_writable").as_deref() == Some("0")
    });

    std::fs::remove_file(&filler).unwrap();
    wait_until(GENEROUS, "writes accepted again", || {
        matches!(set(&master, "after", "space"), Reply::Simple(_))
    });
    wait_until(GENEROUS, "writable reported", || {
        master.info("rkv_db_writable").as_deref() == Some("1")
    });
    assert!(master.log().contains("accepts writes again"));
    // Nothing acknowledged is lost, and the final backup at exit holds it all.
    let mut c = master.client();
    for i in &acknowledged {
        let key = format!("k{i}");
        let reply = c.call_raw(&[b"GET", key.as_bytes()]).unwrap();
        assert!(matches!(reply, Reply::Bulk(Some(_))), "{key} lost");
    }
    assert_eq!(master.stop(), Some(0));
}

#[test]
fn a_stalled_backup_filesystem_does_not_block_info_or_save() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    set(&master, "k", "v");
    assert_eq!(master.client().call(&[b"SAVE"]).unwrap(), Reply::ok());
    // The heartbeat's temporary file becomes a FIFO: writing it blocks as
    // a hung NFS server would.
    let fifo = std::ffi::CString::new(
        s.path("backups/.rkv-heartbeat.json.tmp")
            .display()
            .to_string(),
    )
    .unwrap();
    // SAFETY: mkfifo on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Two heartbeat periods for the heartbeat to stall on it; then INFO and
    // SAVE must still answer (blocked behind it, they would wait forever).
    std::thread::sleep(Duration::from_secs(2));
    let answered = std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            assert!(master.info("rkv_backups_done").is_some());
            set(&master, "k", "w");
            master.client().call(&[b"SAVE"]).unwrap()
        });
        wait_until(
            GENEROUS,
            "INFO and SAVE to answer beside the stalled heartbeat",
            || asking.is_finished(),
        );
        asking.join().unwrap()
    });
    assert_eq!(answered, Reply::ok());
    master.kill();
}

#[test]
fn save_answers_only_once_a_backup_holds_the_writes_before_it() {
    let s = Sandbox::new();
    // Backups all the time: SAVE lands in every phase of the loop.
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "2ms"]);
    let mut c = master.client();
    for i in 0..300 {
        c.call(&[b"SET", b"k", i.to_string().as_bytes()]).unwrap();
        let written = master.info_num("master_repl_offset");
        assert_eq!(c.call(&[b"SAVE"]).unwrap(), Reply::ok());
        let saved = master.info_num("rkv_last_backup_seq");
        assert!(
            saved >= written,
            "round {i}: SAVE answered OK with seq {saved} backed up, {written} written"
        );
    }
}

#[test]
fn an_idle_follower_stays_idle() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "1s"]);
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &[]);
    set(&master, "k", "v");
    serves(&follower, "k", "v");
    // CPU time, not wall time: a busy machine delays the follower's polls
    // but does not make them cost more. Idle, it needs well under 1% of a
    // core; the bound (10%) leaves room for a loaded machine's cache misses
    // and still catches a loop that spins.
    let before = follower.cpu_time();
    std::thread::sleep(Duration::from_secs(5));
    let used = follower.cpu_time() - before;
    eprintln!("an idle follower used {used:?} of CPU in 5 s");
    assert!(
        used < Duration::from_millis(500),
        "an idle follower used {used:?} of CPU in 5 s"
    );
}
