//! `rkv-bench`: rkv's benchmark. Runs each scenario on loopback and temp
//! dirs with the real daemons, prints a table per scenario, and writes
//! BENCHMARKS.md and two PNG plots (with gnuplot) into --out. Every figure is
//! a ratio or a distribution measured in this run on this machine; nothing
//! here asserts a speed. Run it through `scripts/bench.sh`.

mod daemons;
mod freshness;
mod report;
mod scenarios;
mod serving;

use rkv_testkit::{moto, process, redis, rng};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use report::{percentile, Report};
use scenarios::LagSetup;

/// Benchmarks rkv against its peers, target by target: idle CPU; the live
/// tail's lag under load against Litestream (beside CPU hogs, over a long
/// run, with many followers, through an object store); the backup store's
/// size; write and read throughput against redis-server and against rkv
/// without the log; reads after long tailing; bootstrap against cp -r; and
/// catch-up against database size.
#[derive(Debug, Parser)]
#[command(name = "rkv-bench")]
struct Args {
    #[command(flatten)]
    run: rkv_harness::RunArgs,
    /// Run only these scenarios (for investigating one figure; the report
    /// then lacks the others).
    #[arg(long, value_delimiter = ',', value_parser = ["idle", "lag", "flat", "writes", "tls", "reads", "bootstrap", "catchup", "followers", "store", "freshness"])]
    only: Vec<String>,
    /// How long the long tailing run lasts (default 10m, 30s with
    /// --quick): for investigating the backup store's size or the lag's
    /// drift over another span.
    #[arg(long = "flat-run", value_parser = humantime::parse_duration)]
    flat_run: Option<Duration>,
}

struct Plan {
    idle_s: u64,
    lag_run: Duration,
    flat_run: Duration,
    load: u32,
    rounds: usize,
    requests: usize,
    /// Unpipelined requests counted under strace.
    syscall_requests: usize,
    read_keys: usize,
    bootstrap_mib: u64,
    sizes_mib: Vec<u64>,
    followers: usize,
    store_base_mib: u64,
    store_idle: Duration,
    /// How long read-your-writes is probed.
    freshness_run: Duration,
}

