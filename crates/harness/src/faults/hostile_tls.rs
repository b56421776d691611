//! The hostile clients over TLS: thousands of TLS sessions open at once,
//! clients that connect and never finish a handshake, broken handshakes and
//! records, fuzzed RESP inside TLS, clients that never read, and a long
//! pipeline. A daemon must answer the others throughout, cut the silent
//! ones off, and stay within the memory bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkv::client::{Access, Client, ClientTls};
use rkv::resp::Reply;
use rkv::server::ListenAddr;
use rkv_testkit::tls::Pki;
use rustls::pki_types::ServerName;

use crate::hostile::{mutate, valid, RSS_BOUND_MIB};
use crate::procs::Proc;
use crate::scenarios::outcome;
use crate::{Outcome, Rng};

/// How long a daemon may take to answer before it counts as hung.
const HUNG: Duration = Duration::from_secs(60);

type Session = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS session with the daemon, its handshake done.
fn session(addr: &str, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Session> {
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(HUNG))?;
    socket.set_write_timeout(Some(HUNG))?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address");
    let connection =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    let mut session = rustls::StreamOwned::new(connection, socket);
    while session.conn.is_handshaking() {
        session.conn.complete_io(&mut session.sock)?;
    }
    Ok(session)
}

/// Logs in with the scenario's password; whether `+OK` came back.
fn log_in(session: &mut Session) -> bool {
    let mut ok = [0u8; 5];
    session.write_all(b"AUTH secret\r\n").is_ok()
        && session.read_exact(&mut ok).is_ok()
        && &ok == b"+OK\r\n"
}

/// The first bytes a TLS client sends: a real ClientHello.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").expect("an IP address");
    let mut connection =
        rustls::ClientConnection::new(Arc::clone(config), name).expect("a client session");
    let mut hello = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut hello).expect("into a Vec");
    }
    hello
}

