//! [`Daemon`]: `rkv-master` or `rkv-follower` started on a loopback port
//! of its own choosing. It is passed `--listen 127.0.0.1:0`, writes the
//! port it bound into its daemon file, and counts as started once that
//! port answers `PING`; so no port is picked here and lost to a race.
//! Killed (`kill -9`) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv::client::Client;
use rkv::daemon::DaemonFile;
use rkv::resp::Reply;
use rkv::server::ListenAddr;

use crate::process;
use crate::wait::GENEROUS;

/// How to start a daemon (see [`Launch::master`], [`Launch::follower`]).
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The database or data directory, where the daemon file appears.
    dir: PathBuf,
    /// Where stdout and stderr go; `None` inherits stderr.
    log: Option<PathBuf>,
    /// Whether the log keeps what earlier runs wrote there.
    append: bool,
    /// `RKV_LOG`.
    log_level: String,
}

impl Launch {
    /// `rkv-master --db DB --backup-dir BACKUPS`, logging beside `db`.
    pub fn master(db: &Path, backups: &Path) -> Launch {
        let args = vec![
            "--db".into(),
            db.display().to_string(),
            "--backup-dir".into(),
            backups.display().to_string(),
        ];
        Launch::program(process::bin("rkv-master"), args, db).log(Some(db.with_extension("log")))
    }

    /// `rkv-follower --backup-dir BACKUPS --data DATA`, logging beside
    /// `data`.
    pub fn follower(backups: &Path, data: &Path) -> Launch {
        let args = vec![
            "--backup-dir".into(),
            backups.display().to_string(),
            "--data".into(),
            data.display().to_string(),
        ];
        Launch::program(process::bin("rkv-follower"), args, data)
            .log(Some(data.with_extension("log")))
    }

    /// `program` with `args` (a daemon, perhaps behind a command such as
    /// `ip netns exec` that execs it), whose directory is `dir`.
    pub fn program(program: impl Into<PathBuf>, args: Vec<String>, dir: &Path) -> Launch {
        Launch {
            program: program.into(),
            args,
            env: Vec::new(),
            dir: dir.to_path_buf(),
            log: Some(dir.with_extension("log")),
            append: false,
            log_level: "info".into(),
        }
    }

