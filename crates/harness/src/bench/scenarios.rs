//! The five scenarios. Each returns rows of numbers measured in this run; no
//! scenario asserts a speed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkv::backup::{BackupDir, BackupSink, BackupSource, RestoreMode};
use rkv::client::Client;
use rkv::db::{Db, OpenMode};
use rkv::resp::Reply;

use crate::daemons::{redis_benchmark, redis_benchmark_keys, wait_until, Proc};
use crate::rng::Rng;
use crate::serving::{count_syscalls, memory_with_idle_clients, MemoryUse, SyscallCount};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(600);

/// A background load: `rate` SETs a second over 100,000 keys with 100-byte
/// random values, sent as a pipeline of `rate / 100` every 10 ms by one
/// client, until dropped.
pub struct Load {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Load {
    pub fn start(target: &rkv::server::ListenAddr, rate: u32) -> Load {
        let done = Arc::new(AtomicBool::new(false));
        let (addr, stop) = (target.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut client = rkv::client::Client::connect(&addr, None).unwrap();
            let mut rng = Rng(0x51_7CC1_B727_220A);
            let per_tick = (rate / 100).max(1) as usize;
            let started = Instant::now();
            let mut sent = 0u64;
            for tick in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let due = started + Duration::from_millis(10) * tick;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..per_tick)
                    .map(|_| {
                        let key = format!("key:{:012}", rng.next_u64() % 100_000).into_bytes();
                        (key, rng.bytes(100))
                    })
                    .collect();
                let commands: Vec<Vec<&[u8]>> =
                    keys.iter().map(|(k, v)| vec![&b"SET"[..], k, v]).collect();
                if client.pipeline(&commands).is_err() {
                    break;
                }
                sent += per_tick as u64;
            }
            sent
        });
        Load {
            done,
            thread: Some(thread),
        }
    }

    /// Stops the load; returns how many SETs it sent.
    pub fn stop(mut self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Scenario 1: time from a write on the master until it is readable on a
/// follower, under a background load, for every probe write.
pub struct LagResult {
    pub label: String,
    /// (seconds since the start when written, lag in ms), in write order.
    pub samples: Vec<(f64, f64)>,
    pub duration: Duration,
    pub backups_taken: i64,
    /// The backup directory's size over the master's live SST size, the
    /// largest seen in the second half of the run.
    pub dir_ratio: f64,
    /// CPU use, in cores (1.0 = one core busy).
    pub master_cpu: f64,
    pub follower_cpu: f64,
    pub followers: usize,
}

impl LagResult {
    /// Lags in ms, sorted.
    pub fn sorted(&self) -> Vec<f64> {
        let mut lags: Vec<f64> = self.samples.iter().map(|s| s.1).collect();
        lags.sort_by(f64::total_cmp);
        lags
    }

    /// The p99 of the probes written in [from, to) seconds.
    pub fn p99_between(&self, from: f64, to: f64) -> f64 {
        let mut lags: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.0 >= from && s.0 < to)
            .map(|s| s.1)
            .collect();
        lags.sort_by(f64::total_cmp);
        crate::percentile(&lags, 99.0)
    }
}

/// The size of every regular file under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The size of the SST files directly in `db`: its live data.
fn live_sst_bytes(db: &Path) -> u64 {
    std::fs::read_dir(db).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    })
}

/// An object store to replicate through: its endpoint and the
/// `s3://BUCKET/PREFIX` to use.
pub struct Store {
    pub endpoint: String,
    pub url: String,
}

/// How a lag run is set up: the daemons' flags beside their defaults.
pub struct LagSetup<'a> {
    pub label: String,
    pub master: Vec<&'a str>,
    pub follower: Vec<&'a str>,
    pub followers: usize,
    /// Threads spinning on the CPU beside the daemons for the whole run.
    pub hogs: usize,
    pub store: Option<&'a Store>,
}

impl<'a> LagSetup<'a> {
    /// rkv at its defaults (the log every 10 ms on a directory), one
    /// follower.
    pub fn defaults(label: &str) -> LagSetup<'a> {
        LagSetup {
            label: label.to_string(),
            master: Vec::new(),
            follower: Vec::new(),
            followers: 1,
            hogs: 0,
            store: None,
        }
    }
}

/// Threads that keep the CPU busy until dropped (as `stress-ng --cpu N`).
pub struct Hogs(Arc<AtomicBool>);

