//! Helpers for process-level tests: temp dirs, and a command wrapper that
//! asserts exit codes and returns output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The path of the built `rkv` binary.
pub fn rkv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rkv"))
}

/// A temp dir that lives as long as the test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("rkv-test-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A path inside the sandbox (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `rkv` with `args`.
pub fn rkv(args: &[&str]) -> Run {
    let output = Command::new(rkv_bin())
        .args(args)
        .env_remove("RKV_LOG")
        .output()
        .expect("run rkv");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        output,
    }
}

/// The outcome of one command.
pub struct Run {
    args: Vec<String>,
    output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "rkv {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts exit code `code` and a stderr containing each of `needles`;
    /// returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> String {
        let stderr = self.stderr();
        assert_eq!(
            self.output.status.code(),
            Some(code),
            "rkv {:?}: wrong exit code\nstdout: {}\nstderr: {stderr}",
            self.args,
            self.stdout()
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "rkv {:?}: stderr lacks {needle:?}:\n{stderr}",
                self.args
            );
        }
        assert!(
            !stderr.contains("panicked"),
            "rkv {:?} panicked:\n{stderr}",
            self.args
        );
        stderr
    }
}

/// A follower's flags for a slow restore: 1 MiB/s, one file at a time
/// (polling every 100 ms), so a test can watch a restore in progress.
pub const SLOW_RESTORE: [&str; 6] = [
    "--poll-interval",
    "100ms",
    "--restore-rate-limit",
    "1MiB",
    "--restore-threads",
    "1",
];

/// `--db=<path>`.
pub fn db_flag(path: &Path) -> String {
    format!("--db={}", path.display())
}

/// `--backup_dir=<path>`.
pub fn backup_flag(path: &Path) -> String {
    format!("--backup_dir={}", path.display())
}

/// How long a test waits for a state it needs before failing: long enough
/// for a 2-core machine busy with other work (a healthy run needs seconds;
/// only a real failure waits this out).
pub const GENEROUS: std::time::Duration = std::time::Duration::from_secs(120);

/// Polls `check` every 50 ms until it holds; panics after `timeout`.
#[track_caller]
pub fn wait_until(timeout: std::time::Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(timeout, what, || check().then_some(()).ok_or("not yet"));
}

