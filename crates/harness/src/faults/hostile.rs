//! The hostile-client scenarios: a seeded RESP fuzzer (mutated commands,
//! random bytes, huge declared lengths, deep nesting), and floods (thousands
//! of connections, unauthenticated clients, slow senders, clients that never
//! read, a 100,000-command pipeline, a million-argument request sent in
//! 4 KiB writes). Each counts crashes, hangs and the daemon's peak memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::procs::Proc;
use crate::scenarios::outcome;
use crate::{Outcome, Rng};
use rkv_testkit::wait::time_until as wait_for;

/// Peak resident memory a hostile scenario may drive a daemon to.
pub const RSS_BOUND_MIB: f64 = 512.0;

fn peak_rss_mib(proc: &Proc) -> f64 {
    crate::process::peak_rss_mib(proc.pid())
}

/// How long a daemon may take to answer before it counts as hung: a hung
/// daemon never answers, and a busy 2-core machine may take seconds.
const HUNG: Duration = Duration::from_secs(60);

/// Whether the daemon answers PING on a new connection within [`HUNG`].
fn answers(proc: &Proc) -> bool {
    let Ok(stream) = TcpStream::connect(proc.addr.to_string()) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(HUNG));
    let mut stream = stream;
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

pub(crate) fn alive(proc: &Proc) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(proc.pid() as i32, 0) == 0 }
}

/// A valid request, as RESP or inline.
pub(crate) fn valid(rng: &mut Rng) -> Vec<u8> {
    let key = format!("k{}", rng.next_u64() % 50);
    let commands: [&[&str]; 16] = [
        &["GET", &key],
        &["SET", &key, "value"],
        &["SET", &key, "v", "NX"],
        &["MGET", &key, "k1", "k2"],
        &["DEL", &key, &key],
        &["EXISTS", &key],
        &["SCAN", "0", "MATCH", "k[0-9", "COUNT", "5"],
        &["INFO", "replication"],
        &["PING"],
        &["ECHO", "hello"],
        &["MULTI"],
        &["EXEC"],
        &["AUTH", "nope"],
        &["CLIENT", "SETNAME", "fuzz"],
        &["COMMAND", "COUNT"],
        &["RKV.SCAN", "", "", "3"],
    ];
    let args = commands[(rng.next_u64() % commands.len() as u64) as usize];
    if rng.next_u64().is_multiple_of(4) {
        let mut line = args.join(" ").into_bytes();
        line.extend_from_slice(b"\r\n");
        return line;
    }
    let mut wire = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        wire.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    wire
}

/// A request mutated as a hostile or broken client would send it.
pub(crate) fn mutate(rng: &mut Rng, mut wire: Vec<u8>) -> Vec<u8> {
    match rng.next_u64() % 9 {
        0 => wire, // valid
        1 if !wire.is_empty() => {
            let i = (rng.next_u64() % wire.len() as u64) as usize;
            wire[i] ^= 1 << (rng.next_u64() % 8);
            wire
        }
        2 if !wire.is_empty() => {
            let i = (rng.next_u64() % wire.len() as u64) as usize;
            wire.truncate(i);
            wire
        }
        3 => {
            let i = (rng.next_u64() % (wire.len() as u64 + 1)) as usize;
            let junk: Vec<u8> = (0..rng.next_u64() % 16)
                .map(|_| rng.next_u64() as u8)
                .collect();
            wire.splice(i..i, junk);
            wire
        }
        4 => {
            // A huge declared length.
            let n = [
                "999999999999",
                "2147483648",
                "-2",
                "67108865",
                "1048577",
                "18446744073709551616",
            ][(rng.next_u64() % 6) as usize];
            format!("*2\r\n$3\r\nGET\r\n${n}\r\nabc\r\n").into_bytes()
        }
        5 => {
            // Deep nesting: arrays inside a request.
            let depth = 1 + rng.next_u64() % 10_000;
            let mut nested = Vec::new();
            for _ in 0..depth {
                nested.extend_from_slice(b"*1\r\n");
            }
            nested.extend_from_slice(b"$4\r\nPING\r\n");
            nested
        }
        6 => (0..rng.next_u64() % 512)
            .map(|_| rng.next_u64() as u8)
            .collect(),
        7 => format!("*{}\r\n", rng.next_u64() % 2_000_000).into_bytes(),
        _ => {
            // A request cut off, then another.
            let cut = wire.len() / 2;
            let mut both = wire[..cut].to_vec();
            both.extend_from_slice(&wire);
            both
        }
    }
}

