//! The five scenarios. Each returns rows of numbers measured in this run; no
//! scenario asserts a speed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkv::backup::{BackupDir, BackupSource, RestoreMode};
use rkv::db::{Db, OpenMode};
use rkv::resp::Reply;
use rocksdb::WriteBatch;

use crate::daemons::{redis_benchmark, wait_until, Proc};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(600);

/// Scenario 1: time from a write on the master until it is readable on each
/// follower, for every write.
pub struct LagResult {
    pub interval: Duration,
    pub poll: Duration,
    /// Milliseconds, sorted.
    pub lags_ms: Vec<f64>,
    pub max_apply_ms: i64,
    pub master_rss: f64,
    pub follower_rss: f64,
}

pub fn lag(work: &Path, interval: Duration, duration: Duration, rate_per_s: u32) -> LagResult {
    let poll = Duration::from_secs(1);
    let (backups, interval_s, poll_s) = (work.join("backups"), fmt_dur(interval), fmt_dur(poll));
    let master = Proc::master(&work.join("db"), &backups, &["--interval", &interval_s]);
    let followers: Vec<Proc> = (0..2)
        .map(|i| {
            Proc::follower(
                &backups,
                &work.join(format!("f{i}")),
                &["--poll-interval", &poll_s],
            )
        })
        .collect();

    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = followers
        .iter()
        .map(|f| {
            let (addr, sent, written, done) =
                (f.addr.clone(), sent.clone(), written.clone(), done.clone());
            std::thread::spawn(move || {
                let mut client = rkv::client::Client::connect(&addr, None).unwrap();
                let mut lags = Vec::new();
                let mut next = 0;
                loop {
                    let target = written.load(Ordering::SeqCst);
                    // A backup is a snapshot: if key n is there, so is every
                    // key before it. Walk forward while keys are visible.
                    while next < target {
                        let key = format!("lag:{next:08}");
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
        })
        .collect();

    let mut client = master.client();
    let period = Duration::from_secs(1) / rate_per_s;
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < duration {
        let due = started + period * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("lag:{n:08}");
        sent.lock().unwrap().push(Instant::now());
        client.call(&[b"SET", key.as_bytes(), b"x"]).unwrap();
        n += 1;
        written.store(n, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let mut lags_ms: Vec<f64> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    lags_ms.sort_by(f64::total_cmp);
    let max_apply_ms = followers
        .iter()
        .map(|f| f.info_num("rkv_last_apply_duration_ms"))
        .max()
        .unwrap_or(0);
    let result = LagResult {
        interval,
        poll,
        lags_ms,
        max_apply_ms,
        master_rss: master.peak_rss_mib(),
        follower_rss: followers.iter().map(Proc::peak_rss_mib).fold(0.0, f64::max),
    };
    for f in followers {
        f.stop();
    }
    master.stop();
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
    pub cp_ms: f64,
    pub master_rss: f64,
    pub follower_rss: f64,
}

pub fn catchup(work: &Path, db_mib: u64, change_mib: u64) -> CatchupResult {
    let (db_path, backups, data) = (work.join("db"), work.join("backups"), work.join("f"));
    {
        let db = Db::open(
            &db_path,
            OpenMode::ReadWrite {
                create_if_missing: true,
            },
        )
        .unwrap();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut batch = WriteBatch::default();
        for i in 0..db_mib * 1024 {
            // Spread keys over the key space; 1 KiB incompressible values.
            batch.put(format!("k{:016x}", rng.next()), rng.bytes(1024));
            if i % 1000 == 999 {
                db.write(std::mem::take(&mut batch)).unwrap();
            }
        }
        db.write(batch).unwrap();
        // A database in steady state: one change does not trigger compaction.
        db.compact().unwrap();
    }
    let master = Proc::master(&db_path, &backups, &["--interval", "0"]);
    master.client().call(&[b"SAVE"]).unwrap();
    let follower = Proc::follower(&backups, &data, &["--poll-interval", "50ms"]);
    wait_until(LONG, "the first apply", || {
        follower.info_num("rkv_applied_backup_id") == 1
    });

    // The change: 1 KiB values under new keys spread over the key space.
    let mut client = master.client();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..change_mib * 16 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for _ in 0..64 {
            args.push(format!("k{:016x}", rng.next()).into_bytes());
            args.push(rng.bytes(1024));
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        client.call(&refs).unwrap();
    }
    client.call(&[b"SAVE"]).unwrap();
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
    // Against copying the same backup files with cp -r.
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&backups)
        .arg(work.join("cp"))
        .status()
        .unwrap();
    assert!(status.success(), "cp -r failed");
    let cp_ms = started.elapsed().as_secs_f64() * 1000.0;
    CatchupResult {
        db_mib,
        backup_ms,
        backup_bytes,
        apply_ms,
        apply_bytes,
        full_restore_ms,
        full_restore_bytes: stats.bytes_copied,
        cp_ms,
        master_rss,
        follower_rss,
    }
}

/// Scenarios 3 and 4: requests per second measured by redis-benchmark.
pub struct ThroughputResult {
    pub label: String,
    pub clients: usize,
    pub pipeline: usize,
    pub rkv: f64,
    pub baseline: f64,
    pub baseline_name: &'static str,
    pub rkv_rss: f64,
}

pub fn master_writes(work: &Path, requests: usize) -> Vec<ThroughputResult> {
    let mut rows = Vec::new();
    for pipeline in [1, 16] {
        let rate = |tag: &str, interval: &str| {
            let dir = work.join(format!("{tag}-{pipeline}"));
            let master = Proc::master(
                &dir.join("db"),
                &dir.join("backups"),
                &["--interval", interval, "--backup-on-exit", "no"],
            );
            let rps = redis_benchmark(master.port, "set", requests, 50, pipeline);
            let rss = master.peak_rss_mib();
            let backups = master.info_num("rkv_backups_done");
            master.stop();
            (rps, rss, backups)
        };
        let (off, _, _) = rate("off", "0");
        let (on, rss, backups) = rate("on", "1s");
        rows.push(ThroughputResult {
            label: format!("SET, backups every 1s ({backups} taken) vs off"),
            clients: 50,
            pipeline,
            rkv: on,
            baseline: off,
            baseline_name: "rkv-master, backups off",
            rkv_rss: rss,
        });
    }
    rows
}

pub fn follower_reads(work: &Path, requests: usize) -> Vec<ThroughputResult> {
    let master = Proc::master(
        &work.join("db"),
        &work.join("backups"),
        &["--interval", "0"],
    );
    let redis = Proc::redis_server();
    // The same 100,000 keys (redis-benchmark's key:__rand_int__) in both.
    for target in [&master, &redis] {
        let mut client = target.client();
        for chunk in 0..100 {
            let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
            for i in chunk * 1000..(chunk + 1) * 1000 {
                args.push(format!("key:{i:012}").into_bytes());
                args.push(vec![b'x'; 100]);
            }
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            client.call(&refs).unwrap();
        }
    }
    master.client().call(&[b"SAVE"]).unwrap();
    let follower = Proc::follower(&work.join("backups"), &work.join("f"), &[]);
    wait_until(LONG, "the follower's first apply", || {
        follower.info_num("rkv_applied_backup_id") == 1
    });
    let mut rows = Vec::new();
    // One client shows the per-request cost; fifty show how each server
    // schedules many clients on few cores.
    for (clients, pipeline) in [(50, 1), (50, 16), (1, 1)] {
        let requests = if clients == 1 { requests / 4 } else { requests };
        let rkv = redis_benchmark(follower.port, "get", requests, clients, pipeline);
        let baseline = redis_benchmark(redis.port, "get", requests, clients, pipeline);
        rows.push(ThroughputResult {
            label: "GET, rkv-follower vs redis-server".into(),
            clients,
            pipeline,
            rkv,
            baseline,
            baseline_name: "redis-server",
            rkv_rss: follower.peak_rss_mib(),
        });
    }
    follower.stop();
    redis.stop();
    master.stop();
    rows
}

/// xorshift64: fast, reproducible, incompressible enough.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn fmt_dur(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}
