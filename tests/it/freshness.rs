//! Freshness the client controls: the position a write reached on the
//! master, waits for it on a follower (`RKV.WAIT`, `RKV.READAFTER`) that
//! always see the write, time out with how far the follower got, and hold
//! no thread; and a staleness bound per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::util::{bulk, rkv, serves, wait_for, wait_until, Daemon, Sandbox, GENEROUS};

/// A master backing up on request only, with a first backup, and a
/// follower of it serving that backup.
fn pair(s: &Sandbox) -> (Daemon, Daemon) {
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    master.client().call(&[b"SET", b"boot", b"1"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    let follower = Daemon::follower(&s.path("backups"), &s.path("f1"), &[]);
    serves(&follower, "boot", "1");
    (master, follower)
}

fn integer(reply: &Reply) -> i64 {
    match reply {
        Reply::Integer(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// The error a request was answered with.
fn error(answer: Result<Reply, rkv::client::ClientError>) -> String {
    match answer {
        Err(rkv::client::ClientError::Server { message, .. }) => message,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Sets its flag when dropped, so a writer thread stops even when the
/// test's own thread panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_read_after_waiting_for_the_writes_position_always_sees_the_write() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop = SetOnDrop(&done);
        // Load beside the checks: other keys written all along.
        scope.spawn(|| {
            let mut client = master.client();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                let value = i.to_string();
                client
                    .call(&[
                        b"SET",
                        format!("load:{}", i % 1000).as_bytes(),
                        value.as_bytes(),
                    ])
                    .unwrap();
                i += 1;
                if i.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        // Four clients at once, each writing its own key: half wait with
        // RKV.WAIT, half read under RKV.READAFTER.
        let checkers: Vec<_> = (0..4)
            .map(|c| {
                let (master, follower) = (&master, &follower);
                scope.spawn(move || {
                    let mut writer = master.client();
                    let mut waiter = follower.client();
                    let mut reader = follower.client();
                    let key = format!("ryw:{c}");
                    for i in 0..500 {
                        let value = i.to_string();
                        let set = writer.call(&[b"SET", key.as_bytes(), value.as_bytes()]);
                        assert_eq!(set.unwrap(), Reply::Simple("OK".into()));
                        let position = integer(&writer.call(&[b"RKV.POSITION"]).unwrap());
                        let at = position.to_string();
                        let seen = if i % 2 == 0 {
                            let reached = waiter.call(&[b"RKV.WAIT", at.as_bytes(), b"30000"]);
                            let reached = integer(&reached.unwrap());
                            assert!(reached >= position, "waited for {position}, got {reached}");
                            waiter.call(&[b"GET", key.as_bytes()]).unwrap()
                        } else {
                            let set = reader.call(&[b"RKV.READAFTER", at.as_bytes(), b"30000"]);
                            assert_eq!(set.unwrap(), Reply::Simple("OK".into()));
                            reader.call(&[b"GET", key.as_bytes()]).unwrap()
                        };
                        assert_eq!(seen, bulk(&value), "client {c}, write {i} at {position}");
                    }
                })
            })
            .collect();
        for checker in checkers {
            checker.join().unwrap();
        }
    });
    assert!(follower.info_num("rkv_position_waits") > 0);
    assert_eq!(follower.info_num("rkv_position_wait_timeouts"), 0);
}

#[test]
fn a_wait_on_a_follower_cut_off_from_the_store_times_out_saying_how_far_it_got() {
    let s = Sandbox::new();
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    master.client().call(&[b"SET", b"a", b"1"]).unwrap();
    master.client().call(&[b"SAVE"]).unwrap();
    // The follower reads a copy of the store as it was: it never sees
    // what the master writes next.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(s.path("backups"))
        .arg(s.path("copy"))
        .status()
        .unwrap();
    assert!(copied.success());
    let follower = Daemon::follower(&s.path("copy"), &s.path("f1"), &[]);
    serves(&follower, "a", "1");

    let mut writer = master.client();
    writer.call(&[b"SET", b"b", b"2"]).unwrap();
    let position = integer(&writer.call(&[b"RKV.POSITION"]).unwrap());

    let mut client = follower.client();
    let at = position.to_string();
    let started = Instant::now();
    let e = error(client.call(&[b"RKV.WAIT", at.as_bytes(), b"300"]));
    assert!(started.elapsed() >= Duration::from_millis(300), "{e}");
    let held = follower.info_num("rkv_applied_seq");
    assert!(held < position);
    let said = format!(
        "TIMEOUT position {position} not reached within 300ms: this follower holds position {held}"
    );
    assert!(e.starts_with(&said), "{e}");
    assert!(
        e.contains("old)") || e.contains("unknown)"),
        "the data's age: {e}"
    );
    // The connection goes on.
    assert_eq!(
        client.call(&[b"PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );

    // Reads after the position time out the same way, until the setting
    // is cleared.
    let set = client
        .call(&[b"RKV.READAFTER", at.as_bytes(), b"200"])
        .unwrap();
    assert_eq!(set, Reply::Simple("OK".into()));
    let e = error(client.call(&[b"GET", b"a"]));
    assert!(e.starts_with("TIMEOUT position"), "{e}");
    assert_eq!(
        client.call(&[b"PING"]).unwrap(),
        Reply::Simple("PONG".into()),
        "commands that do not read do not wait"
    );
    client.call(&[b"RKV.READAFTER", b"0"]).unwrap();
    assert_eq!(client.call(&[b"GET", b"a"]).unwrap(), bulk("1"));
    assert_eq!(follower.info_num("rkv_position_wait_timeouts"), 2);

    // Bad arguments are errors, not waits.
    let e = error(client.call(&[b"RKV.WAIT", b"-1", b"10"]));
    assert!(e.contains("position is not a non-negative integer"), "{e}");
    let e = error(client.call(&[b"RKV.WAIT", b"1", b"soon"]));
    assert!(e.contains("timeout is not a non-negative integer"), "{e}");
    let e = error(client.call(&[b"RKV.READAFTER", b"x"]));
    assert!(e.contains("position is not a non-negative integer"), "{e}");
    let e = error(client.call(&[b"RKV.READAFTER", b"1", b"-5"]));
    assert!(e.contains("timeout is not a non-negative integer"), "{e}");
    let e = error(client.call(&[b"RKV.READAFTER", b"1", b"5", b"more"]));
    assert!(e.contains("syntax error"), "{e}");

    // On the master, a position it holds answers at once; one past its
    // newest write is an error, not a wait.
    assert!(integer(&writer.call(&[b"RKV.WAIT", at.as_bytes(), b"0"]).unwrap()) >= position);
    let past = (position + 100).to_string();
    let e = error(writer.call(&[b"RKV.WAIT", past.as_bytes(), b"0"]));
    assert!(e.contains("past this master's newest write"), "{e}");
}

#[test]
fn a_connection_staleness_bound_refuses_stale_reads_and_lets_fresh_ones_through() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s);
    let mut bounded = follower.client();
    let mut unbounded = follower.client();
    let set = bounded.call(&[b"RKV.MAXSTALENESS", b"3000"]).unwrap();
    assert_eq!(set, Reply::Simple("OK".into()));
    // Fresh: read through (once the follower has seen the master's
    // heartbeat move; before, the data's age is unknown and refused).
    wait_for(GENEROUS, "a bounded read of fresh data", || {
        match bounded.call(&[b"GET", b"boot"]) {
            Ok(r) if r == bulk("1") => Ok(()),
            other => Err(other),
        }
    });
    // The master stops: the data ages past the bound.
    master.signal(libc::SIGSTOP);
    let refused = wait_for(
        GENEROUS,
        "a bounded read refused as stale",
        || match bounded.call(&[b"GET", b"boot"]) {
            Err(rkv::client::ClientError::Server { message, .. }) => Ok(message),
            other => Err(other),
        },
    );
    master.signal(libc::SIGCONT);
    assert!(refused.starts_with("MASTERDOWN the data is "), "{refused}");
    assert!(refused.contains("RKV.MAXSTALENESS 3s"), "{refused}");
    // The bound is the connection's: another reads on.
    assert_eq!(unbounded.call(&[b"GET", b"boot"]).unwrap(), bulk("1"));
    assert!(follower.info_num("rkv_reads_refused_bound") >= 1);
    // Fresh again once the master is back.
    wait_for(
        GENEROUS,
        "a bounded read once the master is back",
        || match bounded.call(&[b"GET", b"boot"]) {
            Ok(r) if r == bulk("1") => Ok(()),
            other => Err(other),
        },
    );
    bounded.call(&[b"RKV.MAXSTALENESS", b"OFF"]).unwrap();
    for bad in [&b"0"[..], b"soon"] {
        let e = error(bounded.call(&[b"RKV.MAXSTALENESS", bad]));
        assert!(e.contains("positive number of milliseconds"), "{e}");
    }
}

/// The number of threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn a_thousand_waiting_clients_hold_no_thread_and_may_leave_while_waiting() {
    const CLIENTS: usize = 1000;
    let s = Sandbox::new();
    let (master, follower) = pair(&s);
    let before = threads(follower.pid());
    let mut writer = master.client();
    let next = integer(&writer.call(&[b"RKV.POSITION"]).unwrap()) + 1;
    let request = format!(
        "*3\r\n$8\r\nRKV.WAIT\r\n${}\r\n{next}\r\n$5\r\n60000\r\n",
        next.to_string().len()
    );
    let mut waiting: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = follower.raw();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    wait_until(GENEROUS, "every client to wait", || {
        follower.info_num("blocked_clients") == CLIENTS as i64
    });
    assert_eq!(
        threads(follower.pid()),
        before,
        "waiting clients cost no thread"
    );
    // Clients that leave while they wait are let go at once.
    waiting.truncate(CLIENTS - 100);
    wait_until(GENEROUS, "the clients that left to be let go", || {
        follower.info_num("blocked_clients") == (CLIENTS - 100) as i64
    });
    // One write, and every one still there is answered.
    writer.call(&[b"SET", b"go", b"1"]).unwrap();
    for stream in waiting {
        stream.set_read_timeout(Some(GENEROUS)).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        let reached: i64 = line
            .strip_prefix(':')
            .and_then(|n| n.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("an integer reply, got {line:?}"));
        assert!(reached >= next, "{line:?}");
    }
    assert_eq!(follower.info_num("blocked_clients"), 0);
}

#[test]
fn the_cli_reads_its_write_on_a_follower_through_a_position() {
    let s = Sandbox::new();
    let (master, follower) = pair(&s);
    let (to_master, to_follower) = (
        format!("--connect={}", master.addr),
        format!("--connect={}", follower.addr),
    );
    assert_eq!(rkv(&[&to_master, "put", "user:1", "Alice"]).ok(), "OK\n");
    let position = rkv(&[&to_master, "position"]).ok();
    let after = format!("--read_after={}", position.trim());
    assert_eq!(
        rkv(&[&to_follower, &after, "get", "user:1"]).ok(),
        "Alice\n"
    );
    // A position the follower never reaches: the error, and what to do.
    let far = format!(
        "--read_after={}",
        position.trim().parse::<u64>().unwrap() + 1000
    );
    rkv(&[&to_follower, &far, "--read_timeout=200ms", "get", "user:1"]).fails(
        1,
        &[
            "TIMEOUT position",
            "not reached within 200ms",
            "--read_timeout",
        ],
    );
    // A bound the data meets (once the follower knows its age).
    wait_for(GENEROUS, "a read within --max_staleness", || {
        let run = rkv(&[&to_follower, "--max_staleness=1h", "get", "user:1"]);
        match run.stdout() == "Alice\n" {
            true => Ok(()),
            false => Err(run.stderr()),
        }
    });
    // Only through a daemon.
    let db = format!("--db={}", s.path("nodb").display());
    rkv(&[&db, "--max_staleness=1s", "get", "user:1"]).fails(
        2,
        &["--read_after and --max_staleness are asked of a running daemon"],
    );
    rkv(&[&db, "position"]).fails(2, &["`position` asks a running daemon"]);
}