pub fn fuzz(dir: &Path, requests: usize, rng: &mut Rng) -> Outcome {
    let backups = dir.join("backups");
    let master = Proc::master(&dir.join("db"), &backups, &["--interval", "1s"], &[]);
    let follower = Proc::follower(&backups, &dir.join("f1"), &["--poll-interval", "200ms"]);
    let (mut sent, mut crashes, mut hangs) = (0usize, 0, 0);
    let started = Instant::now();
    while sent < requests {
        for daemon in [&master, &follower] {
            let Ok(mut stream) = TcpStream::connect(daemon.addr.to_string()) else {
                continue;
            };
            let _ = stream.set_nonblocking(true);
            let mut sink = [0u8; 65536];
            // Valid requests, then one mutated: a request that cannot be
            // framed ends the connection, so it comes last.
            let valid_first = rng.next_u64() % 8;
            for i in 0..=valid_first {
                let request = valid(rng);
                let request = if i == valid_first {
                    mutate(rng, request)
                } else {
                    request
                };
                if stream.write_all(&request).is_ok() {
                    sent += 1;
                }
                while let Ok(n) = stream.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        for daemon in [&master, &follower] {
            if !alive(daemon) {
                crashes += 1;
            } else if !answers(daemon) {
                hangs += 1;
            }
        }
        if crashes + hangs > 0 {
            break;
        }
    }
    let rss = peak_rss_mib(&master).max(peak_rss_mib(&follower));
    let line = format!(
        "fuzzed requests (seeded mutations, random bytes, huge lengths, nesting): {sent} \
         against both daemons in {:.0} s, {crashes} crashes, {hangs} hangs, peak RSS {rss:.0} MiB",
        started.elapsed().as_secs_f64()
    );
    outcome(
        "fuzz",
        crashes == 0 && hangs == 0 && rss < RSS_BOUND_MIB,
        line,
    )
}

pub fn floods(dir: &Path, connections: usize) -> Outcome {
    rkv_harness::raise_nofile();
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let pw = pw.display().to_string();
    let master = Proc::master(
        &dir.join("db"),
        &dir.join("backups"),
        &["--interval", "0", "--password-file", &pw],
        &[],
    );
    let addr = master.addr.to_string();
    let mut parts = Vec::new();

    // Thousands of connections at once, each answered.
    let mut open = Vec::new();
    for _ in 0..connections {
        if let Ok(s) = TcpStream::connect(&addr) {
            open.push(s);
        }
    }
    let mut answered = 0;
    for s in &mut open {
        let _ = s.set_read_timeout(Some(HUNG));
        let mut reply = [0u8; 7];
        if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() {
            answered += 1;
        }
    }
    drop(open);
    parts.push(format!("{answered} of {connections} connections answered"));

    // Unauthenticated clients trying to make the server hold large requests.
    let mut closed = 0;
    let flooders = 50;
    let mut streams: Vec<TcpStream> = (0..flooders)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for s in &mut streams {
        let _ = s.write_all(b"*2\r\n$3\r\nSET\r\n$67108000\r\n");
        let _ = s.write_all(&vec![b'x'; 1 << 20]);
    }
    for s in &mut streams {
        let _ = s.set_read_timeout(Some(HUNG));
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if got.starts_with(b"-ERR Protocol error: unauthenticated") {
            closed += 1;
        }
    }
    drop(streams);
    parts.push(format!(
        "{closed} of {flooders} unauthenticated floods refused"
    ));

    // Authenticated: slow senders and clients that never read.
    let auth = |s: &mut TcpStream| {
        let _ = s.write_all(b"AUTH secret\r\n");
        let mut ok = [0u8; 5];
        let _ = s.read_exact(&mut ok);
    };
    let mut c = rkv::client::Client::connect(&master.addr, Some(b"secret")).unwrap();
    c.call(&[b"SET", b"big", &vec![b'b'; 64 << 10]]).unwrap();
    let mut readers: Vec<TcpStream> = (0..10)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for s in &mut readers {
        auth(s);
        s.set_nonblocking(true).unwrap();
        let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(1000);
        // Until the server stops reading (its output cap) or 100,000 sent.
        for _ in 0..100 {
            if s.write_all(&request).is_err() {
                break;
            }
        }
    }
    let mut slow: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    for s in &mut slow {
        auth(s);
    }
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    for byte in request.iter().take(request.len() - 1) {
        for s in &mut slow {
            let _ = s.write_all(std::slice::from_ref(byte));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let others_served = answers_authenticated(&master);
    drop(readers);
    drop(slow);
    parts.push(format!(
        "10 non-reading and 20 slow clients: others served {}",
        if others_served { "yes" } else { "NO" }
    ));

    // One connection pipelines 100,000 commands and reads every reply.
    let mut s = TcpStream::connect(&addr).unwrap();
    auth(&mut s);
    let n = 100_000;
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let batch = b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n".repeat(1000);
            for _ in 0..n / 1000 {
                s.write_all(&batch).unwrap();
            }
        })
    };
    s.set_read_timeout(Some(HUNG)).unwrap();
    // Every reply is the 5 bytes `$-1\r\n` (no such key).
    let (mut bytes, mut wrong) = (0usize, false);
    let mut buf = vec![0u8; 1 << 16];
    while bytes < n * 5 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                for (i, &b) in buf[..k].iter().enumerate() {
                    wrong |= b != b"$-1\r\n"[(bytes + i) % 5];
                }
                bytes += k;
            }
        }
    }
    let replies = if wrong { 0 } else { bytes / 5 };
    writer.join().unwrap();
    parts.push(format!("a {n}-command pipeline: {replies} replies"));

    let crashed = !alive(&master);
    let rss = peak_rss_mib(&master);
    let ok = !crashed
        && answered == connections
        && closed == flooders
        && others_served
        && replies == n
        && rss < RSS_BOUND_MIB;
    let line = format!(
        "hostile clients: {}; {} crashes, peak RSS {rss:.0} MiB (bound {RSS_BOUND_MIB:.0})",
        parts.join(", "),
        u8::from(crashed)
    );
    outcome("floods", ok, line)
}