/// Polls `observe` every 50 ms until it returns `Ok`, and returns that;
/// after `timeout`, panics with the last thing it saw instead (the `Err`).
#[track_caller]
pub fn wait_for<T, E: std::fmt::Debug>(
    timeout: std::time::Duration,
    what: &str,
    mut observe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match observe() {
            Ok(done) => return done,
            Err(seen) if std::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Waits until `d` answers `GET key` with `value`; fails after
/// [`GENEROUS`] with what it answered instead.
#[track_caller]
pub fn serves(d: &Daemon, key: &str, value: &str) {
    wait_for(
        GENEROUS,
        &format!("GET {key} to answer {value:?}"),
        || match get(d, key) {
            Some(reply) if reply == bulk(value) => Ok(()),
            other => Err(other),
        },
    );
}

/// Waits until follower `d` serves `key` as `value`, healthy, with a
/// staleness under `bound_ms`; fails after [`GENEROUS`] with what it saw.
/// (A wait, not one reading: a busy machine may hold back a heartbeat.)
#[track_caller]
pub fn serves_fresh(d: &Daemon, key: &str, value: &str, bound_ms: i64) {
    wait_for(GENEROUS, "fresh data served as healthy", || {
        let seen = (
            get(d, key),
            d.info("healthy"),
            d.info_num("rkv_staleness_ms"),
        );
        match &seen {
            (Some(v), Some(h), ms)
                if *v == bulk(value) && h == "1" && (0..bound_ms).contains(ms) =>
            {
                Ok(())
            }
            _ => Err(seen),
        }
    });
}

/// A daemon started for a test; killed when dropped.
pub struct Daemon {
    child: Option<std::process::Child>,
    pub addr: rkv::server::ListenAddr,
    log: PathBuf,
}

impl Daemon {
    /// Starts `rkv-master` on `db` and `backups` with `extra` flags, on a
    /// loopback port of its choosing, and waits until it answers PING.
    pub fn master(db: &Path, backups: &Path, extra: &[&str]) -> Daemon {
        Daemon::master_with_env(db, backups, extra, &[])
    }

    /// [`Daemon::master`] with extra environment variables.
    pub fn master_with_env(
        db: &Path,
        backups: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut args: Vec<String> = vec![
            "--db".into(),
            db.display().to_string(),
            "--backup-dir".into(),
            backups.display().to_string(),
            // Port 0: the daemon picks a free port and writes it into its
            // daemon file, so no port is picked here and lost to a race.
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::start(
            env!("CARGO_BIN_EXE_rkv-master"),
            &args,
            env,
            db,
            db.with_extension("log"),
        )
    }

    /// Starts `rkv-follower` of `backups` in `data` with `extra` flags, on a
    /// loopback port of its choosing, and waits until it answers PING.
    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::follower_with_env(backups, data, extra, &[])
    }

    /// [`Daemon::follower`] with extra environment variables.
    pub fn follower_with_env(
        backups: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut args: Vec<String> = vec![
            "--backup-dir".into(),
            backups.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = data.with_extension(format!("{}.log", std::process::id()));
        Daemon::start(env!("CARGO_BIN_EXE_rkv-follower"), &args, env, data, log)
    }

    /// A plain TCP connection, for tests that speak raw bytes; reads time
    /// out after a generous minute instead of hanging.
    pub fn raw(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr.to_string()).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        stream
    }

    /// One `field:value` of `INFO`, if present.
    pub fn info(&self, field: &str) -> Option<String> {
        let mut client = rkv::client::Client::connect(&self.addr, None).ok()?;
        client.info_field(None, field).ok()?
    }

    /// `info(field)` as a number (0 when absent).
    pub fn info_num(&self, field: &str) -> i64 {
        self.info(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// CPU time (user + system) the daemon used so far.
    pub fn cpu_time(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which is in parentheses).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        std::time::Duration::from_millis(ticks * 1000 / hz)
    }

    /// kill -9.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `argv` (a daemon, perhaps behind a command such as `ip netns
    /// exec` that execs it) with `dir` its data or database directory, and
    /// waits until it answers PING.
    pub fn start_argv(argv: &[String], env: &[(&str, &str)], dir: &Path) -> Daemon {
        Daemon::start(&argv[0], &argv[1..], env, dir, dir.with_extension("log"))
    }

    fn start(bin: &str, args: &[String], env: &[(&str, &str)], dir: &Path, log: PathBuf) -> Daemon {
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env("RKV_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = std::time::Instant::now() + GENEROUS;
        // The daemon writes its addresses once it listens. (An exited child
        // is a zombie until reaped, so its exit is checked here too.)
        let file = rkv::daemon::DaemonFile::wait_for(dir, child.id(), GENEROUS);
        let Some(addr) = file.and_then(|f| f.tcp_addr()) else {
            match child.try_wait().unwrap() {
                Some(status) => panic!("daemon exited early ({status}):\n{}", log_text()),
                None => panic!("daemon did not start:\n{}", log_text()),
            }
        };
        let mut daemon = Daemon {
            child: Some(child),
            addr,
            log,
        };
        loop {
            if let Ok(mut client) = rkv::client::Client::connect(&daemon.addr, None) {
                if client.call_raw(&[b"PING"]).is_ok() {
                    return daemon;
                }
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}):\n{}", daemon.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not answer:\n{}",
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A new client connection.
    pub fn client(&self) -> rkv::client::Client {
        rkv::client::Client::connect(&self.addr, None).unwrap()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Waits (up to a minute) for the daemon to exit by itself.
    pub fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit:\n{}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A bulk string reply.
pub fn bulk(s: &str) -> rkv::resp::Reply {
    rkv::resp::Reply::bulk(s.as_bytes().to_vec())
}

/// `GET key` on a new connection; `None` when the daemon cannot be reached.
pub fn get(d: &Daemon, key: &str) -> Option<rkv::resp::Reply> {
    rkv::client::Client::connect(&d.addr, None)
        .ok()?
        .call_raw(&[b"GET", key.as_bytes()])
        .ok()
}

/// `len` bytes that do not compress (xorshift from `state`, which moves on).
pub fn incompressible(len: usize, state: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

/// Writes about `mib` MiB of incompressible values under
/// `<prefix>:<batch>:<i>`, 16 keys of 4 KiB per MSET.
pub fn fill(master: &Daemon, prefix: &str, mib: usize) {
    let mut c = master.client();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for batch in 0..mib * 16 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..16 {
            args.push(format!("{prefix}:{batch:06}:{i:02}").into_bytes());
            args.push(incompressible(4096, &mut x));
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.call(&refs).unwrap();
    }
}

/// Runs a binary with args and returns its output.
pub fn run_bin(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

/// Runs `bin` with `args`, which must fail with exit code `code` (2: bad
/// configuration, 1: a failure); returns what it said on stderr.
pub fn refused(bin: &str, args: &[&str], code: i32) -> String {
    refused_with_env(bin, args, &[], code)
}

/// [`refused`] with extra environment variables (`bin` may be a wrapper
/// such as `ip` that runs the daemon).
pub fn refused_with_env(bin: &str, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

/// Flips the last byte of the MANIFEST only backup `id` holds: the size stays
/// (RocksDB still lists the backup) and only the checksum tells.
pub fn corrupt_private_manifest(backups: &Path, id: u32) {
    let private = backups.join("private").join(id.to_string());
    let manifest = std::fs::read_dir(&private)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST")
        })
        .unwrap();
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();
}