    /// More flags.
    pub fn args(mut self, extra: &[&str]) -> Launch {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// More environment variables.
    pub fn env(mut self, env: &[(&str, &str)]) -> Launch {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Where the daemon's output goes; `None` inherits stderr.
    pub fn log(mut self, log: Option<PathBuf>) -> Launch {
        self.log = log;
        self
    }

    /// Keeps what earlier runs wrote into the log (by default a start
    /// empties it, so that the log shows this run alone).
    pub fn append_log(mut self) -> Launch {
        self.append = true;
        self
    }

    /// The daemon's `RKV_LOG`.
    pub fn log_level(mut self, level: &str) -> Launch {
        self.log_level = level.to_string();
        self
    }

    /// Starts the daemon and waits (up to [`GENEROUS`]) until it answers
    /// `PING`; `Err` with the end of its log when it exits first (a refused
    /// start) or never answers.
    pub fn start(self) -> Result<Daemon, String> {
        let name = self.program.display().to_string();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .args(["--listen", "127.0.0.1:0"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RKV_LOG", &self.log_level)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        match &self.log {
            Some(log) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(self.append)
                    .truncate(!self.append)
                    .open(log)
                    .map_err(|e| format!("open {}: {e}", log.display()))?;
                let copy = file.try_clone().map_err(|e| e.to_string())?;
                command.stdout(copy).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().map_err(|e| format!("start {name}: {e}"))?;
        let deadline = Instant::now() + GENEROUS;
        let file = DaemonFile::wait_for(&self.dir, child.id(), GENEROUS);
        let mut daemon = Daemon {
            child: None,
            addr: "127.0.0.1:1".parse().expect("an address"),
            tls_addr: None,
            log: self.log,
        };
        daemon.tls_addr = file
            .as_ref()
            .and_then(|f| f.tls_listen.first())
            .and_then(|a| a.parse().ok());
        let Some(addr) = file.and_then(|f| f.tcp_addr()) else {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "{name} exited ({status}):\n{}",
                daemon.log_tail(20)
            ));
        };
        daemon.addr = addr;
        daemon.child = Some(child);
        loop {
            // Any reply will do: with a password it is NOAUTH.
            if daemon
                .try_client()
                .is_some_and(|mut c| c.call_raw(&[b"PING"]).is_ok())
            {
                return Ok(daemon);
            }
            let child = daemon.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                daemon.child = None;
                return Err(format!(
                    "{name} exited ({status}):\n{}",
                    daemon.log_tail(20)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not answer:\n{}", daemon.log_tail(20)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// Where it listens.
    pub addr: ListenAddr,
    /// Where it listens for TLS clients, when started with `--tls-listen`.
    pub tls_addr: Option<ListenAddr>,
    /// Its log file, if it logs into one.
    pub log: Option<PathBuf>,
}

impl Daemon {
    /// Starts `rkv-master` on `db` and `backups` with `extra` flags, and
    /// waits until it answers `PING`; panics with its log when it does not.
    #[track_caller]
    pub fn master(db: &Path, backups: &Path, extra: &[&str]) -> Daemon {
        Daemon::master_with_env(db, backups, extra, &[])
    }

    /// [`Daemon::master`] with extra environment variables.
    #[track_caller]
    pub fn master_with_env(
        db: &Path,
        backups: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Launch::master(db, backups)
            .args(extra)
            .env(env)
            .start()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `rkv-follower` of `backups` in `data` with `extra` flags, and
    /// waits until it answers `PING`; panics with its log when it does not.
    #[track_caller]
    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::follower_with_env(backups, data, extra, &[])
    }

    /// [`Daemon::follower`] with extra environment variables.
    #[track_caller]
    pub fn follower_with_env(
        backups: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Launch::follower(backups, data)
            .args(extra)
            .env(env)
            .start()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `argv` (a daemon, perhaps behind a command such as `ip netns
    /// exec` that execs it) with `dir` its data or database directory.
    #[track_caller]
    pub fn start_argv(argv: &[String], env: &[(&str, &str)], dir: &Path) -> Daemon {
        Launch::program(&argv[0], argv[1..].to_vec(), dir)
            .env(env)
            .start()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new client connection; panics when the daemon does not take it.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr, None).unwrap_or_else(|e| panic!("connect {}: {e}", self.addr))
    }

    /// A new client connection, if the daemon takes one.
    pub fn try_client(&self) -> Option<Client> {
        Client::connect(&self.addr, None).ok()
    }

    /// A plain TCP connection, for tests that speak raw bytes; reads time
    /// out after a generous minute instead of hanging.
    pub fn raw(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr.to_string()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
    }

    /// One `field:value` of `INFO`, if present.
    pub fn info(&self, field: &str) -> Option<String> {
        self.try_client()?.info_field(None, field).ok()?
    }

    /// Several INFO fields read at one moment (one INFO), in the order
    /// asked; `None` for a field not there.
    pub fn info_fields(&self, fields: &[&str]) -> Option<Vec<Option<String>>> {
        let Reply::Bulk(Some(text)) = self.try_client()?.call(&[b"INFO"]).ok()? else {
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

    /// [`Daemon::info`] as a number; -1 when absent or not a number (never
    /// mistaken for a count of zero).
    pub fn info_num(&self, field: &str) -> i64 {
        self.info(field).and_then(|v| v.parse().ok()).unwrap_or(-1)
    }

    /// `GET key`, if the daemon answers.
    pub fn get(&self, key: &str) -> Option<Reply> {
        self.try_client()?.call_raw(&[b"GET", key.as_bytes()]).ok()
    }

    /// The process id (0 once it was stopped or killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time (user + system) used so far.
    pub fn cpu_time(&self) -> Duration {
        process::cpu_time(self.pid())
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        process::peak_rss_mib(self.pid())
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// kill -9, and reap.
    pub fn kill(mut self) {
        self.reap();
    }

    /// SIGTERM, then waits (up to [`GENEROUS`]) for the exit; the exit code
    /// (`None` when killed by a signal, or killed after the wait).
    pub fn stop(mut self) -> Option<i32> {
        process::terminate(self.child.take()?, GENEROUS)?.code()
    }

    /// Waits (up to [`GENEROUS`]) for the daemon to exit by itself; its exit
    /// code. Panics with the log when it does not exit.
    #[track_caller]
    pub fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + GENEROUS;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.reap();
    }
}
