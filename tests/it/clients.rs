//! Hostile and careless clients against the real daemons: atomic writes
//! under races, transactions applied whole or not at all, what an unauthenticated client
//! may send, bounded replies, cursors no client can evict, Redis's edge
//! cases, and files private to the daemon's user.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rkv::resp::Reply;

use crate::util::{bulk, refused, wait_for, wait_until, Daemon, Sandbox, GENEROUS};

fn master(s: &Sandbox, extra: &[&str]) -> Daemon {
    Daemon::master(&s.path("db"), &s.path("backups"), extra)
}

/// Sends raw bytes and reads until `replies` complete replies arrived (or
/// the server closed); returns what was read.
fn exchange(d: &Daemon, wire: &[u8], until: &[u8]) -> Vec<u8> {
    let mut stream = d.raw();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(wire).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(until.len()).any(|w| w == until) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    got
}

#[test]
fn set_nx_is_atomic_against_plain_sets() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    let keys = 3000;
    let racer = |nx: bool| {
        let addr = m.addr.clone();
        std::thread::spawn(move || {
            let mut c = rkv::client::Client::connect(&addr, None).unwrap();
            let mut wins = Vec::new();
            for i in 0..keys {
                let key = format!("lock:{i}");
                let reply = if nx {
                    c.call_raw(&[b"SET", key.as_bytes(), b"a", b"NX"]).unwrap()
                } else {
                    c.call_raw(&[b"SET", key.as_bytes(), b"b"]).unwrap()
                };
                wins.push(reply == Reply::ok());
            }
            wins
        })
    };
    let (nx, plain) = (racer(true), racer(false));
    let (_nx_wins, plain_wins) = (nx.join().unwrap(), plain.join().unwrap());
    assert!(plain_wins.iter().all(|&w| w));
    // Each key got one NX and one plain SET: whichever came first, the plain
    // SET's value is the last one written. `a` means the NX read "absent",
    // the plain SET wrote, and the NX wrote over it.
    let mut c = m.client();
    for i in 0..keys {
        let key = format!("lock:{i}");
        assert_eq!(
            c.call_raw(&[b"GET", key.as_bytes()]).unwrap(),
            bulk("b"),
            "{key}: SET NX was not atomic against a plain SET"
        );
    }
}

#[test]
fn del_counts_a_key_named_twice_once() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    let mut c = m.client();
    c.call(&[b"SET", b"a", b"1"]).unwrap();
    assert_eq!(c.call(&[b"DEL", b"a", b"a"]).unwrap(), Reply::Integer(1));
}

#[test]
fn a_transaction_applies_whole_and_answers_each_command() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    // A client library's transaction: MULTI, the commands, EXEC, pipelined.
    let wire = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n\
                 *2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\
                 *1\r\n$4\r\nEXEC\r\n";
    let got = exchange(&m, wire, b"$1\r\nv\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:1\r\n$1\r\nv\r\n"
    );
    let mut c = m.client();
    assert_eq!(c.call(&[b"GET", b"n"]).unwrap(), bulk("1"));
    assert_eq!(
        c.call_raw(&[b"EXEC"]).unwrap(),
        Reply::error("ERR EXEC without MULTI")
    );
}

