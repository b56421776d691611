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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rkv::client::Client;

use rkv::resp::Reply;
use rkv::server::ListenAddr;
use rkv_testkit::daemon::{Daemon, Launch};
use rkv_testkit::process;

/// A running daemon, watched.
pub struct Proc {
    /// Where it listens.
    pub addr: ListenAddr,
    /// Its TLS address, when started with `--tls-listen`.
    pub tls_addr: Option<ListenAddr>,
    daemon: Option<Daemon>,
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

impl Proc {
    pub fn master(db: &Path, backups: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let launch = Launch::master(db, backups).args(extra).env(env);
        Proc::launch("rkv-master", launch).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Proc {
        let launch = Launch::follower(backups, data).args(extra);
        Proc::launch("rkv-follower", launch).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `name` (whose database or data directory is `dir`), logging
    /// into `log`; `Err` with its log when it exits first (a refused
    /// start).
    pub fn start(
        name: &str,
        args: Vec<String>,
        env: &[(&str, &str)],
        dir: &Path,
        log: PathBuf,
    ) -> Result<Proc, String> {
        let launch = Launch::program(process::bin(name), args, dir)
            .env(env)
            .log(Some(log));
        Proc::launch(name, launch)
    }

    /// Starts the daemon (its log kept across restarts in one scenario)
    /// and watches it from then on.
    fn launch(name: &str, launch: Launch) -> Result<Proc, String> {
        let daemon = launch.append_log().start()?;
        let log = daemon.log.clone().unwrap_or_default();
        let watchdog = Watchdog::start(name.to_string(), daemon.pid(), daemon.addr.clone(), log);
        Ok(Proc {
            addr: daemon.addr.clone(),
            tls_addr: daemon.tls_addr.clone(),
            daemon: Some(daemon),
            watchdog: Some(watchdog),
        })
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("running")
    }

    pub fn client(&self) -> Option<Client> {
        self.daemon().try_client()
    }

    /// One INFO field.
    pub fn info(&self, field: &str) -> Option<String> {
        self.daemon().info(field)
    }

    /// Several INFO fields read at one moment (one INFO), in the order
    /// asked; `None` for a field not there.
    pub fn info_fields(&self, fields: &[&str]) -> Option<Vec<Option<String>>> {
        self.daemon().info_fields(fields)
    }

    pub fn info_num(&self, field: &str) -> i64 {
        self.daemon().info_num(field)
    }

    pub fn get(&self, key: &str) -> Option<Reply> {
        self.daemon().get(key)
    }

    pub fn pid(&self) -> u32 {
        self.daemon().pid()
    }

    /// CPU time (user + system) used so far.
    pub fn cpu_time(&self) -> Duration {
        self.daemon().cpu_time()
    }

    /// Tells the watchdog that what follows is on purpose.
    fn stand_down(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.stand_down();
        }
    }

    /// kill -9, and reap.
    pub fn kill(mut self) {
        self.stand_down();
        if let Some(daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// SIGTERM; the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.stand_down();
        self.daemon.take()?.stop()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The daemon, dropped after, is killed.
        self.stand_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

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
