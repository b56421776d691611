//! The processes a benchmark drives: rkv-master, rkv-follower and
//! redis-server on loopback, with their peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use rkv::client::Client;
use rkv::server::ListenAddr;
use rkv_testkit::daemon::{Daemon, Launch};
pub use rkv_testkit::wait_until;

use crate::process;

/// A daemon started by the benchmark (an rkv daemon, or redis-server);
/// killed when dropped.
pub struct Proc {
    kind: Kind,
    pub addr: ListenAddr,
    pub port: u16,
    /// Its TLS port, when it serves TLS.
    pub tls_port: Option<u16>,
}

enum Kind {
    Rkv(Daemon),
    Redis(Redis),
}

/// redis-server's process, killed when dropped, and its directory (its
/// AOF), removed then.
struct Redis(Option<Child>, PathBuf);

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
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
        Proc::rkv(Launch::master(db, backups).args(extra))
    }

    pub fn follower(backups: &Path, data: &Path, extra: &[&str]) -> Proc {
        Proc::rkv(Launch::follower(backups, data).args(extra))
    }

    /// Starts an rkv daemon, its log on this process's stderr at
    /// `RKV_BENCH_LOG` (default `warn`).
    fn rkv(launch: Launch) -> Proc {
        let level = std::env::var("RKV_BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let daemon = launch
            .log(None)
            .log_level(&level)
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let port_of = |addr: &ListenAddr| match addr {
            ListenAddr::Tcp(socket) => socket.port(),
            ListenAddr::Unix(_) => 0,
        };
        Proc {
            addr: daemon.addr.clone(),
            port: port_of(&daemon.addr),
            tls_port: daemon.tls_addr.as_ref().map(port_of),
            kind: Kind::Rkv(daemon),
        }
    }

    /// redis-server without persistence (the read baseline).
    pub fn redis_server() -> Proc {
        Proc::redis_server_with("no")
    }

    /// redis-server with `appendonly` set to `appendonly` ("no", or "yes":
    /// the AOF, fsynced every second, Redis's durable setting).
    pub fn redis_server_with(appendonly: &str) -> Proc {
        Proc::redis_server_args(appendonly, &[], None)
    }

    /// [`Proc::redis_server_with`], serving TLS too with the certificate
    /// `cert` and `key` (no client certificates asked for).
    pub fn redis_server_tls(appendonly: &str, cert: &Path, key: &Path) -> Proc {
        let tls_port = free_port();
        let args = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Proc::redis_server_args(appendonly, &args, Some(tls_port))
    }

    fn redis_server_args(appendonly: &str, extra: &[String], tls_port: Option<u16>) -> Proc {
        let dir = std::env::temp_dir().join(format!("rkv-bench-redis-{}", free_port()));
        // Fresh: an AOF left by an earlier run on the same port would be
        // loaded (and answered with LOADING meanwhile).
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.display().to_string();
        let mut args = vec![
            "--save",
            "",
            "--dir",
            &dir_arg,
            "--appendonly",
            appendonly,
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ];
        args.extend(extra.iter().map(String::as_str));
        let (child, port) = crate::redis::start_redis_server(&args);
        Proc {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            port,
            tls_port,
            kind: Kind::Redis(Redis(Some(child), dir)),
        }
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
        match &self.kind {
            Kind::Rkv(daemon) => daemon.pid(),
            Kind::Redis(redis) => redis.0.as_ref().map_or(0, Child::id),
        }
    }

    /// CPU time used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        process::cpu_time(self.pid()).as_secs_f64()
    }

    /// SIGTERM and wait.
    pub fn stop(self) {
        match self.kind {
            Kind::Rkv(daemon) => {
                daemon.stop();
            }
            Kind::Redis(mut redis) => {
                if let Some(child) = redis.0.take() {
                    process::terminate(child, Duration::from_secs(120));
                }
            }
        }
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
    redis_benchmark_with(port, test, requests, (clients, pipeline), keys, &[])
}

/// [`redis_benchmark_keys`] with more of redis-benchmark's flags (`--tls`).
pub fn redis_benchmark_with(
    port: u16,
    test: &str,
    requests: usize,
    (clients, pipeline): (usize, usize),
    keys: usize,
    extra: &[String],
) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(extra)
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
