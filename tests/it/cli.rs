//! The `rkv` CLI in local mode: ldb's syntax and output, backups, and every
//! error a user will hit, with its exit code and sentence.

use crate::util::{backup_flag, corrupt_private_manifest, db_flag, rkv, rkv_bin, Sandbox};

#[test]
fn put_backup_restore_get_with_binary_keys() {
    let s = Sandbox::new();
    let (db, backups, restored) = (s.path("db"), s.path("backups"), s.path("restored"));
    let (db, backups, restored) = (db_flag(&db), backup_flag(&backups), db_flag(&restored));

    assert_eq!(
        rkv(&[
            &db,
            "--create_if_missing",
            "--hex",
            "put",
            "0x00FF0A",
            "0x0102"
        ])
        .ok(),
        "OK\n"
    );
    assert_eq!(rkv(&[&db, "put", "user:1", "Alice"]).ok(), "OK\n");
    let out = rkv(&[&db, "backup", &backups]).ok();
    assert!(out.starts_with("OK: backup 1 created"), "{out}");

    let out = rkv(&[&restored, "restore", &backups]).ok();
    assert!(out.starts_with("OK: restored backup 1"), "{out}");
    assert_eq!(
        rkv(&[&restored, "--hex", "get", "0x00FF0A"]).ok(),
        "0x0102\n"
    );
    assert_eq!(
        rkv(&[&restored, "--key_hex", "get", "0x757365723A31"]).ok(),
        "Alice\n"
    );
    assert_eq!(
        rkv(&[&restored, "get", "user:1", "--value-hex"]).ok(),
        "0x416C696365\n"
    );
}

#[test]
fn delete_and_get_missing_key() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    rkv(&[&db, "--create_if_missing", "put", "k", "v"]).ok();
    assert_eq!(rkv(&[&db, "delete", "k"]).ok(), "OK\n");
    rkv(&[&db, "get", "k"]).fails(1, &["key not found: k"]);
    // Deleting an absent key is not an error, as in ldb.
    assert_eq!(rkv(&[&db, "delete", "k"]).ok(), "OK\n");
}

#[test]
fn scan_with_bounds_limit_and_hex() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        rkv(&[&db, "--create_if_missing", "put", k, v]).ok();
    }
    assert_eq!(rkv(&[&db, "scan"]).ok(), "a : 1\nb : 2\nc : 3\nd : 4\n");
    assert_eq!(
        rkv(&[&db, "scan", "--from=b", "--to=d"]).ok(),
        "b : 2\nc : 3\n"
    );
    assert_eq!(
        rkv(&[&db, "scan", "--from=b", "--max_keys=1"]).ok(),
        "b : 2\n"
    );
    assert_eq!(
        rkv(&[&db, "scan", "--to=0x62", "--hex"]).ok(),
        "0x61 : 0x31\n"
    );
    assert_eq!(
        rkv(&[&db, "scan", "--from=0x63", "--key_hex"]).ok(),
        "0x63 : 3\n0x64 : 4\n"
    );
}

#[test]
fn missing_db_without_create_if_missing() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("nope"));
    rkv(&[&db, "put", "k", "v"]).fails(
        1,
        &["no database at", "nope", "Try: pass --create_if_missing"],
    );
    rkv(&[&db, "get", "k"]).fails(1, &["no database at"]);
    assert!(
        !s.path("nope").exists(),
        "a failed put must not create the directory"
    );
}

#[test]
fn locked_db_is_reported_not_waited_on() {
    let s = Sandbox::new();
    let path = s.path("db");
    // This test process holds the database open read-write, as a daemon would.
    let held = rkv::db::Db::open(
        &path,
        rkv::db::OpenMode::ReadWrite {
            create_if_missing: true,
        },
    )
    .unwrap();
    held.put(b"k", b"v").unwrap();
    rkv(&[&db_flag(&path), "put", "k", "v2"]).fails(1, &["in use by another process"]);
    let backups = s.path("backups");
    rkv(&[&db_flag(&path), "backup", &backup_flag(&backups)])
        .fails(1, &["in use by another process"]);
    // Reads open the database read-only and need no lock.
    assert_eq!(rkv(&[&db_flag(&path), "get", "k"]).ok(), "v\n");
}

#[test]
fn bad_hex_is_a_usage_error() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    for bad in ["zz", "0x1", "0xZZ"] {
        rkv(&[&db, "--create_if_missing", "--hex", "put", bad, "0x00"])
            .fails(2, &["invalid hex string", "Try:"]);
    }
    rkv(&[
        &db,
        "--create_if_missing",
        "--value_hex",
        "put",
        "k",
        "nothex",
    ])
    .fails(2, &["must start with 0x"]);
    assert!(
        !s.path("db").exists(),
        "bad input must be rejected before the database is touched"
    );
}

