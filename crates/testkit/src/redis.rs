//! redis-server, the peer of the differential tests and the benchmark,
//! started on a free loopback port. redis-server cannot pick its own TCP
//! port, and a port picked here may be taken before it binds (by another
//! test's daemon, say): so a server counts as started only once the port
//! answers with this child's own pid, and a child that exits (the port was
//! taken) is started again on another port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one start may take before it is a failure: generous, for a
/// busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts `redis-server` with `args` (besides `--port` and `--bind`) on a
/// free loopback port; returns the child and its port.
///
/// # Panics
///
/// When redis-server is not installed, or does not answer in time.
pub fn start_redis_server(args: &[&str]) -> (Child, u16) {
    let mut taken = Vec::new();
    for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs the Debian package redis-server)");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Most likely another process bound the port first.
                taken.push(format!("{port} ({status})"));
                break;
            }
            if pid_on(port) == Some(child.id()) {
                return (child, port);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {port} did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server exited at start on every port tried: {taken:?}");
}

/// The `process_id` that `INFO server` on `port` reports, if a Redis
/// server answers there.
fn pid_on(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    // A bulk reply: read until the field is in, or the reply has ended.
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((pid, _)) = rest.split_once("\r\n") {
                return pid.trim().parse().ok();
            }
        }
        if reply.len() > 1 << 20 {
            break;
        }
    }
    None
}