fn answers_authenticated(proc: &Proc) -> bool {
    rkv::client::Client::connect(&proc.addr, Some(b"secret"))
        .ok()
        .and_then(|mut c| c.call(&[b"GET", b"big"]).ok())
        .is_some_and(|r| matches!(r, Reply::Bulk(Some(_))))
}

/// A million-argument MGET sent in 4 KiB writes: the server's CPU for it,
/// and how long PINGs from other clients waited meanwhile.
pub fn big_request(dir: &Path, args: usize) -> Outcome {
    let master = Proc::master(
        &dir.join("db"),
        &dir.join("backups"),
        &["--interval", "0"],
        &[],
    );
    let addr = master.addr.to_string();
    let mut request = format!("*{}\r\n$4\r\nMGET\r\n", args + 1).into_bytes();
    for i in 0..args {
        let key = format!("k{}", i % 1000);
        request.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    // PING from two clients (one per worker on two cores) all along; the
    // ones answered before the last byte of the request was sent measure
    // what its arrival and parsing cost others. Executing a million lookups
    // then holds its worker, as it would in Redis; that is reported apart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pingers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, addr) = (std::sync::Arc::clone(&stop), addr.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut pings = Vec::new();
                let mut reply = [0u8; 7];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    s.write_all(b"PING\r\n").unwrap();
                    s.read_exact(&mut reply).unwrap();
                    pings.push((t, t.elapsed()));
                    std::thread::sleep(Duration::from_millis(2));
                }
                pings
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let cpu_before = master.cpu_time();
    let mut s = TcpStream::connect(&addr).unwrap();
    let reader = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            // A null-bulk reply for each of the missing keys: 5 bytes each.
            while got < args * 5 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            (got, Instant::now())
        })
    };
    let started = Instant::now();
    for chunk in request.chunks(4096) {
        s.write_all(chunk).unwrap();
        // As a client on a real network does: a little at a time.
        std::thread::sleep(Duration::from_micros(50));
    }
    let sent = Instant::now();
    let (got, answered) = reader.join().unwrap();
    let cpu = master.cpu_time() - cpu_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = pingers
        .into_iter()
        .flat_map(|p| p.join().unwrap_or_default())
        .filter(|(start, took)| *start >= started && *start + *took <= sent)
        .map(|(_, took)| took)
        .max()
        .unwrap_or_default();
    let served = wait_for(HUNG, || answers(&master)).is_some();
    let line = format!(
        "a {args}-argument MGET in 4 KiB writes: {:.2} s of server CPU in all, arrival and \
         parsing and a million lookups ({} reply bytes {:.2} s after the last byte was sent); \
         other clients' PINGs answered within {} ms while it arrived",
        cpu.as_secs_f64(),
        got,
        answered.saturating_duration_since(sent).as_secs_f64(),
        worst.as_millis()
    );
    outcome("big-request", served && got >= args * 5, line)
}
