//! rkv-master as a process: writes over RESP and through `rkv`, the backup
//! loop, retention, signals, pipelining, malformed input, protected mode.

use std::io::{Read, Write};
use std::time::Duration;

use rkv::backup::{BackupDir, BackupSource};
use rkv::resp::Reply;

use crate::util::{
    backup_flag, bulk, db_flag, refused, rkv, run_bin, wait_until, Daemon, Sandbox, GENEROUS,
};

fn backups(s: &Sandbox) -> Vec<rkv::backup::BackupInfo> {
    BackupDir::new(s.path("backups")).list().unwrap_or_default()
}

#[test]
fn writes_over_resp_and_rkv_and_a_backup_follows_each_change() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "1s"]);
    let mut c = master.client();
    assert_eq!(c.call(&[b"SET", b"user:1", b"Alice"]).unwrap(), Reply::ok());
    assert_eq!(c.call(&[b"GET", b"user:1"]).unwrap(), bulk("Alice"));
    let connect = format!("--connect={}", master.addr);
    assert_eq!(rkv(&[&connect, "put", "user:2", "Bob"]).ok(), "OK\n");
    assert_eq!(rkv(&[&connect, "get", "user:1"]).ok(), "Alice\n");
    assert_eq!(c.call(&[b"GET", b"user:2"]).unwrap(), bulk("Bob"));

    wait_until(GENEROUS, "a backup after the writes", || {
        !backups(&s).is_empty()
    });
    wait_until(GENEROUS, "the backup to cover both writes", || {
        backups(&s)
            .last()
            .and_then(|b| b.metadata.clone())
            .is_some_and(|m| m.seq == 2)
    });
    let count = backups(&s).len();
    // Two quiet intervals: no empty backups.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        backups(&s).len(),
        count,
        "a backup was taken although nothing changed"
    );

    c.call(&[b"DEL", b"user:2"]).unwrap();
    wait_until(GENEROUS, "a backup after the delete", || {
        backups(&s).len() == count + 1
    });
    let meta = backups(&s).last().unwrap().metadata.clone().unwrap();
    assert_eq!(meta.seq, 3);
    assert!(meta
        .master
        .ends_with(&s.path("db").canonicalize().unwrap().display().to_string()));
    assert_eq!(master.stop(), Some(0));
}

#[test]
fn retention_keeps_what_it_promises() {
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--interval", "0", "--keep", "2", "--keep-within", "10s"],
    );
    let mut c = master.client();
    for i in 0..4 {
        c.call(&[b"SET", format!("k{i}").as_bytes(), b"v"]).unwrap();
        assert_eq!(c.call(&[b"SAVE"]).unwrap(), Reply::ok());
    }
    // All younger than --keep-within: all kept.
    assert_eq!(backups(&s).len(), 4);
    std::thread::sleep(Duration::from_secs(10));
    c.call(&[b"SET", b"k4", b"v"]).unwrap();
    assert_eq!(c.call(&[b"SAVE"]).unwrap(), Reply::ok());
    let ids: Vec<u32> = backups(&s).iter().map(|b| b.id).collect();
    assert_eq!(ids, [4, 5]);
    drop(master);

    // --keep-within protects young backups beyond --keep.
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--interval", "0", "--keep", "1", "--keep-within", "1h"],
    );
    let mut c = master.client();
    for i in 0..3 {
        c.call(&[b"SET", format!("k{i}").as_bytes(), b"v"]).unwrap();
        c.call(&[b"SAVE"]).unwrap();
    }
    assert_eq!(backups(&s).len(), 3);
}

#[test]
fn retention_goes_on_between_backups() {
    // With the log on, backups are rare: the ones past --keep-within go
    // without waiting for the next backup (the scrub's step purges).
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &[
            "--interval",
            "0",
            "--keep",
            "1",
            "--keep-within",
            "10s",
            "--scrub-interval",
            "1s",
        ],
    );
    let mut c = master.client();
    for i in 0..3 {
        c.call(&[b"SET", format!("k{i}").as_bytes(), b"v"]).unwrap();
        assert_eq!(c.call(&[b"SAVE"]).unwrap(), Reply::ok());
    }
    assert_eq!(backups(&s).len(), 3, "all younger than --keep-within");
    wait_until(
        GENEROUS,
        "the two older backups purged, no backup taken",
        || backups(&s).iter().map(|b| b.id).collect::<Vec<_>>() == [3],
    );
}