#[test]
fn a_transaction_with_a_refused_command_applies_nothing() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    let mut c = m.client();
    c.call(&[b"MULTI"]).unwrap();
    assert_eq!(
        c.call(&[b"SET", b"k", b"v"]).unwrap(),
        Reply::Simple("QUEUED".into())
    );
    assert!(
        matches!(c.call_raw(&[b"LPUSH", b"l", b"x"]).unwrap(), Reply::Error(e) if e.starts_with("ERR unknown command"))
    );
    assert!(
        matches!(c.call_raw(&[b"GET"]).unwrap(), Reply::Error(e) if e.starts_with("ERR wrong number"))
    );
    assert_eq!(
        c.call_raw(&[b"EXEC"]).unwrap(),
        Reply::error("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.call(&[b"GET", b"k"]).unwrap(), Reply::Bulk(None));
    // A runtime error is one reply of the array; the rest applies.
    c.call(&[b"SET", b"s", b"text"]).unwrap();
    c.call(&[b"MULTI"]).unwrap();
    c.call(&[b"INCR", b"s"]).unwrap();
    c.call(&[b"SET", b"k", b"v"]).unwrap();
    assert_eq!(
        c.call(&[b"EXEC"]).unwrap(),
        Reply::array(vec![
            Reply::error("ERR value is not an integer or out of range"),
            Reply::ok()
        ])
    );
    assert_eq!(c.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
    c.call(&[b"MULTI"]).unwrap();
    c.call(&[b"SET", b"k", b"w"]).unwrap();
    assert_eq!(c.call(&[b"DISCARD"]).unwrap(), Reply::ok());
    assert_eq!(c.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
}

#[test]
fn watch_aborts_a_transaction_when_another_client_wrote_the_key() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    let (mut a, mut b) = (m.client(), m.client());
    a.call(&[b"SET", b"balance", b"10"]).unwrap();
    a.call(&[b"WATCH", b"balance"]).unwrap();
    b.call(&[b"INCRBY", b"balance", b"5"]).unwrap();
    a.call(&[b"MULTI"]).unwrap();
    a.call(&[b"SET", b"balance", b"0"]).unwrap();
    assert_eq!(a.call(&[b"EXEC"]).unwrap(), Reply::Array(None));
    assert_eq!(a.call(&[b"GET", b"balance"]).unwrap(), bulk("15"));
    // Untouched since WATCH: applies.
    a.call(&[b"WATCH", b"balance"]).unwrap();
    a.call(&[b"MULTI"]).unwrap();
    a.call(&[b"SET", b"balance", b"0"]).unwrap();
    assert_eq!(a.call(&[b"EXEC"]).unwrap(), Reply::array(vec![Reply::ok()]));
    // A watched key that expires before EXEC aborts it too.
    // (The key must still be there when WATCH runs: if this machine is
    // too slow for the deadline, try again with a longer one.)
    let left = [300, 3_000, 30_000]
        .into_iter()
        .find_map(|px: u64| {
            a.call(&[b"SET", b"lease", b"me", b"PX", px.to_string().as_bytes()])
                .unwrap();
            a.call(&[b"WATCH", b"lease"]).unwrap();
            match a.call(&[b"PTTL", b"lease"]).unwrap() {
                Reply::Integer(ms) if ms > 0 => Some(ms as u64),
                _ => {
                    a.call(&[b"UNWATCH"]).unwrap();
                    None
                }
            }
        })
        .expect("the key expired before WATCH even with a 30 s deadline");
    std::thread::sleep(Duration::from_millis(left + 100));
    a.call(&[b"MULTI"]).unwrap();
    a.call(&[b"SET", b"lease", b"me"]).unwrap();
    assert_eq!(a.call(&[b"EXEC"]).unwrap(), Reply::Array(None));
    // In RESP3 the aborted EXEC is the null.
    let got = exchange(
        &m,
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$5\r\nWATCH\r\n$1\r\nw\r\n\
          *3\r\n$3\r\nSET\r\n$1\r\nw\r\n$1\r\n1\r\n*1\r\n$5\r\nMULTI\r\n\
          *1\r\n$4\r\nEXEC\r\n",
        b"_\r\n",
    );
    assert!(
        got.ends_with(b"+OK\r\n+OK\r\n+OK\r\n_\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn concurrent_increments_and_transactions_lose_nothing_and_reach_followers_whole() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "50ms"]);
    let f = Daemon::follower(
        &s.path("backups"),
        &s.path("f"),
        &["--poll-interval", "50ms"],
    );
    // Four writers race INCRs and ten-key transactions until the follower
    // has served several of their states, however long that takes here.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = m.client();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    c.call(&[b"INCR", b"counter"]).unwrap();
                    // Ten keys set to one value in one transaction.
                    let value = format!("{w}-{rounds}");
                    c.call(&[b"MULTI"]).unwrap();
                    for k in 0..10 {
                        c.call(&[b"SET", format!("t{k}").as_bytes(), value.as_bytes()])
                            .unwrap();
                    }
                    let done = c.call(&[b"EXEC"]).unwrap();
                    assert!(matches!(done, Reply::Array(Some(r)) if r.len() == 10));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    // Every state a follower serves holds all of a transaction.
    let mut reader = f.client();
    let keys: Vec<Vec<u8>> = (0..10).map(|k| format!("t{k}").into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(Vec::as_slice));
    let whole = |reader: &mut rkv::client::Client| match reader.call_raw(&mget) {
        Ok(Reply::Array(Some(values))) => {
            assert!(
                values.windows(2).all(|w| w[0] == w[1]),
                "a torn transaction: {values:?}"
            );
            Some(values[0].clone())
        }
        _ => None,
    };
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        GENEROUS,
        "the follower to serve three transactions' states",
        || {
            assert!(
                writers.iter().all(|w| !w.is_finished()),
                "a writer stopped early"
            );
            // Many reads between two looks at the deadline: each is a
            // chance to catch a torn state.
            for _ in 0..50 {
                if let Some(Reply::Bulk(Some(value))) = whole(&mut reader) {
                    seen.insert(String::from_utf8_lossy(&value).into_owned());
                }
            }
            if seen.len() >= 3 {
                Ok(())
            } else {
                Err(seen.clone())
            }
        },
    );
    stop.store(true, Ordering::SeqCst);
    let rounds: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    // Nothing lost on the master, and the follower converges to its final
    // state, still whole on the way.
    let mut c = m.client();
    assert_eq!(
        c.call(&[b"GET", b"counter"]).unwrap(),
        bulk(&rounds.to_string())
    );
    let last = c.call(&[b"GET", b"t0"]).unwrap();
    let counter = bulk(&rounds.to_string());
    wait_for(
        GENEROUS,
        "the follower to reach the master's final state",
        || {
            let state = (
                whole(&mut reader),
                reader.call_raw(&[b"GET", b"counter"]).ok(),
            );
            if state == (Some(last.clone()), Some(counter.clone())) {
                Ok(())
            } else {
                Err(state)
            }
        },
    );
}

#[test]
fn a_follower_runs_read_transactions_and_refuses_writes_when_queued() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    m.client().call(&[b"SET", b"k", b"v"]).unwrap();
    m.client().call(&[b"SAVE"]).unwrap();
    let f = Daemon::follower(
        &s.path("backups"),
        &s.path("f"),
        &["--poll-interval", "100ms"],
    );
    let mut c = f.client();
    wait_until(GENEROUS, "the follower applied", || {
        c.call(&[b"GET", b"k"]).ok() == Some(bulk("v"))
    });
    c.call(&[b"MULTI"]).unwrap();
    c.call(&[b"GET", b"k"]).unwrap();
    c.call(&[b"STRLEN", b"k"]).unwrap();
    assert_eq!(
        c.call(&[b"EXEC"]).unwrap(),
        Reply::array(vec![bulk("v"), Reply::Integer(1)])
    );
    c.call(&[b"MULTI"]).unwrap();
    c.call(&[b"GET", b"k"]).unwrap();
    assert_eq!(
        c.call_raw(&[b"SET", b"k", b"w"]).unwrap(),
        Reply::error("READONLY You can't write against a read only replica.")
    );
    assert_eq!(
        c.call_raw(&[b"EXEC"]).unwrap(),
        Reply::error("EXECABORT Transaction discarded because of previous errors.")
    );
}

#[test]
fn an_unauthenticated_client_may_send_only_small_requests() {
    let s = Sandbox::new();
    let pw = s.path("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw = pw.display().to_string();
    let m = master(&s, &["--interval", "0", "--password-file", &pw]);
    let got = exchange(&m, b"*11\r\n", b"\r\n");
    assert_eq!(
        got,
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let got = exchange(&m, b"*2\r\n$3\r\nSET\r\n$16385\r\n", b"\r\n");
    assert_eq!(got, b"-ERR Protocol error: unauthenticated bulk length\r\n");
    // After AUTH the usual caps hold.
    let mut c = rkv::client::Client::connect(&m.addr, Some(b"secret")).unwrap();
    let big = vec![b'x'; 100_000];
    assert_eq!(c.call(&[b"SET", b"k", &big]).unwrap(), Reply::ok());
    // A wrong AUTH does not log a connection out; AUTH a b c is a syntax error.
    assert!(
        matches!(c.call_raw(&[b"AUTH", b"wrong"]).unwrap(), Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    assert_eq!(c.call(&[b"GET", b"k"]).unwrap(), Reply::bulk(big));
    assert_eq!(
        c.call_raw(&[b"AUTH", b"a", b"b", b"c"]).unwrap(),
        Reply::error("ERR syntax error")
    );
}

#[test]
fn one_reply_cannot_exceed_max_reply_bytes() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0", "--max-reply-bytes", "1MiB"]);
    let mut c = m.client();
    let value = vec![b'v'; 400 << 10];
    for k in [b"a", b"b", b"c"] {
        c.call(&[b"SET", k, &value]).unwrap();
    }
    let reply = c.call_raw(&[b"MGET", b"a", b"b", b"c"]).unwrap();
    assert!(
        matches!(&reply, Reply::Error(e) if e.contains("--max-reply-bytes")),
        "{reply:?}"
    );
    let Reply::Array(Some(two)) = c.call(&[b"MGET", b"a", b"b"]).unwrap() else {
        panic!()
    };
    assert_eq!(two.len(), 2);
}

#[test]
fn one_client_cannot_evict_another_clients_scan_cursor() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    let mut c = m.client();
    for i in 0..50 {
        c.call(&[b"SET", format!("k{i:02}").as_bytes(), b"v"])
            .unwrap();
    }
    let Reply::Array(Some(first)) = c.call(&[b"SCAN", b"0", b"COUNT", b"5"]).unwrap() else {
        panic!()
    };
    let Reply::Bulk(Some(cursor)) = &first[0] else {
        panic!()
    };
    // Another client opens twenty thousand cursors.
    let mut hog = m.client();
    for _ in 0..20_000 {
        hog.call(&[b"SCAN", b"0", b"COUNT", b"1"]).unwrap();
    }
    let reply = c.call_raw(&[b"SCAN", cursor, b"COUNT", b"5"]).unwrap();
    assert!(matches!(reply, Reply::Array(Some(_))), "{reply:?}");
}

#[test]
fn a_unix_listen_path_that_is_not_a_socket_is_left_alone() {
    let s = Sandbox::new();
    let file = s.path("precious");
    std::fs::write(&file, b"keep me").unwrap();
    let stderr = refused(
        env!("CARGO_BIN_EXE_rkv-master"),
        &[
            "--db",
            &s.path("db").display().to_string(),
            "--backup-dir",
            &s.path("backups").display().to_string(),
            "--listen",
            &format!("unix:{}", file.display()),
        ],
        1,
    );
    assert!(stderr.contains("is not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn redis_edge_cases_inline_quotes_and_long_unknown_commands() {
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    assert_eq!(
        exchange(&m, b"SET \"a b\r\n", b"\r\n"),
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    assert_eq!(
        exchange(&m, b"SET \"a b\" 'c d'\r\nGET \"a b\"\r\n", b"c d\r\n"),
        b"+OK\r\n$3\r\nc d\r\n"
    );
    let huge = vec![b'z'; 10 << 20];
    let reply = m.client().call_raw(&[b"NOSUCH", &huge]).unwrap();
    let Reply::Error(e) = reply else { panic!() };
    assert!(e.len() < 400, "a {} byte error line", e.len());
    assert!(e.starts_with("ERR unknown command 'NOSUCH', with args beginning with: 'zzz"));
}

#[test]
fn what_the_daemons_create_is_private_whatever_the_umask() {
    // The test runs under the shell's umask (022 in CI): the daemon's own
    // 077 must win. (Changing the umask here would race the other tests.)
    let s = Sandbox::new();
    let m = master(&s, &["--interval", "0"]);
    m.client().call(&[b"SET", b"k", b"v"]).unwrap();
    m.client().call(&[b"SAVE"]).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.path("db")), 0o700);
    assert_eq!(mode(&s.path("backups")), 0o700);
    assert_eq!(mode(&s.path("backups/meta/1")) & 0o077, 0);
    assert_eq!(mode(&s.path("db/CURRENT")) & 0o077, 0);
}

#[test]
fn umask_027_lets_the_group_read_and_requirepass_on_the_command_line_warns() {
    let s = Sandbox::new();
    let m = master(
        &s,
        &["--interval", "0", "--umask", "027", "--requirepass", "pw"],
    );
    let mut c = rkv::client::Client::connect(&m.addr, Some(b"pw")).unwrap();
    c.call(&[b"SET", b"k", b"v"]).unwrap();
    c.call(&[b"SAVE"]).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.path("backups")), 0o750);
    assert_eq!(mode(&s.path("backups/meta/1")) & 0o077, 0o040);
    assert!(
        m.log()
            .contains("--requirepass on the command line is visible"),
        "{}",
        m.log()
    );
    // A bad umask is a usage error.
    let stderr = refused(
        env!("CARGO_BIN_EXE_rkv-master"),
        &["--db", "d", "--backup-dir", "b", "--umask", "999"],
        2,
    );
    assert!(stderr.contains("octal umask"));
}

#[test]
fn hello_auth_config_and_the_caps_answer_as_redis_does_or_name_the_flag() {
    let s = Sandbox::new();
    let pw = s.path("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pw = pw.display().to_string();
    let m = master(
        &s,
        &[
            "--interval",
            "0",
            "--password-file",
            &pw,
            "--max-request-bytes",
            "4KiB",
            "--max-reply-bytes",
            "64KiB",
        ],
    );
    let mut c = m.client();
    let error = |reply: Reply| match reply {
        Reply::Error(e) => e,
        other => panic!("an error, not {other:?}"),
    };
    let mut ask = |args: &[&[u8]]| c.call_raw(args).unwrap();

    // HELLO before and with AUTH, and its errors.
    assert_eq!(
        error(ask(&[b"HELLO", b"4"])),
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        error(ask(&[b"HELLO", b"three"])),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        error(ask(&[b"HELLO", b"3", b"BOGUS"])),
        "ERR Syntax error in HELLO option 'BOGUS'"
    );
    assert!(error(ask(&[b"HELLO", b"3"])).starts_with("NOAUTH HELLO must be called"));
    for user in [&b"default"[..], b"someone"] {
        assert!(error(ask(&[b"HELLO", b"3", b"AUTH", user, b"wrong"])).starts_with("WRONGPASS"));
    }
    assert!(error(ask(&[b"HELLO", b"2", b"SETNAME", b"a b"])).contains("cannot contain spaces"));
    let hello = ask(&[
        b"HELLO", b"2", b"AUTH", b"default", b"secret", b"SETNAME", b"app",
    ]);
    let Reply::Array(Some(fields)) = hello else {
        panic!("HELLO 2 answers a flat map: {hello:?}");
    };
    assert_eq!(fields[4], bulk("proto"));
    assert_eq!(fields[5], Reply::Integer(2));
    assert_eq!(ask(&[b"CLIENT", b"GETNAME"]), bulk("app"));

    // CONFIG: the parameters tools ask for; SET names the flags.
    assert_eq!(
        ask(&[b"CONFIG", b"GET", b"maxmem*"]),
        Reply::array(vec![
            bulk("maxmemory"),
            bulk("0"),
            bulk("maxmemory-policy"),
            bulk("noeviction")
        ])
    );
    assert!(error(ask(&[b"CONFIG", b"SET", b"maxmemory", b"1"]))
        .contains("configured by its command-line flags"));

    // The caps, each naming its flag.
    let big = vec![b'x'; 3000];
    ask(&[b"MULTI"]);
    assert_eq!(ask(&[b"SET", b"k", &big]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        error(ask(&[b"SET", b"k2", &big])),
        "ERR transaction larger than --max-request-bytes (4096 bytes)"
    );
    assert!(error(ask(&[b"EXEC"])).starts_with("EXECABORT"));
    ask(&[b"APPEND", b"s", &big]);
    let too_long = "ERR string exceeds maximum allowed size (--max-request-bytes, 4096 bytes)";
    assert_eq!(error(ask(&[b"APPEND", b"s", &big])), too_long);
    assert_eq!(error(ask(&[b"SETRANGE", b"s", b"5000", b"x"])), too_long);
    ask(&[b"SET", b"x", &[b'a'; 200]]);
    ask(&[b"SET", b"y", &[b'b'; 200]]);
    assert!(error(ask(&[b"LCS", b"x", b"y"]))
        .contains("transient memory for LCS exceeds --max-reply-bytes"));
    for batch in 0..50 {
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("{batch:04}-{i:04}-{}", "k".repeat(30)).into_bytes())
            .collect();
        let mut mset: Vec<&[u8]> = vec![b"MSET"];
        for key in &keys {
            mset.push(key);
            mset.push(b"v");
        }
        assert_eq!(ask(&mset), Reply::ok());
    }
    assert!(error(ask(&[b"KEYS", b"*"])).contains("larger than --max-reply-bytes"));

    // OBJECT, MEMORY and COPY where rkv differs from Redis.
    assert!(
        error(ask(&[b"OBJECT", b"FREQ", b"x"])).contains("An LFU maxmemory policy is not selected")
    );
    assert!(error(ask(&[b"OBJECT", b"IDLETIME", b"x"])).contains("does not track"));
    assert_eq!(ask(&[b"OBJECT", b"REFCOUNT", b"x"]), Reply::Integer(1));
    assert_eq!(ask(&[b"OBJECT", b"ENCODING", b"x"]), bulk("raw"));
    assert_eq!(
        error(ask(&[b"OBJECT", b"ENCODING"])),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        error(ask(&[b"OBJECT", b"NOPE", b"x"])),
        "ERR unknown subcommand 'NOPE'. Try OBJECT HELP."
    );
    for help in [&[&b"OBJECT"[..], b"HELP"][..], &[b"MEMORY", b"HELP"]] {
        assert!(matches!(ask(help), Reply::Array(Some(lines)) if lines.len() > 2));
    }
    assert_eq!(
        error(ask(&[b"MEMORY", b"USAGE", b"x", b"SAMPLES", b"many"])),
        "ERR value is not an integer or out of range"
    );
    assert!(
        matches!(ask(&[b"MEMORY", b"USAGE", b"x", b"SAMPLES", b"5"]), Reply::Integer(n) if n > 200)
    );
    assert_eq!(
        error(ask(&[b"COPY", b"x", b"z", b"DB", b"1"])),
        "ERR DB index is out of range"
    );
}