#[test]
fn usage_errors_exit_2() {
    rkv(&["put", "k", "v"]).fails(2, &["--db=DIR"]);
    rkv(&["--db=/x", "frobnicate"]).fails(2, &["unrecognized subcommand"]);
    rkv(&["--db=/x", "get"]).fails(2, &["KEY"]);
    rkv(&["backups"]).fails(2, &["--backup_dir"]);
    let help = rkv(&["--help"]).ok();
    for word in [
        "put",
        "get",
        "delete",
        "scan",
        "backup",
        "restore",
        "backups",
        "verify",
        "Examples:",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    assert!(rkv(&["restore", "--help"]).ok().contains("--backup_id"));
}

#[test]
fn backup_dir_errors() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    let missing = backup_flag(&s.path("missing"));
    rkv(&[&db, "restore", &missing]).fails(1, &["no backup directory at", "missing"]);
    rkv(&["backups", &missing]).fails(1, &["no backup directory at"]);
    rkv(&["verify", &missing]).fails(1, &["no backup directory at"]);

    std::fs::create_dir(s.path("empty")).unwrap();
    let empty = backup_flag(&s.path("empty"));
    rkv(&[&db, "restore", &empty]).fails(1, &["holds no backups", "Try:"]);
    rkv(&["backups", &empty]).fails(1, &["holds no backups"]);
    assert_eq!(
        std::fs::read_dir(s.path("empty")).unwrap().count(),
        0,
        "reading wrote into the dir"
    );

    rkv(&[&db, "--create_if_missing", "put", "k", "v"]).ok();
    let backups = backup_flag(&s.path("backups"));
    rkv(&[&db, "backup", &backups]).ok();
    let target = db_flag(&s.path("r"));
    rkv(&[&target, "restore", &backups, "--backup_id=7"]).fails(
        1,
        &[
            "backup 7 does not exist",
            "Try: list the backups with `rkv backups",
        ],
    );
    rkv(&["verify", &backups, "--backup-id=7"]).fails(1, &["backup 7 does not exist"]);
}

#[test]
fn restore_into_a_db_in_use_is_refused() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    let backups = backup_flag(&s.path("backups"));
    rkv(&[&db, "--create_if_missing", "put", "k", "v"]).ok();
    rkv(&[&db, "backup", &backups]).ok();

    // A separate process must hold the lock: POSIX record locks are per process.
    let target = s.path("busy");
    rkv(&[&db_flag(&target), "--create_if_missing", "put", "mine", "1"]).ok();
    let mut holder = hold_lock(&target);
    rkv(&[&db_flag(&target), "restore", &backups])
        .fails(1, &["in use by another process", "restore into another"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(
        rkv(&[&db_flag(&target), "get", "mine"]).ok(),
        "1\n",
        "the busy database was touched"
    );
}

#[test]
fn backups_table_and_verify() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    let backups = backup_flag(&s.path("backups"));
    rkv(&[&db, "--create_if_missing", "put", "k1", "v"]).ok();
    rkv(&[&db, "backup", &backups]).ok();
    rkv(&[&db, "put", "k2", "v"]).ok();
    rkv(&[&db, "backup", &backups]).ok();

    let table = rkv(&["backups", &backups]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["ID", "CREATED (UTC)", "AGE", "SIZE", "FILES", "SEQ"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].trim_start().starts_with('1') && lines[2].trim_start().starts_with('2'));
    assert!(
        lines[2].ends_with(" 2"),
        "seq of backup 2 should be 2:\n{table}"
    );
    assert!(lines[2].contains('Z'), "creation time in UTC:\n{table}");

    let out = rkv(&["verify", &backups]).ok();
    assert!(out.starts_with("OK: backup 2 verified"), "{out}");
    rkv(&["verify", &backups, "--backup_id=1"]).ok();

    // Flip a byte in a file only backup 2 holds: verify names it and fails.
    corrupt_private_manifest(&s.path("backups"), 2);
    rkv(&["verify", &backups]).fails(1, &["backup 2 is corrupt", "MANIFEST", "Try:"]);
    rkv(&["verify", &backups, "--backup_id=1"]).ok();
}

#[test]
fn an_ldb_script_runs_unchanged() {
    let s = Sandbox::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/ldb_seed.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(s.root())
        .env("LDB", rkv_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.ends_with("Alice\nBob\n"), "{stdout}");
}

