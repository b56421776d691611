//! What serving one request costs rkv against redis-server, beyond
//! throughput: the system calls each unpipelined request makes (counted by
//! `strace -c` on the whole process while redis-benchmark runs), and the
//! resident memory of a server holding the keys with many idle clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemons::redis_benchmark_keys;

/// One server's system calls over `requests` unpipelined requests.
pub struct SyscallCount {
    pub server: String,
    pub command: String,
    pub requests: usize,
    /// `read`, `recvfrom`, `readv`.
    pub reads: u64,
    /// `write`, `sendto`, `writev`, `sendmsg`.
    pub writes: u64,
    /// `epoll_wait`, `epoll_pwait`.
    pub waits: u64,
    /// Every system call of every thread.
    pub total: u64,
}

impl SyscallCount {
    pub fn per_request(&self) -> f64 {
        self.total as f64 / self.requests as f64
    }
}

/// Counts the system calls of process `pid` (every thread) while
/// redis-benchmark sends `requests` unpipelined `command`s from 20
/// clients over `keys` keys to `port`; `None` (and why, on stderr) when
/// strace cannot trace it.
pub fn count_syscalls(
    server: &str,
    pid: u32,
    port: u16,
    command: &str,
    requests: usize,
    keys: usize,
) -> Option<SyscallCount> {
    let summary = std::env::temp_dir().join(format!("rkv-bench-strace-{pid}.txt"));
    let mut strace = match Command::new("strace")
        .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
        .arg(&summary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            crate::log(&format!(
                "strace: {e}; system calls not counted (apt-get install strace)"
            ));
            return None;
        }
    };
    // strace says so on stderr once it has attached to the threads.
    let mut stderr = BufReader::new(strace.stderr.take().expect("piped"));
    let mut line = String::new();
    let attached = stderr.read_line(&mut line).is_ok() && line.contains("attached");
    if !attached {
        crate::log(&format!("strace could not attach to {server}: {line}"));
        let _ = strace.kill();
        let _ = strace.wait();
        return None;
    }
    // The other threads' attach lines follow at once; drain them aside.
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    redis_benchmark_keys(port, command, requests, 20, 1, keys);
    // SIGINT: strace detaches and writes its summary.
    // SAFETY: kill with a valid signal to our child's pid.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let text = std::fs::read_to_string(&summary).unwrap_or_default();
    let _ = std::fs::remove_file(&summary);
    let mut count = SyscallCount {
        server: server.to_string(),
        command: command.to_uppercase(),
        requests,
        reads: 0,
        writes: 0,
        waits: 0,
        total: 0,
    };
    for line in text.lines() {
        // "% time seconds usecs/call calls [errors] syscall"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(calls)) = (fields.last(), fields.get(3)) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        match *name {
            "total" => count.total = calls,
            "read" | "recvfrom" | "readv" => count.reads += calls,
            "write" | "sendto" | "writev" | "sendmsg" => count.writes += calls,
            "epoll_wait" | "epoll_pwait" => count.waits += calls,
            _ => {}
        }
    }
    (count.total > 0).then_some(count)
}

/// A server's resident memory holding its keys, alone and with idle
/// clients connected.
pub struct MemoryUse {
    pub server: String,
    pub keys: usize,
    pub idle_clients: usize,
    pub before_bytes: u64,
    pub with_clients_bytes: u64,
}

/// Connects `clients` clients to `port`, each sending one PING and then
/// nothing, and measures the resident memory of `pid` before and with
/// them; the clients close on return.
pub fn memory_with_idle_clients(
    server: &str,
    pid: u32,
    port: u16,
    keys: usize,
    clients: usize,
) -> MemoryUse {
    let before_bytes = rss_bytes(pid);
    let mut idle = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect an idle client");
        stream.write_all(b"PING\r\n").expect("send PING");
        idle.push(stream);
    }
    // Every client answered: each is accepted and has its buffers.
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut pong = [0u8; 7];
        stream
            .read_exact(&mut pong)
            .expect("PONG from an idle client");
    }
    // The allocator may return memory a moment late; the peak is what
    // counts, read a few times over a second.
    let until = Instant::now() + Duration::from_secs(1);
    let mut with_clients_bytes = rss_bytes(pid);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        with_clients_bytes = with_clients_bytes.max(rss_bytes(pid));
    }
    MemoryUse {
        server: server.to_string(),
        keys,
        idle_clients: clients,
        before_bytes,
        with_clients_bytes,
    }
}

/// Resident memory of `pid` now (`VmRSS`), in bytes; 0 once it is gone.
fn rss_bytes(pid: u32) -> u64 {
    crate::process::status_kib(pid, "VmRSS").map_or(0, |kib| kib * 1024)
}
