//! The daemons a fault scenario drives: rkv-master and rkv-follower on
//! loopback ports, each logging into the scenario's directory, killed with
//! -9 or stopped with SIGTERM on purpose, and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
            };
            return Err(format!("{name} exited ({status}): {}", proc.log_tail()));
        };
        let mut proc = Proc {
            child: Some(child),
            addr,
            log,
        };
        loop {
            if proc
                .client()
                // Any reply will do: with a password it is NOAUTH.
                .is_some_and(|mut c| c.call_raw(&[b"PING"]).is_ok())
            {
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
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// CPU time (user + system) used so far.
    pub fn cpu_time(&self) -> Duration {
        process::cpu_time(self.pid())
    }

    /// kill -9, and reap.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the exit code.
    pub fn stop(mut self) -> Option<i32> {
        process::terminate(self.child.take()?, Duration::from_secs(60))?.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
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