pub fn run(dir: &Path, connections: usize, fuzz_requests: usize, rng: &mut Rng) -> Outcome {
    rkv_harness::raise_nofile();
    let pki = Pki::new(&dir.join("pki"));
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (pw, tls) = (pw.display().to_string(), pki.daemon_flags(false));
    let mut flags = vec![
        "--interval",
        "0",
        "--password-file",
        &pw,
        "--tls-listen",
        "127.0.0.1:0",
    ];
    flags.extend(tls.iter().map(String::as_str));
    let master = Proc::master(&dir.join("db"), &dir.join("backups"), &flags, &[]);
    let addr = master.tls_addr.clone().expect("a TLS listener").to_string();
    let config = pki.client_config(None);
    let tls = ClientTls::new(Some(&pki.ca()), None, None).expect("the CA");
    let access = Access {
        tls: Some(tls),
        password: Some(b"secret".to_vec()),
        ..Access::default()
    };
    let tls_addr: ListenAddr = addr.parse().expect("an address");
    // A well-behaved TLS client: how long GET takes it, if it is answered.
    let served = || {
        let started = Instant::now();
        let answered = Client::connect_with(&tls_addr, &access)
            .and_then(|mut c| c.call(&[b"GET", b"big"]))
            .is_ok_and(|r| matches!(r, Reply::Bulk(Some(_))));
        answered.then(|| started.elapsed())
    };
    let mut c = Client::connect_with(&tls_addr, &access).expect("a TLS client");
    c.call(&[b"SET", b"big", &vec![b'b'; 64 << 10]]).unwrap();
    let mut parts = Vec::new();
    let mut ok = true;

    // Thousands of TLS sessions, all open at once, each answered.
    let mut open = Vec::new();
    for _ in 0..connections {
        if let Ok(mut s) = session(&addr, &config) {
            let mut reply = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() {
                open.push(s);
            }
        }
    }
    let answered = open.len();
    ok &= answered == connections;
    let others = served();
    drop(open);
    parts.push(format!(
        "{answered} of {connections} TLS sessions answered, all open at once (another client \
         then served in {:.1} ms)",
        others.map_or(-1.0, |d| d.as_secs_f64() * 1000.0)
    ));
    ok &= others.is_some();

    // Clients that connect and say nothing, or half a ClientHello.
    let hello = client_hello(&config);
    // Clients connected now, INFO's own included (-1: no answer).
    let clients = || {
        Client::connect(&master.addr, Some(b"secret"))
            .and_then(|mut c| c.info_field(Some("clients"), "connected_clients"))
            .ok()
            .flatten()
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    // The sessions above let go: `c` and INFO's own client are left.
    let baseline = 2;
    let settled = rkv_testkit::wait::time_until(HUNG, || (0..=baseline).contains(&clients()));
    let mut silent: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = s.write_all(&hello[..hello.len() / 2]);
            silent.push(s);
        }
    }
    let half_open = silent.len();
    // All taken in (counted) before the clock starts.
    let admitted = rkv_testkit::wait::time_until(HUNG, || clients() >= baseline + half_open as i64);
    let started = Instant::now();
    let others = served();
    let cut_off = rkv_testkit::wait::time_until(HUNG, || (0..=baseline).contains(&clients()));
    drop(silent);
    parts.push(format!(
        "{half_open} clients silent or stopped mid-handshake: others served in {:.1} ms, all cut \
         off after {}",
        others.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
        cut_off.map_or("NEVER".into(), |_| format!(
            "{:.0} s",
            started.elapsed().as_secs_f64()
        ))
    ));
    ok &= others.is_some() && settled.is_some() && admitted.is_some() && cut_off.is_some();

    // Broken TLS: random bytes, a ClientHello with a byte flipped, plain
    // RESP, and garbage records after a good handshake.
    let broken = (connections / 5).max(100);
    for i in 0..broken {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(HUNG));
        let bytes: Vec<u8> = match i % 4 {
            0 => (0..1 + rng.next_u64() % 2048)
                .map(|_| rng.next_u64() as u8)
                .collect(),
            1 => {
                let mut flipped = hello.clone();
                let at = (rng.next_u64() % flipped.len() as u64) as usize;
                flipped[at] ^= 1 << (rng.next_u64() % 8);
                flipped
            }
            2 => b"*1\r\n$4\r\nPING\r\n".to_vec(),
            _ => {
                if let Ok(mut good) = session(&addr, &config) {
                    let junk: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
                    let _ = good
                        .sock
                        .write_all(&[&[23u8, 3, 3, 0, 64][..], &junk].concat());
                }
                continue;
            }
        };
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever the daemon answers (an alert, or nothing), it closes.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let others = served();
    parts.push(format!(
        "{broken} broken handshakes and records refused (others served: {})",
        if others.is_some() { "yes" } else { "NO" }
    ));
    ok &= others.is_some();

    // Fuzzed RESP inside TLS sessions, as the plain fuzzer sends it.
    let (mut fuzzed, mut sessions) = (0usize, 0usize);
    while fuzzed < fuzz_requests {
        let Ok(mut s) = session(&addr, &config) else {
            break;
        };
        sessions += 1;
        if rng.next_u64().is_multiple_of(2) && !log_in(&mut s) {
            break;
        }
        let valid_first = rng.next_u64() % 8;
        let mut wire = Vec::new();
        for i in 0..=valid_first {
            let request = valid(rng);
            wire.extend(if i == valid_first {
                mutate(rng, request)
            } else {
                request
            });
            fuzzed += 1;
        }
        // Sent and left: the daemon answers into the socket, and ends the
        // session at the protocol error or at the client's close.
        let _ = s.write_all(&wire);
        let _ = s.flush();
    }
    let others = served();
    parts.push(format!(
        "{fuzzed} fuzzed requests in {sessions} TLS sessions (others served: {})",
        if others.is_some() { "yes" } else { "NO" }
    ));
    ok &= others.is_some();

    // Clients that never read: the daemon stops reading them at its cap.
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let (addr, config) = (addr.clone(), Arc::clone(&config));
            std::thread::spawn(move || {
                let Ok(mut s) = session(&addr, &config) else {
                    return;
                };
                if !log_in(&mut s) {
                    return;
                }
                let _ = s.sock.set_write_timeout(Some(Duration::from_secs(2)));
                let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000);
                for _ in 0..100 {
                    if s.write_all(&request).is_err() {
                        break;
                    }
                }
                // Held open, unread, until the scenario's end.
                std::thread::sleep(Duration::from_secs(3));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let others = served();
    for reader in readers {
        let _ = reader.join();
    }
    parts.push(format!(
        "10 TLS clients that never read: others served {}",
        if others.is_some() { "yes" } else { "NO" }
    ));
    ok &= others.is_some();

    // 100,000 commands pipelined 1,000 deep on one session.
    let n = 100_000;
    let mut replies = 0;
    if let Ok(mut s) = session(&addr, &config) {
        if log_in(&mut s) {
            let batch = b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n".repeat(1000);
            let mut reply = vec![0u8; 5 * 1000];
            for _ in 0..n / 1000 {
                if s.write_all(&batch).is_err() || s.read_exact(&mut reply).is_err() {
                    break;
                }
                if reply.chunks(5).any(|r| r != b"$-1\r\n") {
                    break;
                }
                replies += 1000;
            }
        }
    }
    parts.push(format!(
        "{n} commands pipelined 1,000 deep: {replies} replies"
    ));
    ok &= replies == n;

    let crashed = !crate::hostile::alive(&master);
    let rss = crate::process::peak_rss_mib(master.pid());
    ok &= !crashed && rss < RSS_BOUND_MIB;
    let line = format!(
        "hostile clients over TLS: {}; {} crashes, peak RSS {rss:.0} MiB (bound \
         {RSS_BOUND_MIB:.0})",
        parts.join(", "),
        u8::from(crashed)
    );
    outcome("tls-hostile", ok, line)
}
