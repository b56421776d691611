//! `rkv promote`: a failover in one command. It refuses while the follower
//! runs, while the old master's lease is live and when a newer backup would
//! be lost; then the new master starts with the printed command, without
//! --take-over, serves the data and backs up, the other followers follow,
//! and the old master is refused if it comes back.

use std::path::Path;

use rkv::resp::Reply;

use crate::util::{
    backup_flag, bulk, db_flag, get, refused, rkv, serves, wait_until, Daemon, Sandbox, GENEROUS,
};

fn set(d: &Daemon, key: &str, value: &str) -> Reply {
    d.client()
        .call_raw(&[b"SET", key.as_bytes(), value.as_bytes()])
        .unwrap()
}

fn follows(follower: &Daemon, value: &str) {
    serves(follower, "k", value);
}

/// `rkv --db=DB promote --data=DATA --backup_dir=BACKUPS EXTRA…`.
fn promote(db: &Path, data: &Path, backups: &Path, extra: &[&str]) -> crate::util::Run {
    let data = format!("--data={}", data.display());
    let mut args = vec![db_flag(db), "promote".into(), data, backup_flag(backups)];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rkv(&args)
}

/// The flags of the `rkv-master` command promote printed.
fn printed_command(stdout: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("rkv-master "))
        .unwrap_or_else(|| panic!("no rkv-master command in\n{stdout}"));
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn promote_checks_then_hands_the_backup_dir_to_the_new_master() {
    let s = Sandbox::new();
    let backups = s.path("backups");
    let old_db = s.path("old");
    let master = Daemon::master(&old_db, &backups, &["--interval", "200ms"]);
    let poll = ["--poll-interval", "100ms"];
    let laggard = Daemon::follower(&backups, &s.path("follower-eu1"), &poll);
    let chosen = Daemon::follower(&backups, &s.path("follower-eu2"), &poll);
    let other = Daemon::follower(&backups, &s.path("follower-eu3"), &poll);
    set(&master, "k", "v1");
    follows(&laggard, "v1");
    let new_db = s.path("new");

    // A running follower's data is never copied.
    promote(&new_db, &s.path("follower-eu1"), &backups, &[])
        .fails(1, &["is running on", "systemctl stop rkv-follower@eu1"]);
    laggard.stop();
    set(&master, "k", "v2");
    follows(&chosen, "v2");
    follows(&other, "v2");
    chosen.stop();

    // The old master is alive: refused, with the flag that names the risk.
    promote(&new_db, &s.path("follower-eu2"), &backups, &[]).fails(
        1,
        &["is running: it renewed its lease", "--fence-live-master"],
    );
    assert!(!new_db.exists(), "nothing is copied when a check refuses");

    // Its host is lost.
    master.kill();
    // The laggard lacks v2, which a backup holds.
    promote(&new_db, &s.path("follower-eu1"), &backups, &[]).fails(
        1,
        &["newer than this follower's", "--discard-newer-backups"],
    );
    assert!(!new_db.exists());

    let out = promote(&new_db, &s.path("follower-eu2"), &backups, &[]).ok();
    for needle in [
        "checked:  no rkv-follower runs on",
        "is not running (its lease was not renewed",
        "copied:",
        "hard-linked",
        "opens read-write",
        "recorded: the backup directory",
        "superseded",
        "systemctl disable --now rkv-follower@eu2",
        "systemctl enable --now rkv-master",
    ] {
        assert!(out.contains(needle), "{needle} missing from\n{out}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&rkv(&["status", &backup_flag(&backups), "--json"]).ok()).unwrap();
    assert_eq!(status["owner"]["handed_over"], true, "{status}");
    assert_eq!(status["owner"]["lease_live"], false, "{status}");
    let old_label = status["owner"]["superseded"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(old_label.ends_with("/old"), "{status}");

    // The printed command, as printed: no --take-over needed.
    let printed = printed_command(&out);
    assert!(!printed.iter().any(|a| a == "--take-over"), "{printed:?}");
    let mut args = vec![env!("CARGO_BIN_EXE_rkv-master").to_string()];
    args.extend(printed);
    args.extend(["--listen", "127.0.0.1:0", "--interval", "200ms"].map(String::from));
    let new_master = Daemon::start_argv(&args, &[], &new_db);
    assert_eq!(get(&new_master, "k"), Some(bulk("v2")));
    assert_eq!(set(&new_master, "k", "v3"), Reply::Simple("OK".into()));
    // The other follower follows the new master without a restart.
    follows(&other, "v3");

    // The old master comes back: refused, however stale its lease.
    let old_master_refused = || {
        let (db, backups) = (old_db.to_str().unwrap(), backups.to_str().unwrap());
        let args = [
            "--db",
            db,
            "--backup-dir",
            backups,
            "--listen",
            "127.0.0.1:0",
        ];
        refused(env!("CARGO_BIN_EXE_rkv-master"), &args, 1)
    };
    let stderr = old_master_refused();
    assert!(stderr.contains("another rkv-master"), "{stderr}");
    new_master.stop();
    let stderr = old_master_refused();
    assert!(
        stderr.contains("superseded by a promotion") && stderr.contains("--take-over"),
        "{stderr}"
    );
    // The new master restarts as before: the list travels in its heartbeats.
    let restarted = Daemon::start_argv(&args, &[], &new_db);
    assert_eq!(get(&restarted, "k"), Some(bulk("v3")));
    let text = rkv(&["status", &backup_flag(&backups)]).ok();
    assert!(
        text.contains("superseded:") && text.contains(&old_label),
        "{text}"
    );
}

#[test]
fn promote_can_fence_a_live_master_when_told_to() {
    let s = Sandbox::new();
    let backups = s.path("backups");
    let master = Daemon::master(&s.path("old"), &backups, &["--interval", "200ms"]);
    let follower = Daemon::follower(&backups, &s.path("f1"), &["--poll-interval", "100ms"]);
    set(&master, "k", "v1");
    follows(&follower, "v1");
    follower.stop();
    let new_db = s.path("new");
    let out = promote(&new_db, &s.path("f1"), &backups, &["--fence-live-master"]).ok();
    assert!(out.contains("it will be fenced"), "{out}");
    // The old master stops backing up and refuses writes, which would be lost.
    wait_until(GENEROUS, "the old master fenced", || {
        master.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let reply = set(&master, "k", "lost");
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("READONLY")),
        "{reply:?}"
    );
    // It still holds the directory's lock on this host: the new master
    // starts once it is stopped.
    master.stop();
    let new_master = Daemon::master(&new_db, &backups, &["--interval", "200ms"]);
    assert_eq!(get(&new_master, "k"), Some(bulk("v1")));
}

#[test]
fn promote_refuses_what_is_not_a_stopped_followers_data() {
    let s = Sandbox::new();
    let not_data = s.path("nothing");
    std::fs::create_dir_all(&not_data).unwrap();
    let backups = s.path("backups");
    promote(&s.path("new"), &not_data, &backups, &[])
        .fails(1, &["is not an rkv-follower data directory"]);
    // A target that holds anything is never overwritten.
    let master = Daemon::master(&s.path("old"), &backups, &["--interval", "0"]);
    let follower = Daemon::follower(&backups, &s.path("f1"), &["--poll-interval", "100ms"]);
    set(&master, "k", "v1");
    master.client().call(&[b"SAVE"]).unwrap();
    follows(&follower, "v1");
    follower.stop();
    let occupied = s.path("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep-me"), "x").unwrap();
    promote(&occupied, &s.path("f1"), &backups, &[]).fails(1, &["not empty"]);
    assert!(occupied.join("keep-me").exists());
    // Never inside the follower's data (which a follower clears) or the
    // backup directory.
    for inside in [s.path("f1").join("master"), backups.join("db")] {
        promote(&inside, &s.path("f1"), &backups, &[]).fails(1, &["is inside"]);
        assert!(!inside.exists());
    }
    // A backup directory that is not there is an error, not a new one.
    promote(&s.path("new"), &s.path("f1"), &s.path("typo"), &[]).fails(1, &["typo"]);
    assert!(!s.path("typo").exists());
    // A data directory whose generation is gone, or says nothing of its
    // backup.
    let broken = s.path("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::os::unix::fs::symlink("gen-000001", broken.join("current")).unwrap();
    promote(&s.path("new"), &broken, &backups, &[]).fails(1, &["holds no complete generation"]);
    std::fs::create_dir(broken.join("gen-000001")).unwrap();
    promote(&s.path("new"), &broken, &backups, &[]).fails(
        1,
        &[
            "no readable rkv-generation.json",
            "Try: promote another follower",
        ],
    );
    assert!(!s.path("new").exists());

    // Without --backup_dir nothing is checked or recorded there: the new
    // master gets a backup directory of its own.
    let data = format!("--data={}", s.path("f1").display());
    let out = rkv(&[&db_flag(&s.path("alone")), "promote", &data]).ok();
    assert!(
        out.contains("No --backup-dir was given") && out.contains("--backup-dir NEW_BACKUP_DIR"),
        "{out}"
    );
    let heartbeat = std::fs::read(backups.join("rkv-heartbeat.json")).unwrap();
    assert!(!String::from_utf8_lossy(&heartbeat).contains("handover"));
    let alone = Daemon::master(
        &s.path("alone"),
        &s.path("new-backups"),
        &["--interval", "0"],
    );
    assert_eq!(get(&alone, "k"), Some(bulk("v1")));

    // Without --db: a usage error.
    rkv(&["promote", &format!("--data={}", s.path("f1").display())])
        .fails(2, &["needs the database"]);
}

#[test]
fn promoting_a_laggard_on_purpose_makes_every_follower_serve_the_new_masters_data() {
    let s = Sandbox::new();
    let backups = s.path("backups");
    let master = Daemon::master(&s.path("old"), &backups, &["--interval", "200ms"]);
    let poll = ["--poll-interval", "100ms"];
    let laggard = Daemon::follower(&backups, &s.path("laggard"), &poll);
    let other = Daemon::follower(&backups, &s.path("other"), &poll);
    set(&master, "k", "v1");
    follows(&laggard, "v1");
    laggard.stop();
    set(&master, "k", "v2");
    follows(&other, "v2");
    // A backup holds v2 (the log brought it to the other follower before
    // the interval's backup would have).
    master.client().call(&[b"SAVE"]).unwrap();
    master.kill();

    let new_db = s.path("new");
    let run = promote(
        &new_db,
        &s.path("laggard"),
        &backups,
        &["--discard-newer-backups"],
    );
    run.ok();
    assert!(
        run.stderr()
            .contains("--discard-newer-backups: promoting it anyway"),
        "{}",
        run.stderr()
    );
    // The new master holds v1; the newest backup held v2. Its first backup
    // comes at once, so no follower keeps serving what it lacks.
    let new_master = Daemon::master(&new_db, &backups, &["--interval", "200ms"]);
    assert_eq!(get(&new_master, "k"), Some(bulk("v1")));
    follows(&other, "v1");
}