#[test]
fn sigterm_takes_a_final_backup_with_the_last_acknowledged_write() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "1h"]);
    let mut c = master.client();
    for i in 0..100 {
        c.call(&[b"SET", format!("k{i}").as_bytes(), b"v"]).unwrap();
    }
    assert_eq!(c.call(&[b"SET", b"last", b"write"]).unwrap(), Reply::ok());
    assert_eq!(master.stop(), Some(0));

    let restored = s.path("restored");
    rkv(&[
        &db_flag(&restored),
        "restore",
        &backup_flag(&s.path("backups")),
    ])
    .ok();
    assert_eq!(rkv(&[&db_flag(&restored), "get", "last"]).ok(), "write\n");
    assert!(
        !s.path("db").join(rkv::daemon::DaemonFile::NAME).exists(),
        "daemon file left behind"
    );
}

#[test]
fn sigusr1_and_bgsave_back_up_at_once() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "1h"]);
    let mut c = master.client();
    // The first write after start: no backup until asked (the start-up
    // backup found an empty database).
    c.call(&[b"SET", b"a", b"1"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(backups(&s).is_empty());
    master.signal(libc::SIGUSR1);
    wait_until(GENEROUS, "a backup after SIGUSR1", || {
        backups(&s).len() == 1
    });

    c.call(&[b"SET", b"b", b"2"]).unwrap();
    let reply = c.call(&[b"BGSAVE"]).unwrap();
    assert!(
        matches!(&reply, Reply::Simple(s) if s.starts_with("Background saving")),
        "{reply:?}"
    );
    wait_until(GENEROUS, "a backup after BGSAVE", || backups(&s).len() == 2);
    let Reply::Integer(lastsave) = c.call(&[b"LASTSAVE"]).unwrap() else {
        panic!()
    };
    assert!(lastsave > 1_700_000_000);
    let Reply::Bulk(Some(info)) = c.call(&[b"INFO", b"persistence"]).unwrap() else {
        panic!()
    };
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("rkv_backups_done:2"), "{info}");
    assert!(info.contains("rkv_last_backup_id:2"), "{info}");
}

#[test]
fn pipelined_sets_are_answered_in_order() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let mut wire = Vec::new();
    for i in 0..1000 {
        // SET … GET returns the previous value: the replies prove the order.
        let value = i.to_string();
        Reply::array(vec![
            bulk("SET"),
            bulk("counter"),
            bulk(&value),
            bulk("GET"),
        ])
        .encode(&mut wire);
    }
    let mut expected = b"$-1\r\n".to_vec();
    for i in 0..999 {
        Reply::bulk(i.to_string().into_bytes()).encode(&mut expected);
    }
    assert_replies(&master, &wire, &expected);
}

