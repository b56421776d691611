//! The processes a benchmark drives: rkv-master, rkv-follower and
//! redis-server on loopback, with their peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv::client::Client;

use crate::process;
use rkv::server::ListenAddr;

/// A daemon started by the benchmark; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    pub addr: ListenAddr,
    pub port: u16,
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
        Proc::start(process::sibling(name), args, dir)
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
        let (child, port) = crate::redis::start_redis_server(&[
            "--save",
            "",
            "--dir",
            &dir,
            "--appendonly",
            appendonly,
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ]);
        Proc {
            child: Some(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            port,
        }
    }

    /// Starts the rkv daemon `program` (whose database or data directory is
    /// `dir`): it picks its own port and names it in its daemon file.
    fn start(program: PathBuf, mut args: Vec<String>, dir: &Path) -> Proc {
        args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
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
        let addr: ListenAddr =
            rkv::daemon::DaemonFile::wait_for(dir, child.id(), Duration::from_secs(120))
                .and_then(|f| f.tcp_addr())
                .unwrap_or_else(|| panic!("{} did not start", program.display()));
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
        process::peak_rss_mib(self.pid())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        process::cpu_time(self.pid()).as_secs_f64()
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        if let Some(child) = self.child.take() {
            process::terminate(child, Duration::from_secs(120));
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
