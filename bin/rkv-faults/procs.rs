//! The daemons a fault scenario drives: rkv-master and rkv-follower on
//! loopback ports, each logging into the scenario's directory, killed with
//! -9 or stopped with SIGTERM on purpose, and killed when dropped.
//!
//! Each is watched while it runs ([`Watchdog`]): an exit nobody asked for
//! (a crash, a panic, a signal) and a stall (alive, but no reply to `PING`
//! within [`STALL`]) are incidents, which fail the scenario that saw them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkv::client::Client;

use crate::process;
use rkv::daemon::DaemonFile;
use rkv::resp::Reply;
use rkv::server::ListenAddr;

/// A running daemon.
pub struct Proc {
    child: Option<Child>,
    pub addr: ListenAddr,
    pub log: PathBuf,
    watchdog: Option<Watchdog>,
}

/// How long a live daemon may leave a `PING` unanswered before it counts
/// as stalled.
pub const STALL: Duration = Duration::from_secs(5);

/// What the watchdogs saw since the last [`take_incidents`].
static INCIDENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The incidents seen since the last call: each a sentence naming the
/// daemon, what happened, and the end of its log.
pub fn take_incidents() -> Vec<String> {
    std::mem::take(&mut *INCIDENTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Watches one daemon from its own thread until it is stopped on purpose.
struct Watchdog {
    /// Set before the daemon is stopped or killed on purpose: whatever
    /// happens after is not an incident.
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: String, pid: u32, addr: ListenAddr, log: PathBuf) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let watching = Arc::clone(&done);
        std::thread::spawn(move || {
            let report = |what: String| {
                // Stopped on purpose while this looked: not an incident.
                if watching.load(Ordering::SeqCst) {
                    return;
                }
                let tail = log_tail(&log, 8);
                INCIDENTS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{name} (pid {pid}) {what}; its log ends:\n{tail}"));
            };
            let mut stalled = false;
            while !watching.load(Ordering::SeqCst) {
                if let Some(how) = exited(pid) {
                    report(format!("exited unexpectedly: {how}"));
                    return;
                }
                let answered = answers_ping(&addr);
                // Said once a stall, when first seen.
                if !answered && !stalled && exited(pid).is_none() {
                    report(format!(
                        "stalled: alive but answered no PING within {STALL:?}"
                    ));
                }
                stalled = !answered;
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Watchdog { done }
    }

    fn stand_down(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// How the child `pid` ended, if it has, without reaping it (its owner
/// still waits for it).
fn exited(pid: u32) -> Option<String> {
    // SAFETY: waitid(2) with WNOWAIT only reads the state of our own child
    // into a zeroed siginfo_t.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 {
            return None;
        }
        if info.si_pid() == 0 {
            return None;
        }
        let status = info.si_status();
        Some(match info.si_code {
            libc::CLD_EXITED => format!("exit status {status}"),
            libc::CLD_DUMPED => format!("killed by signal {status}, core dumped"),
            _ => format!("killed by signal {status}"),
        })
    }
}

/// Whether the daemon at `addr` answers a `PING` within [`STALL`] (any
/// reply will do: with a password it is NOAUTH, under a flood an error).
fn answers_ping(addr: &ListenAddr) -> bool {
    let ListenAddr::Tcp(addr) = addr else {
        return true;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(addr, STALL) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(STALL));
    let _ = stream.set_write_timeout(Some(STALL));
    let mut byte = [0u8; 1];
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && stream.read(&mut byte).is_ok_and(|n| n == 1)
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Proc {
    pub fn master(db: &Path, backups: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut args = vec![
            "--db".into(),
            path(db),
            "--backup-dir".into(),
            path(backups),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::start("rkv-master", args, env, db, db.with_extension("log"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--backup-dir".into(),
            path(backups),
            "--data".into(),
            path(data),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::start("rkv-follower", args, &[], data, data.with_extension("log"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `name` (whose database or data directory is `dir`) on a port
    /// of its choosing, learns the port from the daemon file it writes
    /// there, and waits until it answers PING; `Err` with its log when it
    /// exits first (a refused start).
    pub fn start(
        name: &str,
        mut args: Vec<String>,
        env: &[(&str, &str)],
        dir: &Path,
        log: PathBuf,
    ) -> Result<Proc, String> {
        args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(process::sibling(name))
            .args(&args)
            .envs(env.iter().copied())
            .env("RKV_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let file = DaemonFile::wait_for(dir, child.id(), Duration::from_secs(60));
        let Some(addr) = file.and_then(|f| f.tcp_addr()) else {
            if child.try_wait().unwrap().is_none() {
                let _ = child.kill();
            }
            let status = child.wait().unwrap();
            let proc = Proc {
                child: None,
                addr: "127.0.0.1:1".parse().unwrap(),
                log,
                watchdog: None,
            };
            return Err(format!("{name} exited ({status}): {}", proc.log_tail()));
        };
        let mut proc = Proc {
            child: Some(child),
            addr,
            log,
            watchdog: None,
        };
        loop {
            if proc
                .client()
                // Any reply will do: with a password it is NOAUTH.
                .is_some_and(|mut c| c.call_raw(&[b"PING"]).is_ok())
            {
                proc.watchdog = Some(Watchdog::start(
                    name.to_string(),
                    proc.pid(),
                    proc.addr.clone(),
                    proc.log.clone(),
                ));
                return Ok(proc);
            }
            if let Some(status) = proc.child.as_mut().unwrap().try_wait().unwrap() {
                proc.child = None;
                return Err(format!("{name} exited ({status}): {}", proc.log_tail()));
            }
            assert!(Instant::now() < deadline, "{name} did not answer");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn client(&self) -> Option<Client> {
        Client::connect(&self.addr, None).ok()
    }

    /// One INFO field.
    pub fn info(&self, field: &str) -> Option<String> {
        self.client()?.info_field(None, field).ok()?
    }

    /// Several INFO fields read at one moment (one INFO), in the order
    /// asked; `None` for a field not there.
    pub fn info_fields(&self, fields: &[&str]) -> Option<Vec<Option<String>>> {
        let Reply::Bulk(Some(text)) = self.client()?.call(&[b"INFO"]).ok()? else {
            return None;
        };
        let text = String::from_utf8_lossy(&text);
        Some(
            fields
                .iter()
                .map(|field| {
                    let prefix = format!("{field}:");
                    text.lines()
                        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
                })
                .collect(),
        )
    }

    pub fn info_num(&self, field: &str) -> i64 {
        self.info(field).and_then(|v| v.parse().ok()).unwrap_or(-1)
    }

    pub fn get(&self, key: &str) -> Option<Reply> {
        self.client()?.call_raw(&[b"GET", key.as_bytes()]).ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 5)
    }

    /// Tells the watchdog that what follows is on purpose.
    fn stand_down(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.stand_down();
        }
    }

    /// CPU time (user + system) used so far.
    pub fn cpu_time(&self) -> Duration {
        process::cpu_time(self.pid())
    }

    /// kill -9, and reap.
    pub fn kill(mut self) {
        self.stand_down();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.stand_down();
        process::terminate(self.child.take()?, Duration::from_secs(60))?.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stand_down();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns
/// how long it took, or `None` on timeout.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_seen_without_reaping_the_child() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id();
        let how = wait_until_some(|| exited(pid));
        assert_eq!(how, "exit status 3");
        // Still the owner's to reap.
        assert_eq!(child.wait().unwrap().code(), Some(3));

        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        assert_eq!(exited(child.id()), None);
        child.kill().unwrap();
        let how = wait_until_some(|| exited(child.id()));
        assert_eq!(how, "killed by signal 9");
        child.wait().unwrap();
    }

    #[test]
    fn a_listener_that_never_answers_is_a_stall() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ListenAddr::Tcp(listener.local_addr().unwrap());
        // Accepted by the kernel, never answered.
        assert!(!answers_ping(&addr));
        // Now answered (the unanswered connection first, already closed).
        std::thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                let mut buf = [0u8; 64];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"+PONG\r\n");
            }
        });
        assert!(answers_ping(&addr));
    }

    fn wait_until_some(mut f: impl FnMut() -> Option<String>) -> String {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "never seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
