//! The live tail as a user sees it: writes reach followers between
//! backups through the log, whole and in order, across follower crashes;
//! and `--log-interval 0` keeps followers on backups alone.

use std::sync::atomic::{AtomicBool, Ordering};

use rkv::resp::Reply;

use crate::util::{backup_flag, db_flag, rkv, serves, wait_until, Daemon, Sandbox, GENEROUS};

/// A master backing up on request only (so only the log can bring writes
/// between), with a first backup taken, and a follower of it.
fn pair(s: &Sandbox, master_flags: &[&str]) -> (Daemon, Daemon) {
    let mut flags = vec!["--interval", "0"];
    flags.extend_from_slice(master_flags);
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &flags);
    master.client().call(&[b"SET", b"boot", b"1"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f1"),
        &["--poll-interval", "1s"],
    );
    serves(&follower, "boot", "1");
    (master, follower)
}

/// Sets its flag when dropped: a thread looping until the flag stops even
/// when the test's own thread panics (a scope waits for its threads).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn int(reply: &Reply) -> Option<i64> {
    match reply {
        Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Reads `x` and `y` on the follower until `done`, checking that every
/// read sees both halves of a transaction (x == y) and never a value going
/// back; returns how many reads it made.
fn check_reads(follower: &Daemon, done: &AtomicBool) -> u64 {
    let mut client = follower.client();
    let mut last = 0;
    let mut reads = 0;
    while !done.load(Ordering::Relaxed) {
        let Reply::Array(Some(values)) = client.call(&[b"MGET", b"x", b"y"]).unwrap() else {
            panic!("MGET answers an array");
        };
        let (x, y) = (int(&values[0]).unwrap_or(0), int(&values[1]).unwrap_or(0));
        assert_eq!(x, y, "a read saw half a transaction");
        assert!(x >= last, "a read went back in time: {x} after {last}");
        last = x;
        reads += 1;
    }
    reads
}

#[test]
fn transactions_reach_a_follower_whole_and_in_order_through_the_log() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &[]);
    let done = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let reader = scope.spawn(|| check_reads(&follower, &done));
        let _stop_reader = SetOnDrop(&done);
        let mut c = master.client();
        for i in 1..=300 {
            let i = i.to_string();
            let replies = c
                .pipeline(&[
                    vec![&b"MULTI"[..]],
                    vec![&b"SET"[..], &b"x"[..], i.as_bytes()],
                    vec![&b"SET"[..], &b"y"[..], i.as_bytes()],
                    vec![&b"EXEC"[..]],
                ])
                .unwrap();
            assert!(!matches!(replies[3], Reply::Error(_)), "{replies:?}");
        }
        serves(&follower, "x", "300");
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(reads > 0);
    // No backup brought them: the follower serves the first one still.
    assert_eq!(follower.info_num("rkv_applied_backup_id"), 1);
    assert!(follower.info_num("rkv_log_batches_applied") >= 1);
    assert_eq!(
        follower.info_num("rkv_applied_seq"),
        master.info_num("master_repl_offset")
    );
    assert!(master.info_num("rkv_log_segments") >= 1);
    assert_eq!(master.info_num("rkv_backups_done"), 1);
}

/// `x` and `y` on the follower, checked: both halves of a transaction.
fn read_pair(follower: &Daemon) -> i64 {
    let Reply::Array(Some(values)) = follower.client().call(&[b"MGET", b"x", b"y"]).unwrap() else {
        panic!("MGET answers an array");
    };
    let (x, y) = (int(&values[0]).unwrap_or(0), int(&values[1]).unwrap_or(0));
    assert_eq!(x, y, "a read saw half a transaction");
    x
}