#[test]
fn malformed_requests_get_an_error_and_others_carry_on() {
    let s = Sandbox::new();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--max-request-bytes", "1MiB"],
    );
    let mut bystander = master.client();
    bystander.call(&[b"SET", b"k", b"v"]).unwrap();
    for (wire, error) in [
        (
            &b"*x\r\n"[..],
            "-ERR Protocol error: invalid multibulk length",
        ),
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$99999999999\r\n",
            "-ERR Protocol error: invalid bulk length",
        ),
        (
            b"*2\r\n$3\r\nSET\r\n$2000000\r\n",
            "-ERR Protocol error: invalid bulk length",
        ),
        (
            b"$3\r\nGET\r\n",
            "-ERR Protocol error: expected '*', got '$'",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'",
        ),
    ] {
        let mut stream = master.raw();
        stream.write_all(wire).unwrap();
        let mut reply = String::new();
        // The server answers, then closes: read to EOF.
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with(error), "{wire:?}: {reply:?}");
        assert_eq!(bystander.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
    }
    // An oversized request made of many arguments is refused too.
    let big = vec![b'x'; 600 * 1024];
    let mut c = master.client();
    let err = c.call(&[b"MSET", b"a", &big, b"b", &big]).unwrap_err();
    assert!(err.to_string().contains("max-request-bytes"), "{err}");
    assert_eq!(
        bystander.call(&[b"PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
}

#[test]
fn redis_wording_for_bad_commands_auth_and_client_cap() {
    let s = Sandbox::new();
    let pw = s.path("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw_flag = pw.display().to_string();
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--password-file", &pw_flag, "--max-clients", "3"],
    );
    let mut c = master.client();
    assert_eq!(
        c.call_raw(&[b"GET", b"k"]).unwrap(),
        Reply::error("NOAUTH Authentication required.")
    );
    assert!(
        matches!(c.call_raw(&[b"AUTH", b"nope"]).unwrap(), Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    assert_eq!(c.call(&[b"AUTH", b"hunter2"]).unwrap(), Reply::ok());
    assert_eq!(
        c.call_raw(&[b"GET"]).unwrap(),
        Reply::error("ERR wrong number of arguments for 'get' command")
    );
    assert!(
        matches!(c.call_raw(&[b"FLY", b"away"]).unwrap(), Reply::Error(e) if e.starts_with("ERR unknown command 'FLY'"))
    );
    assert_eq!(
        c.call_raw(&[b"SET", b"k", b"v", b"EX", b"0"]).unwrap(),
        Reply::error("ERR invalid expire time in 'set' command")
    );

    // The CLI needs the password too, and says so.
    let connect = format!("--connect={}", master.addr);
    rkv(&[&connect, "get", "k"]).fails(1, &["NOAUTH", "Try: pass the daemon's password"]);
    rkv(&[
        &connect,
        &format!("--password_file={pw_flag}"),
        "put",
        "k",
        "v",
    ])
    .ok();

    // The cap: three clients are allowed, the fourth is told why. First let
    // the CLI's connections above finish closing.
    wait_until(GENEROUS, "only this client connected", || {
        let Ok(Reply::Bulk(Some(info))) = c.call(&[b"INFO", b"clients"]) else {
            return false;
        };
        String::from_utf8_lossy(&info).contains("connected_clients:1\r\n")
    });
    let _b = master.client();
    let _c = master.client();
    let mut extra = master.raw();
    let mut reply = String::new();
    extra.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    assert_eq!(c.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
}

#[test]
fn scan_walks_every_key_once_with_match_and_count() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let mut c = master.client();
    for i in 0..57 {
        c.call(&[b"SET", format!("user:{i:03}").as_bytes(), b"x"])
            .unwrap();
        c.call(&[b"SET", format!("item:{i:03}").as_bytes(), b"x"])
            .unwrap();
    }
    let mut cursor = b"0".to_vec();
    let mut seen = Vec::new();
    loop {
        let reply = c
            .call(&[b"SCAN", &cursor, b"MATCH", b"user:*", b"COUNT", b"10"])
            .unwrap();
        let Reply::Array(Some(parts)) = reply else {
            panic!()
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = parts.as_slice() else {
            panic!()
        };
        seen.extend(keys.iter().cloned());
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    assert_eq!(seen.len(), 57);
    assert_eq!(c.call(&[b"DBSIZE"]).unwrap(), Reply::Integer(114));
    assert_eq!(
        c.call_raw(&[b"SCAN", b"12345678"]).unwrap(),
        Reply::error("ERR invalid cursor")
    );
    let connect = format!("--connect={}", master.addr);
    let out = rkv(&[&connect, "scan", "--from=user:010", "--to=user:013"]).ok();
    assert_eq!(out, "user:010 : x\nuser:011 : x\nuser:012 : x\n");
}

#[test]
fn protected_mode_and_bad_flags_are_refused_with_exit_2() {
    let s = Sandbox::new();
    let (db, b) = (
        s.path("db").display().to_string(),
        s.path("backups").display().to_string(),
    );
    let master = env!("CARGO_BIN_EXE_rkv-master");
    let stderr = refused(
        master,
        &["--db", &db, "--backup-dir", &b, "--listen", "0.0.0.0:0"],
        2,
    );
    assert!(stderr.contains("protected mode"));

    let inside = s.path("db/backups").display().to_string();
    let stderr = refused(master, &["--db", &db, "--backup-dir", &inside], 2);
    assert!(stderr.contains("inside the database directory"));

    let stderr = refused(
        master,
        &[
            "--db",
            &db,
            "--backup-dir",
            &b,
            "--password-file",
            "/nonexistent",
        ],
        2,
    );
    assert!(stderr.contains("cannot read the password file"));
    assert!(
        !s.path("db").exists(),
        "a refused start must not create the database"
    );
}

#[test]
fn a_second_master_on_the_same_db_is_refused() {
    let s = Sandbox::new();
    let _first = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let stderr = refused(
        env!("CARGO_BIN_EXE_rkv-master"),
        &[
            "--db",
            &s.path("db").display().to_string(),
            "--backup-dir",
            &s.path("b2").display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
        1,
    );
    assert!(stderr.contains("in use by another process"));
}

#[test]
fn rkv_with_db_routes_through_the_running_master() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let db = db_flag(&s.path("db"));
    assert_eq!(rkv(&[&db, "put", "routed", "yes"]).ok(), "OK\n");
    assert_eq!(
        master.client().call(&[b"GET", b"routed"]).unwrap(),
        bulk("yes")
    );
    assert_eq!(rkv(&[&db, "get", "routed"]).ok(), "yes\n");
    assert_eq!(rkv(&[&db, "scan"]).ok(), "routed : yes\n");
    let out = rkv(&[&db, "backup", &backup_flag(&s.path("backups"))]).ok();
    assert!(out.starts_with("OK: backup 1"), "{out}");
    rkv(&[&db, "backup", &backup_flag(&s.path("elsewhere"))]).fails(2, &["backs up to"]);
    let info = rkv(&[&db, "info", "replication"]).ok();
    assert!(info.contains("role:master"), "{info}");
}

#[test]
fn redis_cli_works_against_the_master() {
    let Ok(status) = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
    else {
        panic!("redis-cli is missing: install redis-tools (scripts/test.sh does)");
    };
    assert!(status.status.success());
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let rkv::server::ListenAddr::Tcp(addr) = &master.addr else {
        unreachable!()
    };
    let port = addr.port().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        let out = run_bin("redis-cli", &all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["SET", "user:1", "Alice"]), "OK\n");
    assert_eq!(cli(&["SET", "user:2", "Bob"]), "OK\n");
    assert_eq!(cli(&["GET", "user:1"]), "Alice\n");
    assert!(cli(&["INFO"]).contains("role:master"));
    let mut keys: Vec<String> = cli(&["--scan", "--pattern", "user:*"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
}

#[test]
fn data_no_backup_holds_is_backed_up_soon_after_start() {
    let s = Sandbox::new();
    let quiet = ["--interval", "1h", "--backup-on-exit", "no"];
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &quiet);
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    assert_eq!(master.stop(), Some(0));
    assert!(
        backups(&s).is_empty(),
        "--backup-on-exit no still took a backup"
    );

    let master = Daemon::master(&s.path("db"), &s.path("backups"), &quiet);
    wait_until(GENEROUS, "a backup soon after start", || {
        backups(&s).len() == 1
    });
    assert_eq!(master.stop(), Some(0));
    // Nothing changed since: a restart takes no second backup.
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &quiet);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(master.stop(), Some(0));
    assert_eq!(backups(&s).len(), 1);
}

#[test]
fn pipelined_plain_sets_are_batched_without_reordering() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let mut wire = Vec::new();
    let request = |args: &[&str], wire: &mut Vec<u8>| {
        Reply::array(args.iter().map(|a| bulk(a)).collect()).encode(wire)
    };
    for i in 0..500 {
        request(&["SET", &format!("k{i}"), &i.to_string()], &mut wire);
    }
    request(&["GET", "k499"], &mut wire);
    request(&["SET", "k0", "again"], &mut wire);
    request(&["GET", "k0"], &mut wire);
    request(&["DBSIZE"], &mut wire);
    let mut expected = b"+OK\r\n".repeat(500);
    expected.extend_from_slice(b"$3\r\n499\r\n+OK\r\n$5\r\nagain\r\n:500\r\n");
    assert_replies(&master, &wire, &expected);
}

#[test]
fn writes_of_many_clients_grouped_in_one_turn_keep_each_clients_order() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    // Forty clients send their pipelines at once, so each worker finds
    // many of them ready in one turn and writes their commands as one
    // group: a shared counter, keys of their own, and reads between; half
    // of them increment inside MULTI/EXEC, which joins the group too.
    let (clients, rounds) = (40, 50);
    let start = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let mut stream = master.raw();
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                let mut wire = Vec::new();
                // Per round: the replies before the count, and after it.
                let mut expected = Vec::new();
                let transaction = c % 2 == 1;
                for r in 0..rounds {
                    let (key, value) = (format!("c{c}:{r}"), format!("v{r}"));
                    let mut commands = vec![
                        vec!["INCR", "shared"],
                        vec!["SET", &key, &value],
                        vec!["APPEND", &key, "!"],
                        vec!["GET", &key],
                    ];
                    let (before, after) = if transaction {
                        commands.insert(0, vec!["MULTI"]);
                        commands.insert(3, vec!["EXEC"]);
                        ("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n", "+OK\r\n")
                    } else {
                        ("", "+OK\r\n")
                    };
                    for args in commands {
                        Reply::array(args.iter().map(|a| bulk(a)).collect()).encode(&mut wire);
                    }
                    let len = value.len() + 1;
                    expected.push((before, format!("{after}:{len}\r\n${len}\r\n{value}!\r\n")));
                }
                start.wait();
                stream.write_all(&wire).unwrap();
                let mut counts = Vec::new();
                let mut reader = std::io::BufReader::new(stream);
                for (before, want) in expected {
                    let mut head = vec![0u8; before.len()];
                    reader.read_exact(&mut head).unwrap();
                    assert_eq!(String::from_utf8_lossy(&head), before, "client {c}");
                    let mut line = String::new();
                    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                    let count: u64 = line
                        .strip_prefix(':')
                        .and_then(|n| n.trim_end().parse().ok())
                        .unwrap_or_else(|| panic!("client {c}: INCR answered {line:?}"));
                    counts.push(count);
                    let mut rest = vec![0u8; want.len()];
                    reader.read_exact(&mut rest).unwrap();
                    assert_eq!(String::from_utf8_lossy(&rest), want, "client {c}");
                }
                counts
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        let counts = thread.join().unwrap();
        // A client's increments come back in the order it sent them.
        assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
        all.extend(counts);
    }
    // No increment lost or counted twice across the clients.
    all.sort_unstable();
    let want: Vec<u64> = (1..=(clients * rounds) as u64).collect();
    assert_eq!(all, want);
    let mut c = master.client();
    assert_eq!(
        c.call(&[b"GET", b"shared"]).unwrap(),
        bulk(&(clients * rounds).to_string())
    );
}

#[test]
fn read_modify_writes_see_every_write_before_them_and_deadlines_as_they_pass() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let mut c = master.client();
    let int = |n: i64| Reply::Integer(n);
    // A counter incremented, then overwritten by a plain SET (written in a
    // group of its own, which does not keep the new value), then
    // incremented again: the increment starts from what the SET wrote.
    assert_eq!(c.call(&[b"INCR", b"n"]).unwrap(), int(1));
    assert_eq!(c.call(&[b"INCR", b"n"]).unwrap(), int(2));
    assert_eq!(c.call(&[b"SET", b"n", b"100"]).unwrap(), Reply::ok());
    assert_eq!(c.call(&[b"INCR", b"n"]).unwrap(), int(101));
    assert_eq!(c.call(&[b"DEL", b"n"]).unwrap(), int(1));
    assert_eq!(c.call(&[b"INCR", b"n"]).unwrap(), int(1));
    // FLUSHDB forgets every key, also for the next increment.
    assert_eq!(c.call(&[b"FLUSHDB"]).unwrap(), Reply::ok());
    assert_eq!(c.call(&[b"INCR", b"n"]).unwrap(), int(1));
    // A counter with a deadline, incremented (its deadline kept), then
    // incremented once the deadline has passed: it starts again from 0.
    assert_eq!(
        c.call(&[b"SET", b"t", b"5", b"PX", b"300"]).unwrap(),
        Reply::ok()
    );
    assert_eq!(c.call(&[b"INCR", b"t"]).unwrap(), int(6));
    wait_until(GENEROUS, "the counter's deadline to pass", || {
        c.call(&[b"PTTL", b"t"]).unwrap() == int(-2)
    });
    assert_eq!(c.call(&[b"INCR", b"t"]).unwrap(), int(1));
    assert_eq!(c.call(&[b"PTTL", b"t"]).unwrap(), int(-1));
}

#[test]
fn a_write_then_a_malformed_request_or_a_hang_up_answers_the_write_first() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    // The write's reply, then the protocol error.
    let mut stream = master.raw();
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\nx\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("+OK\r\n-ERR Protocol error"), "{reply:?}");
    // Clients that hang up right after their write, the end of input often
    // arriving with it: each write is made, answered, and the connection
    // closed (a reply that never ends would time the read out).
    let streams: Vec<_> = (0..100)
        .map(|i| {
            let mut stream = master.raw();
            let value = i.to_string();
            let request = format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nb\r\n${}\r\n{value}\r\n",
                value.len()
            );
            stream.write_all(request.as_bytes()).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            stream
        })
        .collect();
    for mut stream in streams {
        stream.set_read_timeout(Some(GENEROUS)).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "+OK\r\n");
    }
    let mut c = master.client();
    assert!(matches!(
        c.call(&[b"GET", b"b"]).unwrap(),
        Reply::Bulk(Some(_))
    ));
    c.call(&[b"SET", b"b", b"2"]).unwrap();
    let mut c = master.client();
    assert_eq!(
        c.call(&[b"MGET", b"a", b"b"]).unwrap(),
        Reply::array(vec![bulk("1"), bulk("2")])
    );
}