impl Hogs {
    pub fn start(n: usize) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..n {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        Hogs(stop)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The daemons of a lag run: a master and its followers, started.
pub struct Pair {
    pub master: Proc,
    pub followers: Vec<Proc>,
    pub db: std::path::PathBuf,
    /// Where the master's backups are on this host (the staging directory
    /// for an object store).
    pub staged: std::path::PathBuf,
}

impl Pair {
    pub fn start(work: &Path, setup: &LagSetup) -> Pair {
        let _ = std::fs::remove_dir_all(work);
        let db = work.join("db");
        let (backups, staged, extra) = match setup.store {
            Some(s) => (
                std::path::PathBuf::from(&s.url),
                work.join("db.s3-staging"),
                vec!["--s3-endpoint", s.endpoint.as_str()],
            ),
            None => (work.join("backups"), work.join("backups"), Vec::new()),
        };
        let master_flags: Vec<&str> = setup.master.iter().chain(&extra).copied().collect();
        let follower_flags: Vec<&str> = setup.follower.iter().chain(&extra).copied().collect();
        let master = Proc::master(&db, &backups, &master_flags);
        let followers = (0..setup.followers)
            .map(|i| Proc::follower(&backups, &work.join(format!("f{i}")), &follower_flags))
            .collect();
        Pair {
            master,
            followers,
            db,
            staged,
        }
    }

    pub fn stop(self) {
        for f in self.followers {
            f.stop();
        }
        self.master.stop();
    }
}

/// rkv's lag as `setup` says, under `rate` SETs a second; the lag is the
/// first follower's.
pub fn lag(work: &Path, setup: &LagSetup, duration: Duration, rate: u32) -> LagResult {
    let pair = Pair::start(work, setup);
    let result = probe_lag(&pair, setup, duration, rate);
    pair.stop();
    result
}

/// Probes the lag of `pair`'s first follower for `duration` under `rate`
/// SETs a second.
pub fn probe_lag(pair: &Pair, setup: &LagSetup, duration: Duration, rate: u32) -> LagResult {
    let (master, followers, db) = (&pair.master, &pair.followers, &pair.db);
    let _hogs = Hogs::start(setup.hogs);
    let load = Load::start(&master.addr, rate);
    // A first backup to start from, whatever the interval (a SAVE of a
    // database without a write takes none).
    let mut client = master.client();
    client.call(&[b"SET", b"bench:start", b"1"]).unwrap();
    client.call(&[b"SAVE"]).unwrap();
    // Measure the steady state: every follower has applied a backup.
    wait_until(LONG, "every follower's first apply", || {
        followers
            .iter()
            .all(|f| f.info_num("rkv_applied_backup_id") >= 1)
    });
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (addr, sent, written, done) = (
            followers[0].addr.clone(),
            sent.clone(),
            written.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            let mut client = rkv::client::Client::connect(&addr, None).unwrap();
            let mut lags = Vec::new();
            let mut next = 0;
            loop {
                let target = written.load(Ordering::SeqCst);
                // A backup is a snapshot: if probe n is there, so is every
                // probe before it. Walk forward while probes are visible.
                while next < target {
                    let key = format!("probe:{next:08}");
                    match client.call(&[b"GET", key.as_bytes()]) {
                        Ok(Reply::Bulk(Some(_))) => {
                            let at = sent.lock().unwrap()[next];
                            lags.push(at.elapsed().as_secs_f64() * 1000.0);
                            next += 1;
                        }
                        _ => break,
                    }
                }
                if done.load(Ordering::SeqCst) && next >= written.load(Ordering::SeqCst) {
                    return lags;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut client = master.client();
    let period = Duration::from_millis(50);
    let (cpu_master, cpu_follower) = (master.cpu_seconds(), followers[0].cpu_seconds());
    let started = Instant::now();
    let (mut n, mut dir_ratio, mut next_sample) = (0usize, 0.0f64, Duration::ZERO);
    let mut offsets = Vec::new();
    while started.elapsed() < duration {
        let due = started + period * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("probe:{n:08}");
        let now = Instant::now();
        sent.lock().unwrap().push(now);
        offsets.push((now - started).as_secs_f64());
        client.call(&[b"SET", key.as_bytes(), b"x"]).unwrap();
        n += 1;
        written.store(n, Ordering::SeqCst);
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(5);
            if started.elapsed() >= duration / 2 {
                let live = live_sst_bytes(db).max(1);
                dir_ratio = dir_ratio.max(dir_bytes(&pair.staged) as f64 / live as f64);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let master_cpu = (master.cpu_seconds() - cpu_master) / elapsed;
    let follower_cpu = (followers[0].cpu_seconds() - cpu_follower) / elapsed;
    done.store(true, Ordering::SeqCst);
    let lags = reader.join().unwrap();
    load.stop();
    if std::env::var_os("RKV_BENCH_SLOW").is_some() {
        for (at, lag) in offsets.iter().zip(&lags).filter(|(_, l)| **l > 60.0) {
            eprintln!("SLOW {} at {at:.2}s: {lag:.0} ms", setup.label);
        }
    }
    LagResult {
        label: setup.label.clone(),
        samples: offsets.into_iter().zip(lags).collect(),
        duration,
        backups_taken: master.info_num("rkv_backups_done"),
        dir_ratio,
        master_cpu,
        follower_cpu,
        followers: followers.len(),
    }
}

/// Litestream's lag, measured the same way by `scripts/lib/litestream-lag.py`
/// at its fastest settings; `None` (said) when Litestream is not installed.
pub fn litestream_lag(work: &Path, duration: Duration, rate: u32) -> Option<LagResult> {
    let script = rkv_harness::repo_file("scripts/lib/litestream-lag.py");
    let _ = std::fs::remove_dir_all(work);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(work)
        .arg(duration.as_secs_f64().to_string())
        .arg(rate.to_string())
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            crate::log(&format!(
                "litestream lag not measured: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            crate::log(&format!("litestream lag not measured: {e}"));
            return None;
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let version = std::process::Command::new("litestream")
        .arg("version")
        .output()
        .map(|v| String::from_utf8_lossy(&v.stdout).trim().to_string())
        .unwrap_or_default();
    let samples = value["lags"]
        .as_array()?
        .iter()
        .filter_map(|pair| Some((pair[0].as_f64()?, pair[1].as_f64()?)))
        .collect();
    Some(LagResult {
        label: format!("Litestream {version}, restore -f, 10 ms sync/monitor/follow"),
        samples,
        duration,
        backups_taken: 0,
        dir_ratio: f64::NAN,
        master_cpu: f64::NAN,
        follower_cpu: f64::NAN,
        followers: 1,
    })
}

/// Target 1: CPU an idle master and follower use, and idle redis-server.
pub struct IdleResult {
    pub seconds: u64,
    pub master: f64,
    pub follower: f64,
    pub redis: f64,
}

pub fn idle(work: &Path, seconds: u64) -> IdleResult {
    let master = Proc::master(
        &work.join("db"),
        &work.join("backups"),
        &["--interval", "1s"],
    );
    let follower = Proc::follower(&work.join("backups"), &work.join("f"), &[]);
    let redis = Proc::redis_server();
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    wait_until(LONG, "the follower's first apply", || {
        follower.info_num("rkv_applied_backup_id") >= 1
    });
    // Let start-up work (compactions, the first scrub) pass.
    std::thread::sleep(Duration::from_secs(3));
    let before = [&master, &follower, &redis].map(|p| p.cpu_seconds());
    std::thread::sleep(Duration::from_secs(seconds));
    let after = [&master, &follower, &redis].map(|p| p.cpu_seconds());
    let share = |i: usize| (after[i] - before[i]) / seconds as f64;
    let result = IdleResult {
        seconds,
        master: share(0),
        follower: share(1),
        redis: share(2),
    };
    follower.stop();
    master.stop();
    redis.stop();
    result
}

/// Scenario 2 (and 5 for the largest size): a 1 MiB change on databases of
/// growing size.
pub struct CatchupResult {
    pub db_mib: u64,
    pub backup_ms: i64,
    pub backup_bytes: i64,
    pub apply_ms: i64,
    pub apply_bytes: i64,
    pub full_restore_ms: f64,
    pub full_restore_bytes: u64,
    pub master_rss: f64,
    pub follower_rss: f64,
}

pub fn catchup(work: &Path, db_mib: u64, change_mib: u64) -> CatchupResult {
    let (db_path, backups, data) = (work.join("db"), work.join("backups"), work.join("f"));
    fill_db(&db_path, db_mib);
    // The cost of an incremental restore: without the log, which would
    // bring the change instead.
    let master = Proc::master(
        &db_path,
        &backups,
        &["--interval", "0", "--log-interval", "0"],
    );
    master.client().call(&[b"SAVE"]).unwrap();
    let follower = Proc::follower(&backups, &data, &["--poll-interval", "50ms"]);
    wait_until(LONG, "the first apply", || {
        follower.info_num("rkv_applied_backup_id") == 1
    });

    // The change: 1 KiB values under new keys spread over the key space.
    let mut client = master.client();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    write_new_keys(&mut client, &mut rng, change_mib);
    let backup_ms = master.info_num("rkv_last_backup_duration_ms");
    let backup_bytes = master.info_num("rkv_last_backup_bytes_copied");
    wait_until(LONG, "the incremental apply", || {
        follower.info_num("rkv_applied_backup_id") == 2
    });
    let apply_ms = follower.info_num("rkv_last_apply_duration_ms");
    let apply_bytes = follower.info_num("rkv_last_apply_bytes_copied");
    let (master_rss, follower_rss) = (master.peak_rss_mib(), follower.peak_rss_mib());
    follower.stop();
    master.stop();

    // What a follower without incremental restore (or a new one) pays.
    let full = work.join("full");
    let started = Instant::now();
    let stats = BackupDir::new(&backups)
        .restore(Some(2), &full, RestoreMode::Full)
        .unwrap();
    let full_restore_ms = started.elapsed().as_secs_f64() * 1000.0;
    CatchupResult {
        db_mib,
        backup_ms,
        backup_bytes,
        apply_ms,
        apply_bytes,
        full_restore_ms,
        full_restore_bytes: stats.bytes_copied,
        master_rss,
        follower_rss,
    }
}

/// min, median and max of a figure measured over several rounds.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        Spread {
            min: values.first().copied().unwrap_or(f64::NAN),
            median: values.get(values.len() / 2).copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Scenarios 3 and 4: requests per second (redis-benchmark), rkv and its
/// peer measured in alternation, round after round.
pub struct ThroughputResult {
    pub label: String,
    pub clients: usize,
    pub pipeline: usize,
    pub rkv: Spread,
    pub baseline: Spread,
    pub baseline_name: String,
    /// The median of the per-round ratios.
    pub ratio: Spread,
    /// The ratio aimed at; 0 for none.
    pub target: f64,
}

impl ThroughputResult {
    pub(crate) fn new(
        label: String,
        (clients, pipeline): (usize, usize),
        rounds: &[(f64, f64)],
        baseline_name: &str,
        target: f64,
    ) -> ThroughputResult {
        ThroughputResult {
            label,
            clients,
            pipeline,
            rkv: Spread::of(rounds.iter().map(|r| r.0).collect()),
            baseline: Spread::of(rounds.iter().map(|r| r.1).collect()),
            baseline_name: baseline_name.to_string(),
            ratio: Spread::of(rounds.iter().map(|r| r.0 / r.1).collect()),
            target,
        }
    }
}

/// What a SET of redis-benchmark's writes: a 16-byte key and a 100-byte
/// value.
const SET_BYTES: f64 = 116.0;

/// Bytes the process `pid` caused to be written to storage so far
/// (`write_bytes` of /proc/PID/io).
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The master's write amplification in a SET run: bytes it wrote to its
/// disk (write-ahead log, tables, backups, log segments) per byte of keys
/// and values written, min / median / max over the rounds.
pub struct Amplification {
    pub label: String,
    pub pipeline: usize,
    pub ratio: Spread,
}

/// Target 4: SET throughput of rkv-master at its defaults (the log every
/// 10 ms, a backup when the log holds half the database) against
/// redis-server with `appendonly everysec` and against itself with the log
/// off, with the master's write
/// amplification in each; and INCR and a MULTI/EXEC of 10 SETs against the
/// same redis-server, in the same rounds.
pub fn master_writes(
    work: &Path,
    requests: usize,
    rounds: usize,
) -> (Vec<ThroughputResult>, Vec<Amplification>) {
    let mut rows = Vec::new();
    let mut amplification = Vec::new();
    for pipeline in [1, 16] {
        let mut on_vs_redis = Vec::new();
        let mut on_vs_off = Vec::new();
        let mut incr = Vec::new();
        let mut multi = Vec::new();
        let (mut amp_on, mut amp_off, mut amp_redis) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // INCR and the transactions run on the master with the log,
            // after its SETs; the transactions unpipelined only.
            let measure = |port: u16, pid: u32, more: bool| {
                let before = write_bytes(pid);
                let set = redis_benchmark(port, "set", requests, 50, pipeline);
                let amp = (write_bytes(pid) - before) as f64 / (requests as f64 * SET_BYTES);
                let incr = more.then(|| redis_benchmark(port, "incr", requests, 50, pipeline));
                let multi = (more && pipeline == 1).then(|| transactions(port, 50, requests / 10));
                (set, incr, multi, amp)
            };
            let rkv = |tag: &str, flags: &[&str], more: bool| {
                let dir = work.join(format!("{tag}-{pipeline}-{round}"));
                let mut all = vec!["--backup-on-exit", "no"];
                all.extend_from_slice(flags);
                let master = Proc::master(&dir.join("db"), &dir.join("backups"), &all);
                let rates = measure(master.port, master.pid(), more);
                master.stop();
                let _ = std::fs::remove_dir_all(&dir);
                rates
            };
            let redis = Proc::redis_server_with("yes");
            let baseline = measure(redis.port, redis.pid(), true);
            redis.stop();
            let on = rkv("on", &[], true);
            let off = rkv("off", &["--log-interval", "0"], false);
            on_vs_redis.push((on.0, baseline.0));
            on_vs_off.push((on.0, off.0));
            incr.extend(on.1.zip(baseline.1));
            multi.extend(on.2.zip(baseline.2));
            amp_on.push(on.3);
            amp_off.push(off.3);
            amp_redis.push(baseline.3);
        }
        rows.push(ThroughputResult::new(
            "SET, rkv-master (defaults: the log every 10 ms) vs redis-server (appendonly \
             everysec)"
                .into(),
            (50, pipeline),
            &on_vs_redis,
            "redis-server, appendonly everysec",
            1.0,
        ));
        rows.push(ThroughputResult::new(
            "SET, rkv-master with the log vs without (--log-interval 0)".into(),
            (50, pipeline),
            &on_vs_off,
            "rkv-master, --log-interval 0",
            0.95,
        ));
        rows.push(ThroughputResult::new(
            "INCR, rkv-master (defaults) vs redis-server (appendonly everysec)".into(),
            (50, pipeline),
            &incr,
            "redis-server, appendonly everysec",
            0.8,
        ));
        if !multi.is_empty() {
            rows.push(ThroughputResult::new(
                "MULTI, 10 SETs, EXEC (transactions/s), rkv-master (defaults) vs \
                 redis-server (appendonly everysec)"
                    .into(),
                (50, 1),
                &multi,
                "redis-server, appendonly everysec",
                0.8,
            ));
        }
        amplification.push(Amplification {
            label: "rkv-master, the log every 10 ms (defaults)".into(),
            pipeline,
            ratio: Spread::of(amp_on),
        });
        amplification.push(Amplification {
            label: "rkv-master, --log-interval 0".into(),
            pipeline,
            ratio: Spread::of(amp_off),
        });
        amplification.push(Amplification {
            label: "redis-server, appendonly everysec".into(),
            pipeline,
            ratio: Spread::of(amp_redis),
        });
    }
    (rows, amplification)
}

/// Transactions per second: `clients` connections each sending `MULTI`,
/// 10 `SET`s of 100-byte values over 100,000 keys and `EXEC` as one
/// pipeline, `total` transactions in all.
fn transactions(port: u16, clients: usize, total: usize) -> f64 {
    let per_client = (total / clients).max(1);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let addr: rkv::server::ListenAddr = format!("127.0.0.1:{port}").parse().unwrap();
                let mut client = Client::connect(&addr, None).unwrap();
                let mut rng = Rng(0x9E37_79B9 ^ ((c as u64 + 1) * 0x2545_F491));
                let value = vec![b'x'; 100];
                for _ in 0..per_client {
                    let keys: Vec<String> = (0..10)
                        .map(|_| format!("tx:{:06}", rng.next_u64() % 100_000))
                        .collect();
                    let mut commands: Vec<Vec<&[u8]>> = vec![vec![b"MULTI"]];
                    for key in &keys {
                        commands.push(vec![b"SET", key.as_bytes(), &value]);
                    }
                    commands.push(vec![b"EXEC"]);
                    let replies = client.pipeline(&commands).unwrap();
                    assert!(
                        matches!(replies.last(), Some(Reply::Array(Some(r))) if r.len() == 10),
                        "EXEC: {replies:?}"
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    (per_client * clients) as f64 / started.elapsed().as_secs_f64()
}

/// Loads `keys` keys (`key:%012d`, redis-benchmark's names, 100-byte
/// values) into `target` in `parts` interleaved parts, calling `between`
/// after each part (a backup, so the master's data lands in several
/// overlapping SST files as a real follower's does).
fn load_keys(target: &Proc, keys: usize, parts: usize, mut between: impl FnMut()) {
    let mut client = target.client();
    for part in 0..parts {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in (part..keys).step_by(parts) {
            args.push(format!("key:{i:012}").into_bytes());
            args.push(vec![b'x'; 100]);
            if args.len() > 2000 {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                client.call(&refs).unwrap();
                args.truncate(1);
            }
        }
        if args.len() > 1 {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            client.call(&refs).unwrap();
        }
        between();
    }
}

/// What [`follower_reads`] measured.
pub struct FollowerReads {
    pub rows: Vec<ThroughputResult>,
    pub after_swap: Vec<ThroughputResult>,
    /// The follower's and redis-server's system calls per GET.
    pub syscalls: Vec<SyscallCount>,
    /// Their resident memory with the keys and 1,000 idle clients.
    pub memory: Vec<MemoryUse>,
}

/// Target 5: GET throughput of a follower holding `keys` keys in several
/// SST files, against redis-server holding the same keys; right after a
/// generation swap; the system calls each makes per GET (`syscall_requests`
/// unpipelined GETs under strace); and the memory each holds with 1,000
/// idle clients.
pub fn follower_reads(
    work: &Path,
    keys: usize,
    requests: usize,
    rounds: usize,
    syscall_requests: usize,
) -> FollowerReads {
    // GETs right after a generation swap: without the log, which would
    // spare the follower the swaps.
    let master = Proc::master(
        &work.join("db"),
        &work.join("backups"),
        &["--interval", "0", "--log-interval", "0"],
    );
    let redis = Proc::redis_server();
    load_keys(&master, keys, 4, || {
        master.client().call(&[b"SAVE"]).unwrap();
    });
    load_keys(&redis, keys, 1, || {});
    let follower = Proc::follower(&work.join("backups"), &work.join("f"), &[]);
    let newest = master.info_num("rkv_last_backup_id");
    wait_until(LONG, "the follower's first apply", || {
        follower.info_num("rkv_applied_backup_id") == newest
    });
    let bench = |port: u16, requests: usize, clients: usize, pipeline: usize| {
        redis_benchmark_keys(port, "get", requests, clients, pipeline, keys)
    };
    let mut rows = Vec::new();
    for (clients, pipeline) in [(50, 1), (50, 16)] {
        let measured: Vec<(f64, f64)> = (0..rounds)
            .map(|_| {
                (
                    bench(follower.port, requests, clients, pipeline),
                    bench(redis.port, requests, clients, pipeline),
                )
            })
            .collect();
        rows.push(ThroughputResult::new(
            format!("GET, rkv-follower vs redis-server, {} keys", keys),
            (clients, pipeline),
            &measured,
            "redis-server",
            if pipeline > 1 { 1.2 } else { 1.0 },
        ));
    }
    // Right after a swap: a small change, its apply, then the same GETs.
    let mut after_swap = Vec::new();
    let swaps: Vec<(f64, f64)> = (0..rounds)
        .map(|round| {
            let key = format!("swap:{round}");
            master
                .client()
                .call(&[b"SET", key.as_bytes(), b"1"])
                .unwrap();
            master.client().call(&[b"SAVE"]).unwrap();
            let newest = master.info_num("rkv_last_backup_id");
            wait_until(LONG, "the apply", || {
                follower.info_num("rkv_applied_backup_id") == newest
            });
            (
                bench(follower.port, requests / 4, 50, 16),
                bench(redis.port, requests / 4, 50, 16),
            )
        })
        .collect();
    after_swap.push(ThroughputResult::new(
        "GET right after a generation swap, rkv-follower vs redis-server".into(),
        (50, 16),
        &swaps,
        "redis-server",
        1.2,
    ));
    let syscalls = [("rkv-follower", &follower), ("redis-server", &redis)]
        .into_iter()
        .filter_map(|(name, server)| {
            count_syscalls(
                name,
                server.pid(),
                server.port,
                "get",
                syscall_requests,
                keys,
            )
        })
        .collect();
    let memory = [("rkv-follower", &follower), ("redis-server", &redis)]
        .into_iter()
        .map(|(name, server)| {
            memory_with_idle_clients(name, server.pid(), server.port, keys, IDLE_CLIENTS)
        })
        .collect();
    follower.stop();
    redis.stop();
    master.stop();
    FollowerReads {
        rows,
        after_swap,
        syscalls,
        memory,
    }
}

/// The idle clients of the memory measurement.
const IDLE_CLIENTS: usize = 1000;

/// The system calls per unpipelined SET of rkv-master at its defaults
/// and of redis-server with `appendonly everysec`.
pub fn set_syscalls(work: &Path, requests: usize) -> Vec<SyscallCount> {
    let start: [(&str, &dyn Fn() -> Proc); 2] = [
        ("redis-server, appendonly everysec", &|| {
            Proc::redis_server_with("yes")
        }),
        ("rkv-master, defaults", &|| {
            let flags = ["--backup-on-exit", "no"];
            Proc::master(&work.join("db"), &work.join("backups"), &flags)
        }),
    ];
    start
        .into_iter()
        .filter_map(|(name, start)| {
            let server = start();
            let count = count_syscalls(name, server.pid(), server.port, "set", requests, 100_000);
            server.stop();
            count
        })
        .collect()
}

/// Follower GETs (pipelined 16, over `keys` keys in several SST files)
/// before and after `duration` of tailing under `rate` SETs a second, and
/// the lag over that run: the warm cache the log keeps (no swap, no new
/// engine) and whether the lag stays flat.
pub fn tailing(
    work: &Path,
    keys: usize,
    requests: usize,
    duration: Duration,
    rate: u32,
    rounds: usize,
) -> (LagResult, ThroughputResult) {
    let label = format!(
        "rkv, defaults, {} of tailing",
        humantime::format_duration(Duration::from_secs(duration.as_secs()))
    );
    let setup = LagSetup::defaults(&label);
    let pair = Pair::start(work, &setup);
    load_keys(&pair.master, keys, 4, || {
        pair.master.client().call(&[b"SAVE"]).unwrap();
    });
    let follower = &pair.followers[0];
    let at = pair.master.info_num("rkv_log_shipped_seq");
    wait_until(LONG, "the follower to hold every key", || {
        follower.info_num("rkv_applied_seq") >= at
    });
    let get = || redis_benchmark_keys(follower.port, "get", requests, 50, 16, keys);
    let before: Vec<f64> = (0..rounds).map(|_| get()).collect();
    let lag = probe_lag(&pair, &setup, duration, rate);
    let after: Vec<f64> = (0..rounds).map(|_| get()).collect();
    let swaps = follower.info_num("rkv_applies_done");
    pair.stop();
    let pairs: Vec<(f64, f64)> = after.into_iter().zip(before).collect();
    let reads = ThroughputResult::new(
        format!(
            "GET, rkv-follower after {} of tailing vs before it ({keys} keys; {swaps} \
             restores in all)",
            humantime::format_duration(Duration::from_secs(duration.as_secs()))
        ),
        (50, 16),
        &pairs,
        "the same follower, before",
        1.0,
    );
    (lag, reads)
}

/// Target 6: a new follower's first restore of `mib` MiB against `cp -r`
/// of the same backup directory, in alternation.
pub struct BootstrapResult {
    pub mib: u64,
    pub restore_ms: Spread,
    pub cp_ms: Spread,
    /// `cp -r` then `sync`.
    pub cp_sync_ms: Spread,
    pub ratio: Spread,
}

pub fn bootstrap(work: &Path, mib: u64, rounds: usize) -> BootstrapResult {
    let (db_path, backups) = (work.join("db"), work.join("backups"));
    fill_db(&db_path, mib);
    {
        let db = Db::open(
            &db_path,
            OpenMode::ReadWrite {
                create_if_missing: false,
            },
        )
        .unwrap();
        BackupDir::new(&backups).create(&db, "bench").unwrap();
    }
    let mut measured = Vec::new();
    for round in 0..rounds {
        let dest = work.join(format!("restore-{round}"));
        let started = Instant::now();
        BackupDir::new(&backups)
            .restore(Some(1), &dest, RestoreMode::Full)
            .unwrap();
        let restore_ms = started.elapsed().as_secs_f64() * 1000.0;
        let _ = std::fs::remove_dir_all(&dest);
        let copy = work.join(format!("cp-{round}"));
        let started = Instant::now();
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&backups)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success(), "cp -r failed");
        let cp_ms = started.elapsed().as_secs_f64() * 1000.0;
        // And made durable, as the restore's files are.
        let status = std::process::Command::new("sync").status().unwrap();
        assert!(status.success(), "sync failed");
        let cp_sync_ms = started.elapsed().as_secs_f64() * 1000.0;
        let _ = std::fs::remove_dir_all(&copy);
        measured.push((restore_ms, cp_ms, cp_sync_ms));
    }
    BootstrapResult {
        mib,
        restore_ms: Spread::of(measured.iter().map(|m| m.0).collect()),
        cp_ms: Spread::of(measured.iter().map(|m| m.1).collect()),
        cp_sync_ms: Spread::of(measured.iter().map(|m| m.2).collect()),
        ratio: Spread::of(measured.iter().map(|m| m.0 / m.1).collect()),
    }
}

/// Target 8: a master's SET throughput with `followers` followers running
/// against none, in alternation.
pub fn writes_with_followers(
    work: &Path,
    followers: usize,
    requests: usize,
    rounds: usize,
) -> ThroughputResult {
    let mut measured = Vec::new();
    for round in 0..rounds {
        let rate = |n: usize| {
            let dir = work.join(format!("w{n}-{round}"));
            let master = Proc::master(
                &dir.join("db"),
                &dir.join("backups"),
                &["--backup-on-exit", "no"],
            );
            master.client().call(&[b"SAVE"]).unwrap();
            let procs: Vec<Proc> = (0..n)
                .map(|i| Proc::follower(&dir.join("backups"), &dir.join(format!("f{i}")), &[]))
                .collect();
            let rps = redis_benchmark(master.port, "set", requests, 50, 1);
            for f in procs {
                f.stop();
            }
            master.stop();
            let _ = std::fs::remove_dir_all(&dir);
            rps
        };
        measured.push((rate(followers), rate(0)));
    }
    ThroughputResult::new(
        format!("SET, rkv-master with {followers} followers of its log vs none (defaults)"),
        (50, 1),
        &measured,
        "rkv-master, no follower",
        0.9,
    )
}

/// A database of about `mib` MiB of 1 KiB incompressible values under keys
/// spread over the key space, compacted (steady state).
fn fill_db(path: &Path, mib: u64) {
    let db = Db::open(
        path,
        OpenMode::ReadWrite {
            create_if_missing: true,
        },
    )
    .unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut batch = db.batch();
    for i in 0..mib * 1024 {
        let key = format!("k{:016x}", rng.next_u64());
        batch.put(key.as_bytes(), &rng.bytes(1024), None, None);
        if i % 1000 == 999 {
            db.write(std::mem::replace(&mut batch, db.batch())).unwrap();
        }
    }
    db.write(batch).unwrap();
    db.compact().unwrap();
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}

/// Writes `mib` MiB of 1 KiB values under new random keys (spread over the
/// key space), 64 to an MSET, and backs up (SAVE).
fn write_new_keys(client: &mut rkv::client::Client, rng: &mut Rng, mib: u64) {
    for _ in 0..mib * 16 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for _ in 0..64 {
            args.push(format!("k{:016x}", rng.next_u64()).into_bytes());
            args.push(rng.bytes(1024));
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        client.call(&refs).unwrap();
    }
    client.call(&[b"SAVE"]).unwrap();
}

/// What replication through an object store costs besides lag.
pub struct StoreCost {
    /// Bytes the master uploaded and the follower downloaded for a 1 MiB
    /// change to a database of `base_mib`.
    pub base_mib: u64,
    pub change_up: i64,
    pub change_down: i64,
    /// An idle follower's requests, measured over `idle_window`, per hour.
    pub idle_window: Duration,
    pub idle_gets_per_hour: f64,
    pub idle_lists_per_hour: f64,
    pub idle_other_per_hour: f64,
}

/// Bytes moved for a 1 MiB change, and an idle follower's requests.
pub fn store_cost(work: &Path, store: &Store, base_mib: u64, idle_window: Duration) -> StoreCost {
    let _ = std::fs::remove_dir_all(work);
    let (db, data) = (work.join("db"), work.join("f"));
    let endpoint = ["--s3-endpoint", store.endpoint.as_str()];
    let backups = std::path::PathBuf::from(&store.url);
    // A compacted database, as in the catch-up case: the change then costs
    // what it adds, not a compaction it happens to trigger.
    fill_db(&db, base_mib);
    // The change goes by a backup: the log, which would bring it instead,
    // is off here, and on (the default) for the idle follower below.
    let mut master_flags = vec!["--interval", "0", "--log-interval", "0"];
    master_flags.extend(endpoint);
    let master = Proc::master(&db, &backups, &master_flags);
    let mut client = master.client();
    client.call(&[b"SAVE"]).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut follower_flags = vec!["--poll-interval", "1s"];
    follower_flags.extend(endpoint);
    let follower = Proc::follower(&backups, &data, &follower_flags);
    let applied = |id: i64| follower.info_num("rkv_applied_backup_id") >= id;
    wait_until(LONG, "the first apply", || applied(1));
    let (up, down) = (
        master.info_num("rkv_store_bytes_uploaded"),
        follower.info_num("rkv_store_bytes_downloaded"),
    );
    write_new_keys(&mut client, &mut rng, 1);
    let newest = master.info_num("rkv_last_backup_id");
    wait_until(LONG, "the incremental apply", || applied(newest));
    let change_up = master.info_num("rkv_store_bytes_uploaded") - up;
    let change_down = follower.info_num("rkv_store_bytes_downloaded") - down;

    // Idle: nothing written; the master, at its defaults (the log on), is
    // alive and its heartbeat renews `latest`; the follower reads `latest`
    // and the next segment each poll.
    master.stop();
    let master = Proc::master(&db, &backups, &endpoint);
    std::thread::sleep(Duration::from_secs(3));
    let count = |f: &str| follower.info_num(f);
    let before = [
        count("rkv_store_get_requests"),
        count("rkv_store_list_requests"),
        count("rkv_store_put_requests") + count("rkv_store_delete_requests"),
    ];
    std::thread::sleep(idle_window);
    let after = [
        count("rkv_store_get_requests"),
        count("rkv_store_list_requests"),
        count("rkv_store_put_requests") + count("rkv_store_delete_requests"),
    ];
    let per_hour = |i: usize| (after[i] - before[i]) as f64 * 3600.0 / idle_window.as_secs_f64();
    follower.stop();
    master.stop();
    StoreCost {
        base_mib,
        change_up,
        change_down,
        idle_window,
        idle_gets_per_hour: per_hour(0),
        idle_lists_per_hour: per_hour(1),
        idle_other_per_hour: per_hour(2),
    }
}

/// SET and GET over TLS: rkv-master at its defaults with a TLS listener
/// (the server's certificate only, as application hosts use it) against
/// redis-server over TLS (`appendonly everysec`), alternated in each
/// round; redis-benchmark `--tls`, 50 clients, 100,000 keys. The GETs read
/// the keys the SETs wrote.
pub fn tls_throughput(work: &Path, requests: usize, rounds: usize) -> Vec<ThroughputResult> {
    let pki = rkv_testkit::tls::Pki::new(&work.join("pki"));
    let (cert, key) = (pki.file("server.crt"), pki.file("server.key"));
    let tls = [
        "--tls".to_string(),
        "--cacert".into(),
        pki.ca().display().to_string(),
    ];
    let mut rows = Vec::new();
    for pipeline in [1, 16] {
        let (mut set, mut get) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let measure = |port: u16| {
                let run = |test| {
                    crate::daemons::redis_benchmark_with(
                        port,
                        test,
                        requests,
                        (50, pipeline),
                        100_000,
                        &tls,
                    )
                };
                (run("set"), run("get"))
            };
            let redis = Proc::redis_server_tls("yes", &cert, &key);
            let baseline = measure(redis.tls_port.expect("a TLS port"));
            redis.stop();
            let dir = work.join(format!("tls-{pipeline}-{round}"));
            let tls = pki.daemon_flags(false);
            let mut flags = vec!["--backup-on-exit", "no", "--tls-listen", "127.0.0.1:0"];
            flags.extend(tls.iter().map(String::as_str));
            let master = Proc::master(&dir.join("db"), &dir.join("backups"), &flags);
            let rkv = measure(master.tls_port.expect("a TLS port"));
            master.stop();
            let _ = std::fs::remove_dir_all(&dir);
            set.push((rkv.0, baseline.0));
            get.push((rkv.1, baseline.1));
        }
        let peer = "redis-server over TLS, appendonly everysec";
        rows.push(ThroughputResult::new(
            "SET over TLS, rkv-master (defaults)".into(),
            (50, pipeline),
            &set,
            peer,
            0.0,
        ));
        rows.push(ThroughputResult::new(
            "GET over TLS, rkv-master (defaults)".into(),
            (50, pipeline),
            &get,
            peer,
            0.0,
        ));
    }
    rows
}
