//! The processes a benchmark drives: rkv-master, rkv-follower and
//! redis-server on loopback, with their peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv::client::Client;
use rkv::server::ListenAddr;

/// A daemon started by the benchmark; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    pub addr: ListenAddr,
    pub port: u16,
}

/// Where rkv-master and rkv-follower are: beside this binary.
fn bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(name)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    pub fn master(db: &Path, backups: &Path, extra: &[&str]) -> Proc {
        Proc::rkv(
            "rkv-master",
            ["--db", &path(db), "--backup-dir", &path(backups)],
            extra,
            db,
        )
    }

    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Proc {
        Proc::rkv(
            "rkv-follower",
            ["--backup-dir", &path(backups), "--data", &path(data)],
            extra,
            data,
        )
    }

    fn rkv(name: &str, dirs: [&str; 4], extra: &[&str], dir: &Path) -> Proc {
        let args = dirs.iter().chain(extra).map(|s| s.to_string()).collect();
        Proc::start(bin(name), args, Some(dir))
    }

    /// redis-server without persistence (the read baseline).
    pub fn redis_server() -> Proc {
        Proc::redis_server_with("no")
    }

    /// redis-server with `appendonly` set to `appendonly` ("no", or "yes":
    /// the AOF, fsynced every second, Redis's durable setting).
    pub fn redis_server_with(appendonly: &str) -> Proc {
        let dir = std::env::temp_dir().join(format!("rkv-bench-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = path(&dir);
        let args = [
            "--save",
            "",
            "--dir",
            &dir,
            "--appendonly",
            appendonly,
            "--appendfsync",
            "everysec",
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
        ];
        Proc::start(
            PathBuf::from("redis-server"),
            args.iter().map(|s| s.to_string()).collect(),
            None,
        )
    }

    /// Starts `program`. An rkv daemon (whose database or data directory is
    /// `dir`) picks its own port and names it in its daemon file; redis-server
    /// gets a free one.
    fn start(program: PathBuf, mut args: Vec<String>, dir: Option<&Path>) -> Proc {
        let port = if dir.is_some() { 0 } else { free_port() };
        if dir.is_none() {
            args.extend(["--port".to_string(), port.to_string()]);
        } else {
            args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        let child = Command::new(&program)
            .args(&args)
            .env(
                "RKV_LOG",
                std::env::var("RKV_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let addr: ListenAddr = match dir {
            Some(dir) => {
                rkv::daemon::DaemonFile::wait_for(dir, child.id(), Duration::from_secs(60))
                    .and_then(|f| f.tcp_addr())
                    .unwrap_or_else(|| panic!("{} did not start", program.display()))
            }
            None => format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let port = match &addr {
            ListenAddr::Tcp(socket) => socket.port(),
            ListenAddr::Unix(_) => 0,
        };
        let proc = Proc {
            child: Some(child),
            addr,
            port,
        };
        wait_until(
            Duration::from_secs(60),
            &format!("{} to answer", program.display()),
            || {
                Client::connect(&proc.addr, None)
                    .and_then(|mut c| c.call(&[b"PING"]))
                    .is_ok()
            },
        );
        proc
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr, None).unwrap()
    }

    /// One `field:value` of INFO.
    pub fn info(&self, field: &str) -> Option<String> {
        self.client().info_field(None, field).ok()?
    }

    pub fn info_num(&self, field: &str) -> i64 {
        self.info(field).and_then(|v| v.parse().ok()).unwrap_or(-1)
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(120);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
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

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// CPU time process `pid` used so far (user and system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th and stime the 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Polls `check` every 5 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs redis-benchmark once over 100,000 random keys and returns the
/// requests per second.
pub fn redis_benchmark(
    port: u16,
    test: &str,
    requests: usize,
    clients: usize,
    pipeline: usize,
) -> f64 {
    redis_benchmark_keys(port, test, requests, clients, pipeline, 100_000)
}

/// [`redis_benchmark`] over `keys` random keys.
pub fn redis_benchmark_keys(
    port: u16,
    test: &str,
    requests: usize,
    clients: usize,
    pipeline: usize,
    keys: usize,
) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            test,
            "-n",
            &requests.to_string(),
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-r",
            &keys.to_string(),
            "-d",
            "100",
            "-P",
            &pipeline.to_string(),
            "--csv",
            "-q",
        ])
        .output()
        .expect("run redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // --csv: "test","rps",… with the header first.
    text.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .unwrap_or_else(|| {
            panic!(
                "no rate in redis-benchmark output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