#[test]
fn a_half_closed_client_still_gets_its_replies() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let mut stream = master.raw();
    // Inline commands, as `nc` or a script sends them, then end of input.
    stream.write_all(b"PING\r\nECHO hi\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "+PONG\r\n$2\r\nhi\r\n");
}

#[test]
fn a_client_reading_slowly_gets_every_large_reply() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &[]);
    let value = vec![b'v'; 1 << 20];
    master.client().call(&[b"SET", b"big", &value]).unwrap();
    // 40 MiB of replies asked for at once: more than the server buffers
    // for one client, so it must stop reading and resume as replies drain.
    let mut wire = Vec::new();
    for _ in 0..40 {
        Reply::array(vec![bulk("GET"), bulk("big")]).encode(&mut wire);
    }
    Reply::array(vec![bulk("PING")]).encode(&mut wire);
    let mut stream = master.raw();
    stream.write_all(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut expected = Vec::new();
    for _ in 0..40 {
        Reply::bulk(value.clone()).encode(&mut expected);
    }
    expected.extend_from_slice(b"+PONG\r\n");
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert!(got == expected, "the replies differ");
    // Meanwhile other clients were served.
    assert_eq!(
        master.client().call(&[b"PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
}

#[test]
fn a_unix_socket_listener_serves_rkv_and_routing_prefers_it() {
    let s = Sandbox::new();
    let socket = s.path("master.sock");
    let listen = format!("unix:{}", socket.display());
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--listen", &listen]);
    assert_eq!(
        rkv(&[&format!("--connect={listen}"), "put", "k", "over-unix"]).ok(),
        "OK\n"
    );
    assert_eq!(
        rkv(&[&format!("--connect={listen}"), "get", "k"]).ok(),
        "over-unix\n"
    );
    let file = rkv::daemon::DaemonFile::read(&s.path("db")).unwrap();
    assert!(file.listen.contains(&listen), "{file:?}");
    // `--db` reaches the daemon through the addresses its file lists (the
    // CLI tries the Unix socket first).
    assert_eq!(
        rkv(&[&db_flag(&s.path("db")), "get", "k"]).ok(),
        "over-unix\n"
    );
    assert_eq!(master.stop(), Some(0));
    assert!(!socket.exists(), "the socket file was left behind");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--log-format", "json"]);
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    let log_path = s.path("db").with_extension("log");
    assert_eq!(master.stop(), Some(0));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
}

/// Sends `wire` in one write and checks the replies are exactly `expected`.
fn assert_replies(master: &Daemon, wire: &[u8], expected: &[u8]) {
    let mut stream = master.raw();
    stream.write_all(wire).unwrap();
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}