pub fn log(message: &str) {
    eprintln!(
        "{} rkv-bench: {message}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
}

fn main() {
    let args = Args::parse();
    let plan = if args.run.quick {
        Plan {
            idle_s: 10,
            lag_run: Duration::from_secs(12),
            flat_run: Duration::from_secs(30),
            load: 5000,
            rounds: 1,
            requests: 20_000,
            syscall_requests: 10_000,
            read_keys: 100_000,
            bootstrap_mib: 64,
            sizes_mib: vec![4, 64],
            followers: 5,
            store_base_mib: 16,
            store_idle: Duration::from_secs(10),
            freshness_run: Duration::from_secs(8),
        }
    } else {
        Plan {
            idle_s: 60,
            lag_run: Duration::from_secs(30),
            flat_run: Duration::from_secs(600),
            load: 5000,
            rounds: 3,
            requests: 200_000,
            syscall_requests: 50_000,
            read_keys: 1_000_000,
            bootstrap_mib: 1024,
            sizes_mib: vec![10, 1024],
            followers: 20,
            store_base_mib: 256,
            store_idle: Duration::from_secs(120),
            freshness_run: Duration::from_secs(30),
        }
    };
    let plan = Plan {
        flat_run: args.flat_run.unwrap_or(plan.flat_run),
        ..plan
    };
    std::fs::create_dir_all(&args.run.out).expect("create --out");
    // A thousand idle clients to each server, and their sockets here.
    rkv_harness::raise_nofile();
    let scratch = Scratch::new(args.run.work.clone().unwrap_or_else(std::env::temp_dir));
    let started = Instant::now();
    let load_before = load_average();
    let dir = |name: &str| {
        let d = scratch.path().join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut report = Report {
        quick: args.run.quick,
        load: plan.load,
        ..Report::default()
    };

    if wanted("idle") {
        log(&format!("1. idle CPU over {} s", plan.idle_s));
        report.idle = Some(scenarios::idle(&dir("idle"), plan.idle_s));
    }
    if wanted("lag") {
        // Interleaved: every configuration once per round.
        let backups_only = LagSetup {
            master: vec!["--log-interval", "0", "--interval", "100ms"],
            ..LagSetup::defaults("rkv, backups only (--log-interval 0 --interval 100ms)")
        };
        let hogged = LagSetup {
            hogs: 2,
            ..LagSetup::defaults("rkv, defaults, 2 CPU hogs beside it")
        };
        let setups = [LagSetup::defaults("rkv, defaults"), hogged, backups_only];
        for round in 0..plan.rounds {
            for setup in &setups {
                log(&format!(
                    "2. lag, round {}: {} under {} SET/s",
                    round + 1,
                    setup.label,
                    plan.load
                ));
                report
                    .lag
                    .push(scenarios::lag(&dir("lag"), setup, plan.lag_run, plan.load));
            }
            log(&format!("2. lag, round {}: Litestream", round + 1));
            match scenarios::litestream_lag(&dir("litestream"), plan.lag_run, plan.load) {
                Some(run) => report.lag.push(run),
                None => report.litestream_missing = true,
            }
        }
    }
    if wanted("flat") {
        log(&format!(
            "3. {} of tailing under {} SET/s: lag, and follower GETs before and after",
            humantime::format_duration(plan.flat_run),
            plan.load
        ));
        let (lag, reads) = scenarios::tailing(
            &dir("flat"),
            plan.read_keys,
            plan.requests,
            plan.flat_run,
            plan.load,
            plan.rounds,
        );
        report.flat = Some(lag);
        report.tailing_reads = Some(reads);
    }
    if wanted("writes") {
        log("4. master write throughput");
        (report.writes, report.amplification) =
            scenarios::master_writes(&dir("writes"), plan.requests, plan.rounds);
        report.syscalls = scenarios::set_syscalls(&dir("syscalls"), plan.syscall_requests);
    }
    if wanted("tls") {
        log("4b. SET and GET over TLS");
        report.tls = scenarios::tls_throughput(&dir("tls"), plan.requests, plan.rounds);
    }
    if wanted("reads") {
        log("5. follower read throughput");
        let reads = scenarios::follower_reads(
            &dir("reads"),
            plan.read_keys,
            plan.requests,
            plan.rounds,
            plan.syscall_requests,
        );
        report.reads = reads.rows;
        report.reads.extend(reads.after_swap);
        report.syscalls.extend(reads.syscalls);
        report.memory = reads.memory;
    }
    if wanted("bootstrap") {
        log(&format!("6. bootstrap of {} MiB", plan.bootstrap_mib));
        report.bootstrap = Some(scenarios::bootstrap(
            &dir("bootstrap"),
            plan.bootstrap_mib,
            plan.rounds,
        ));
        let _ = std::fs::remove_dir_all(scratch.path().join("bootstrap"));
    }
    if wanted("catchup") {
        for &size in &plan.sizes_mib {
            log(&format!(
                "7. catch-up on a {size} MiB database after a 1 MiB change"
            ));
            let work = dir(&format!("catchup-{size}"));
            report.catchup.push(scenarios::catchup(&work, size, 1));
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    if wanted("followers") {
        for round in 0..plan.rounds {
            for n in [1, plan.followers] {
                log(&format!("8. lag with {n} followers, round {}", round + 1));
                let setup = LagSetup {
                    followers: n,
                    ..LagSetup::defaults("rkv, defaults")
                };
                let run = scenarios::lag(&dir("followers"), &setup, plan.lag_run, plan.load);
                report.many.push(run);
            }
        }
        log(&format!("8. writes with {} followers", plan.followers));
        report.many_writes = Some(scenarios::writes_with_followers(
            &dir("followers-writes"),
            plan.followers,
            plan.requests,
            plan.rounds,
        ));
    }
    if wanted("store") {
        object_store(&plan, &dir, &mut report);
    }
    if wanted("freshness") {
        log(&format!(
            "9. read-your-writes on a follower under {} SET/s, and what waiting costs reads",
            plan.load
        ));
        report.freshness = Some(freshness::freshness(
            &dir("freshness"),
            plan.freshness_run,
            plan.load,
            plan.requests,
            plan.rounds,
        ));
    }
    report.elapsed = started.elapsed();
    report.load_average = (load_before, load_average());
    report.check();
    let markdown = report.markdown(&args.run.out);
    println!("{markdown}");
    std::fs::write(args.run.out.join("BENCHMARKS.md"), &markdown).expect("write BENCHMARKS.md");
    log(&format!(
        "wrote {} in {}",
        args.run.out.join("BENCHMARKS.md").display(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    ));
}

/// The object store case: lag through moto's S3 server (the master
/// shipping its log every 100 ms, the follower polling every 200 ms);
/// bytes moved per 1 MiB change; an idle follower's requests.
fn object_store(plan: &Plan, dir: &dyn Fn(&str) -> PathBuf, report: &mut Report) {
    if !moto::Moto::installed() {
        log("moto is not installed: the object store case is not measured");
        report.store_missing = true;
        return;
    }
    let moto = moto::Moto::start(&dir("moto"));
    moto.create_bucket("rkv-bench");
    // moto checks no signature; the client wants credentials all the same.
    std::env::set_var("AWS_ACCESS_KEY_ID", "rkv-bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "rkv-bench");
    std::env::set_var("AWS_REGION", "us-east-1");
    for round in 0..plan.rounds {
        log(&format!(
            "9. object store, round {}: lag through S3",
            round + 1
        ));
        let store = scenarios::Store {
            endpoint: moto.endpoint(),
            url: format!("s3://rkv-bench/lag{round}"),
        };
        let setup = LagSetup {
            master: vec!["--log-interval", "100ms"],
            follower: vec!["--poll-interval", "200ms"],
            store: Some(&store),
            ..LagSetup::defaults("rkv via S3, --log-interval 100ms, --poll-interval 200ms")
        };
        let via = scenarios::lag(&dir("store-s3"), &setup, plan.lag_run, plan.load);
        report.store_lag.push(via);
    }
    log("9. object store: bytes per 1 MiB change, and an idle follower's requests");
    let store = scenarios::Store {
        endpoint: moto.endpoint(),
        url: "s3://rkv-bench/cost".to_string(),
    };
    report.store_cost = Some(scenarios::store_cost(
        &dir("store-cost"),
        &store,
        plan.store_base_mib,
        plan.store_idle,
    ));
}

/// The 1-minute load average now.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The scratch directory, removed when the benchmark ends (also on panic).
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: PathBuf) -> Scratch {
        let dir = parent.join(format!("rkv-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}