#[test]
fn a_follower_killed_while_it_applies_resumes_at_exactly_the_next_batch() {
    let s = Sandbox::new();
    let (master, mut follower) = pair(&s, &[]);
    let done = AtomicBool::new(false);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut c = master.client();
            let mut written = 0;
            while !done.load(Ordering::Relaxed) {
                let replies = c
                    .pipeline(&[
                        vec![&b"MULTI"[..]],
                        vec![&b"INCR"[..], &b"x"[..]],
                        vec![&b"INCR"[..], &b"y"[..]],
                        vec![&b"EXEC"[..]],
                    ])
                    .unwrap();
                assert!(!matches!(replies[3], Reply::Error(_)), "{replies:?}");
                written += 1;
            }
            written
        });
        let _stop_writer = SetOnDrop(&done);
        // Killed while the writes stream in, wherever it is in the log;
        // started again on its data, it never serves less than before.
        let mut seen = 0;
        for round in 0..8 {
            wait_until(GENEROUS, "the follower applying the stream", || {
                let x = read_pair(&follower);
                assert!(
                    x >= seen,
                    "round {round}: {x} after {seen}: a value went back"
                );
                seen = x;
                x >= 50 * (round + 1)
            });
            follower.signal(libc::SIGKILL);
            let _ = follower.wait();
            follower = Daemon::follower(
                &s.path("backups"),
                &s.path("f1"),
                &["--poll-interval", "1s"],
            );
            let x = read_pair(&follower);
            assert!(
                x >= seen,
                "round {round}: restarted at {x}, had served {seen}"
            );
            seen = x;
        }
        done.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    serves(&follower, "x", &written.to_string());
    assert_eq!(read_pair(&follower), written);
    assert_eq!(
        follower.info_num("rkv_applied_seq"),
        master.info_num("master_repl_offset")
    );
    assert_eq!(follower.info_num("rkv_applied_backup_id"), 1);
}

#[test]
fn with_the_log_off_followers_follow_backups_alone() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s, &["--log-interval", "0"]);
    assert_eq!(master.info_num("rkv_log_shipping"), 0);
    master.client().call(&[b"SET", b"a", b"1"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    serves(&follower, "a", "1");
    assert_eq!(follower.info_num("rkv_applied_backup_id"), 2);
    assert_eq!(follower.info_num("rkv_log_batches_applied"), 0);
    let segments = std::fs::read_dir(s.path("backups/log")).map_or(0, |d| d.count());
    assert_eq!(segments, 0, "the master shipped a log it was told not to");
    wait_until(GENEROUS, "the follower healthy", || {
        follower.info("healthy").as_deref() == Some("1")
    });
}

/// Sets `k` on the master and waits until the log shipped it; returns the
/// master's sequence number after it.
fn write_shipped(master: &Daemon, value: &str) -> i64 {
    master
        .client()
        .call(&[b"SET", b"k", value.as_bytes()])
        .unwrap();
    let seq = master.info_num("master_repl_offset");
    wait_until(GENEROUS, "the log to ship the write", || {
        master.info_num("rkv_log_shipped_seq") >= seq
    });
    seq
}

#[test]
fn a_restore_replays_the_log_to_a_sequence_number_or_a_time() {
    let s = Sandbox::new();
    let (master, _follower) = pair(&s, &[]);
    let first = write_shipped(&master, "1");
    let second = write_shipped(&master, "2");
    // Every write so far is in a segment cut before `between`; the next
    // one is shipped after it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let third = write_shipped(&master, "3");
    let backups = backup_flag(&s.path("backups"));

    let restored = |name: &str, point: &str| {
        let db = db_flag(&s.path(name));
        let out = rkv(&[&db, "restore", &backups, point]).ok();
        (rkv(&[&db, "get", "k"]).ok().trim().to_string(), out)
    };
    let (k, out) = restored("to-first", &format!("--seq={first}"));
    assert_eq!(k, "1", "{out}");
    assert!(
        out.contains(&format!("the writes up to sequence {first}")),
        "{out}"
    );
    assert_eq!(restored("to-second", &format!("--seq={second}")).0, "2");
    let (k, out) = restored("at-time", &format!("--at={between}"));
    assert_eq!(k, "2", "{out}");
    assert_eq!(restored("to-third", &format!("--seq={third}")).0, "3");

    // Past the log's end: said, with where the database stands.
    let db = db_flag(&s.path("too-far"));
    let past = (third + 100).to_string();
    rkv(&[&db, "restore", &backups, &format!("--seq={past}")]).fails(
        1,
        &[&format!("the log ends at sequence {third}, before {past}")],
    );

    // A plain restore, of the backup alone, says what the log holds past it.
    let db = db_flag(&s.path("backup-alone"));
    let out = rkv(&[&db, "restore", &backups]).ok();
    assert!(
        out.contains(&format!("restore with --seq={third} to have them too")),
        "{out}"
    );
    assert_eq!(rkv(&[&db, "get", "boot"]).ok().trim(), "1");

    let json = rkv(&["status", &backups, "--json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["log"]["last_seq"], third, "{json}");
    let status = rkv(&["status", &backups]).ok();
    assert!(
        status.contains(&format!("to {third} (cut")),
        "rkv status shows the log's range:\n{status}"
    );
}