/// Starts a process that holds the RocksDB lock of `db` until killed: a
/// second `rkv` can only see the lock from another process.
fn hold_lock(db: &std::path::Path) -> std::process::Child {
    // `rkv` has no long-running local command yet, so the holder is a copy of
    // this test binary running the ignored `lock_holder` test below.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "cli::lock_holder", "--nocapture"])
        .env("RKV_TEST_HOLD_DB", db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("HOLDING") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "lock holder exited early");
    }
    child
}

#[test]
#[ignore = "helper process for restore_into_a_db_in_use_is_refused"]
fn lock_holder() {
    let Some(path) = std::env::var_os("RKV_TEST_HOLD_DB") else {
        return;
    };
    let _db = rkv::db::Db::open(
        path.as_ref(),
        rkv::db::OpenMode::ReadWrite {
            create_if_missing: false,
        },
    )
    .unwrap();
    println!("HOLDING");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

#[test]
fn commands_that_need_a_daemon_or_a_directory_say_so() {
    let s = Sandbox::new();
    let db = db_flag(&s.path("db"));
    rkv(&[&db, "--create_if_missing", "put", "k", "v"]).ok();
    rkv(&[&db, "info"]).fails(2, &["`info` asks a running daemon", "--connect=ADDR"]);
    rkv(&[
        "--connect=127.0.0.1:1",
        "restore",
        &backup_flag(&s.path("b")),
    ])
    .fails(
        2,
        &["restore, backups, status, verify and promote work on directories"],
    );
    // Nothing listens on port 1: the address is named and a next step given.
    rkv(&["--connect=127.0.0.1:1", "get", "k"])
        .fails(1, &["127.0.0.1:1", "Try: check that the daemon is running"]);
}

#[test]
fn restore_at_a_point_in_time_picks_the_newest_backup_at_or_before_it() {
    let s = Sandbox::new();
    let (db, backups) = (db_flag(&s.path("db")), backup_flag(&s.path("backups")));
    for (i, value) in ["v1", "v2", "v3"].iter().enumerate() {
        if i > 0 {
            // Backup times are kept to the millisecond; a clear gap.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        rkv(&[&db, "--create_if_missing", "put", "k", value]).ok();
        rkv(&[&db, "backup", &backups]).ok();
    }
    let listed: serde_json::Value =
        serde_json::from_str(&rkv(&["backups", &backups, "--json"]).ok()).unwrap();
    let created: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["created"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(created.len(), 3, "{listed}");
    assert_eq!(listed[2]["seq"], 3);

    // Exactly a backup's time picks it; a time between two, the older.
    let pick = |at: &str| {
        let one: serde_json::Value =
            serde_json::from_str(&rkv(&["backups", &backups, "--at", at, "--json"]).ok()).unwrap();
        one["id"].as_u64().unwrap()
    };
    assert_eq!(pick(&created[1]), 2);
    let between =
        humantime::parse_rfc3339(&created[1]).unwrap() + std::time::Duration::from_millis(500);
    assert_eq!(
        pick(&humantime::format_rfc3339_millis(between).to_string()),
        2
    );
    assert_eq!(pick("0s"), 3);
    let table = rkv(&["backups", &backups, "--at", &created[0]]).ok();
    assert_eq!(table.lines().count(), 2, "{table}");

    // Restored as it was then.
    let target = s.path("restored");
    let said = rkv(&[&db_flag(&target), "restore", &backups, "--at", &created[1]]).ok();
    assert!(said.contains("backup 2 (created"), "{said}");
    assert!(said.contains("is the newest at or before"), "{said}");
    assert_eq!(rkv(&[&db_flag(&target), "get", "k"]).ok(), "v2\n");

    // Before every retained backup: refused, naming the oldest.
    let before =
        humantime::parse_rfc3339(&created[0]).unwrap() - std::time::Duration::from_secs(60);
    let before = humantime::format_rfc3339_seconds(before).to_string();
    rkv(&[
        &db_flag(&s.path("none")),
        "restore",
        &backups,
        "--at",
        &before,
    ])
    .fails(
        1,
        &[
            "no backup was created at or before",
            "the oldest retained is backup 1",
        ],
    );
    assert!(!s.path("none").exists());
    rkv(&["backups", &backups, "--at", "yesterday"]).fails(2, &["neither an RFC 3339 time"]);
    rkv(&[
        &db_flag(&target),
        "restore",
        &backups,
        "--at",
        "1m",
        "--backup_id",
        "1",
    ])
    .fails(2, &["cannot be used with"]);
}

#[test]
fn status_describes_a_backup_directory_its_owner_and_what_fails_to_load() {
    let s = Sandbox::new();
    let (db, backups) = (db_flag(&s.path("db")), backup_flag(&s.path("backups")));
    for value in ["v1", "v2", "v3"] {
        rkv(&[&db, "--create_if_missing", "put", "k", value]).ok();
        rkv(&[&db, "backup", &backups]).ok();
    }
    let text = rkv(&["status", &backups]).ok();
    for needle in [
        "owner:        none",
        "newest:       backup 3, created 20",
        "seq 3",
        "retained:     3 backups, 1 to 3",
        "shared,",
        "unloadable:   none",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // A backup RocksDB cannot load is named, with why.
    let meta = s.path("backups").join("meta/3");
    let content = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &content[..content.len() / 2]).unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&rkv(&["status", &backups, "--json"]).ok()).unwrap();
    assert_eq!(status["owner"], serde_json::Value::Null);
    assert_eq!(status["retained"]["count"], 2, "{status}");
    assert_eq!(status["newest"]["id"], 2, "{status}");
    assert!(
        status["retained"]["shared_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(
        status["retained"]["private_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(status["unloadable"][0]["id"], 3, "{status}");

    // A running master owns its directory, its lease live.
    let m = crate::util::Daemon::master(&s.path("mdb"), &s.path("mbackups"), &["--interval", "0"]);
    m.client().call(&[b"SET", b"k", b"v"]).unwrap();
    m.client().call(&[b"SAVE"]).unwrap();
    // (Waited for: a busy machine may hold a heartbeat back past the lease.)
    crate::util::wait_for(crate::util::GENEROUS, "the lease shown live", || {
        let owned = rkv(&["status", &backup_flag(&s.path("mbackups"))]).ok();
        let json: serde_json::Value = serde_json::from_str(
            &rkv(&["status", &backup_flag(&s.path("mbackups")), "--json"]).ok(),
        )
        .unwrap();
        if owned.contains("pid")
            && owned.contains("lease live")
            && json["owner"]["lease_live"] == true
        {
            Ok(())
        } else {
            Err((owned, json))
        }
    });
    rkv(&["status", &backup_flag(&s.path("nothing"))]).fails(1, &["nothing"]);
}

/// Runs `rkv ARGS` on a pseudo-terminal (util-linux `script`), returning all
/// it wrote there.
fn on_a_terminal(args: &[&str]) -> String {
    let mut command = format!("'{}'", rkv_bin().display());
    for arg in args {
        assert!(!arg.contains('\''), "{arg}");
        command.push_str(&format!(" '{arg}'"));
    }
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("RKV_LOG")
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rkv {args:?} on a terminal failed:\n{text}"
    );
    text
}

#[test]
fn progress_bars_show_on_a_terminal_and_not_otherwise() {
    let s = Sandbox::new();
    let (db, backups) = (db_flag(&s.path("db")), backup_flag(&s.path("backups")));
    let big = "x".repeat(64 << 10);
    for i in 0..16 {
        rkv(&[&db, "--create_if_missing", "put", &format!("k{i}"), &big]).ok();
    }
    // Each bar ends at its total: bytes and files done of all.
    let backup = on_a_terminal(&[&db, "backup", &backups]);
    assert!(
        backup.contains("backup [") && backup.contains("OK: backup 1"),
        "{backup}"
    );
    let verify = on_a_terminal(&["verify", &backups]);
    let restore = on_a_terminal(&[&db_flag(&s.path("restored")), "restore", &backups]);
    for (text, bar) in [(&verify, "verify ["), (&restore, "restore [")] {
        assert!(text.contains(bar), "{text}");
        let last = text.split(['\r', '\n']).rfind(|l| l.contains(bar)).unwrap();
        let files = last
            .split("files ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let (done, total) = files.split_once('/').unwrap();
        assert_eq!(done, total, "{last}");
        assert!(last.contains("KiB/") && last.contains("left"), "{last}");
    }
    // --quiet, or no terminal: the result lines alone.
    let quiet = on_a_terminal(&["verify", &backups, "--quiet"]);
    assert!(
        !quiet.contains("verify [") && quiet.contains("OK: backup 1 verified"),
        "{quiet}"
    );
    for args in [
        vec!["verify", backups.as_str()],
        vec![&db, "backup", &backups],
    ] {
        let run = rkv(&args);
        run.ok();
        assert_eq!(run.stderr(), "", "{args:?}");
        assert!(!run.stdout().contains('['), "{}", run.stdout());
    }
}
