//! `rkv-bench`: rkv's benchmark. Runs each scenario on loopback and temp
//! dirs with the real daemons, prints a table per scenario, and writes
//! BENCHMARKS.md and two PNG plots (with gnuplot) into --out. Every figure is
//! a ratio or a distribution measured in this run on this machine; nothing
//! here asserts a speed. Run it through `scripts/bench.sh`.

mod daemons;
mod scenarios;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use scenarios::{mib, CatchupResult, LagResult, ThroughputResult};

/// Benchmarks rkv: lag, catch-up cost against database size, write and read
/// throughput against redis-server, new-follower bootstrap.
#[derive(Debug, Parser)]
#[command(name = "rkv-bench")]
struct Args {
    /// Small sizes and short runs (under 3 minutes): proves the benchmark
    /// works, not how fast rkv is.
    #[arg(long)]
    quick: bool,
    /// Where BENCHMARKS.md and the plots go.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Where the scratch databases go (default: a temp dir).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Run only these scenarios (for investigating one figure; the report
    /// then lacks the others).
    #[arg(long, value_delimiter = ',', value_parser = ["lag", "catchup", "writes", "reads"])]
    only: Vec<String>,
}

struct Plan {
    lag: Vec<(Duration, Duration)>, // (interval, writing time)
    sizes_mib: Vec<u64>,
    change_mib: u64,
    requests: usize,
}

fn log(message: &str) {
    eprintln!(
        "{} rkv-bench: {message}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
}

fn main() {
    let args = Args::parse();
    let plan = if args.quick {
        Plan {
            lag: vec![
                (Duration::from_secs(1), Duration::from_secs(6)),
                (Duration::from_secs(3), Duration::from_secs(9)),
            ],
            sizes_mib: vec![4, 16, 64],
            change_mib: 1,
            requests: 20_000,
        }
    } else {
        Plan {
            lag: vec![
                (Duration::from_secs(1), Duration::from_secs(30)),
                (Duration::from_secs(10), Duration::from_secs(60)),
            ],
            sizes_mib: vec![10, 100, 1024],
            change_mib: 1,
            requests: 200_000,
        }
    };
    daemons::REPEATS.store(
        if args.quick { 1 } else { 3 },
        std::sync::atomic::Ordering::Relaxed,
    );
    std::fs::create_dir_all(&args.out).expect("create --out");
    let scratch = Scratch::new(args.work.clone().unwrap_or_else(std::env::temp_dir));
    let started = Instant::now();
    let dir = |name: &str| {
        let d = scratch.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut lag = Vec::new();
    for (interval, duration) in plan.lag.iter().filter(|_| wanted("lag")) {
        log(&format!(
            "1. lag at --interval {} for {}",
            humantime::format_duration(*interval),
            humantime::format_duration(*duration)
        ));
        lag.push(scenarios::lag(
            &dir(&format!("lag-{}", interval.as_millis())),
            *interval,
            *duration,
            20,
        ));
    }
    let mut catchup = Vec::new();
    for &size in plan.sizes_mib.iter().filter(|_| wanted("catchup")) {
        log(&format!(
            "2. catch-up on a {size} MiB database after a {} MiB change",
            plan.change_mib
        ));
        let work = dir(&format!("catchup-{size}"));
        catchup.push(scenarios::catchup(&work, size, plan.change_mib));
        let _ = std::fs::remove_dir_all(&work);
    }
    let mut writes = Vec::new();
    if wanted("writes") {
        log("3. master write throughput");
        writes = scenarios::master_writes(&dir("writes"), plan.requests);
    }
    let mut reads = Vec::new();
    if wanted("reads") {
        log("4. follower read throughput");
        reads = scenarios::follower_reads(&dir("reads"), plan.requests);
    }

    let report = Report {
        quick: args.quick,
        lag,
        catchup,
        writes,
        reads,
        elapsed: started.elapsed(),
    };
    report.check();
    let markdown = report.markdown(&args.out);
    println!("{markdown}");
    std::fs::write(args.out.join("BENCHMARKS.md"), &markdown).expect("write BENCHMARKS.md");
    log(&format!(
        "wrote {} in {}",
        args.out.join("BENCHMARKS.md").display(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
    ));
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

struct Report {
    quick: bool,
    lag: Vec<LagResult>,
    catchup: Vec<CatchupResult>,
    writes: Vec<ThroughputResult>,
    reads: Vec<ThroughputResult>,
    elapsed: Duration,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

impl Report {
    /// The benchmark ran and every scenario produced numbers.
    fn check(&self) {
        for l in &self.lag {
            assert!(!l.lags_ms.is_empty(), "the lag scenario measured no write");
        }
        for c in &self.catchup {
            assert!(
                c.apply_ms >= 0 && c.apply_bytes > 0 && c.full_restore_ms > 0.0,
                "catch-up produced no numbers"
            );
        }
        for t in self.writes.iter().chain(&self.reads) {
            assert!(
                t.rkv > 0.0 && t.baseline > 0.0,
                "{} produced no rate",
                t.label
            );
        }
    }

    fn markdown(&self, out: &Path) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# rkv benchmarks\n");
        let _ = writeln!(
            md,
            "Measured by `scripts/bench.sh{}` in {} on this machine: {}. \
             Every figure compares things measured in the same run.\n",
            if self.quick { " --quick" } else { "" },
            humantime::format_duration(Duration::from_secs(self.elapsed.as_secs())),
            machine()
        );
        if self.quick {
            let _ = writeln!(md, "**Quick mode: small sizes and short runs, to show the benchmark works; not representative.**\n");
        }
        let _ = writeln!(md, "Reproduce: `scripts/bench.sh` (full, under 20 minutes on 2 cores) or `scripts/bench.sh --quick`.\n");

        let _ = writeln!(
            md,
            "## 1. Lag: write on the master → readable on a follower\n"
        );
        let _ = writeln!(md, "A writer sets a key 20 times a second; readers poll both followers (inotify on local disk, `--poll-interval 1s`). Bound = interval + poll + slowest apply seen. The seed's loop (back up every 10 s, full restore every 10 s) bounds lag by 20 s.\n");
        let _ = writeln!(md, "| --interval | writes seen | p50 ms | p99 ms | max ms | bound ms | p99 / (interval + 250 ms) | master RSS MiB | follower RSS MiB |");
        let _ = writeln!(
            md,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for l in &self.lag {
            let interval_ms = l.interval.as_millis() as f64;
            let bound = interval_ms + l.poll.as_millis() as f64 + l.max_apply_ms as f64;
            let p99 = percentile(&l.lags_ms, 99.0);
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
                humantime::format_duration(l.interval),
                l.lags_ms.len(),
                percentile(&l.lags_ms, 50.0),
                p99,
                percentile(&l.lags_ms, 100.0),
                bound,
                p99 / (interval_ms + 250.0),
                l.master_rss,
                l.follower_rss
            );
        }
        let _ = writeln!(
            md,
            "| seed loop (10 s + full restore) | | | | 20000 (bound) | | | | |\n"
        );
        let _ = writeln!(md, "![lag CDF](bench-lag-cdf.png)\n");

        let _ = writeln!(
            md,
            "## 2. Catch-up cost against database size (1 MiB change)\n"
        );
        let _ = writeln!(md, "The database is filled with 1 KiB incompressible values and compacted (steady state), then 1 MiB of new keys spread over the key space is written. Backup and apply times are what the daemons report in INFO; the full restore is a plain restore of the same backup into an empty directory (a follower without incremental restore, or the seed's loop).\n");
        let _ = writeln!(md, "| DB MiB | backup ms | backup MiB copied | incremental apply ms | apply MiB copied | full restore ms | full restore MiB | full / incremental | master RSS MiB | follower RSS MiB |");
        let _ = writeln!(
            md,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for c in &self.catchup {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {:.1}× | {:.0} | {:.0} |",
                c.db_mib,
                c.backup_ms,
                mib(c.backup_bytes),
                c.apply_ms,
                mib(c.apply_bytes),
                c.full_restore_ms,
                mib(c.full_restore_bytes as i64),
                c.full_restore_ms / (c.apply_ms.max(1) as f64),
                c.master_rss,
                c.follower_rss
            );
        }
        if let (Some(small), Some(large)) = (self.catchup.first(), self.catchup.last()) {
            let _ = writeln!(
                md,
                "\nIncremental apply on {} MiB vs on {} MiB for the same change: **{:.2}×** (target ≤ 1.2×).\n",
                large.db_mib,
                small.db_mib,
                large.apply_ms as f64 / small.apply_ms.max(1) as f64
            );
        }
        let _ = writeln!(
            md,
            "![catch-up time against database size](bench-catchup.png)\n"
        );

        let _ = writeln!(
            md,
            "## 3. Master write throughput: backups every 1 s vs off\n"
        );
        let _ = writeln!(
            md,
            "redis-benchmark, 50 clients, random keys (-r 100000), 100-byte values; {}.\n",
            if self.quick {
                "one run each"
            } else {
                "the median of three runs each"
            }
        );
        throughput_table(&mut md, &self.writes, "backups on / off (target ≥ 0.9)");
        let _ = writeln!(md, "## 4. Follower read throughput vs redis-server\n");
        let _ = writeln!(md, "redis-benchmark GET, the same 100,000 keys in both; redis-server started by the benchmark on another loopback port.\n");
        throughput_table(
            &mut md,
            &self.reads,
            "rkv-follower / redis-server (target ≥ 0.7)",
        );

        if let Some(large) = self.catchup.last() {
            let _ = writeln!(
                md,
                "## 5. New-follower bootstrap: full restore vs `cp -r`\n"
            );
            let _ = writeln!(
                md,
                "| DB MiB | full restore ms | cp -r of the backup dir ms | restore / cp |"
            );
            let _ = writeln!(md, "| ---: | ---: | ---: | ---: |");
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.2} |\n",
                large.db_mib,
                large.full_restore_ms,
                large.cp_ms,
                large.full_restore_ms / large.cp_ms
            );
            let _ = writeln!(md, "The restore reads and checksums every file it copies (crc32c against the backup's meta file); `cp -r` copies all backups' files without checking any.\n");
        }
        self.plots(out);
        md
    }

    /// Writes the data files and renders the PNGs with gnuplot.
    fn plots(&self, out: &Path) {
        let mut lag_data = String::new();
        for l in &self.lag {
            let _ = writeln!(
                lag_data,
                "# interval {}",
                humantime::format_duration(l.interval)
            );
            let n = l.lags_ms.len();
            for (i, ms) in l.lags_ms.iter().enumerate() {
                let _ = writeln!(lag_data, "{ms:.1} {:.4}", (i + 1) as f64 / n as f64);
            }
            lag_data.push_str("\n\n");
        }
        let lag_plots: Vec<String> = self
            .lag
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "'{}' index {i} using 1:2 with lines lw 2 title '--interval {}'",
                    "bench-lag.dat",
                    humantime::format_duration(l.interval)
                )
            })
            .collect();
        let lag_script = format!(
            "set terminal pngcairo size 900,540\nset output 'bench-lag-cdf.png'\nset title 'rkv: write-to-readable lag on followers (CDF)'\nset xlabel 'lag (ms)'\nset ylabel 'fraction of writes'\nset grid\nset key bottom right\nplot {}\n",
            lag_plots.join(", ")
        );
        let mut catchup_data = String::new();
        for c in &self.catchup {
            let _ = writeln!(
                catchup_data,
                "{} {} {:.1}",
                c.db_mib,
                c.apply_ms.max(1),
                c.full_restore_ms.max(1.0)
            );
        }
        let catchup_script = "set terminal pngcairo size 900,540\nset output 'bench-catchup.png'\nset title 'rkv: catching up on a 1 MiB change'\nset xlabel 'database size (MiB)'\nset ylabel 'time (ms)'\nset logscale xy\nset grid\nset key top left\nplot 'bench-catchup.dat' using 1:2 with linespoints lw 2 title 'rkv incremental apply', 'bench-catchup.dat' using 1:3 with linespoints lw 2 title 'full restore'\n";
        let write =
            |name: &str, text: &str| std::fs::write(out.join(name), text).expect("write plot data");
        write("bench-lag.dat", &lag_data);
        write("bench-lag.gp", &lag_script);
        write("bench-catchup.dat", &catchup_data);
        write("bench-catchup.gp", catchup_script);
        let scripts = [
            ("bench-lag.gp", self.lag.is_empty()),
            ("bench-catchup.gp", self.catchup.is_empty()),
        ];
        for script in scripts.iter().filter(|(_, empty)| !empty).map(|(s, _)| *s) {
            let status = std::process::Command::new("gnuplot")
                .arg(script)
                .current_dir(out)
                .status();
            match status {
                Ok(s) if s.success() => {}
                other => panic!("gnuplot {script} failed ({other:?}); install gnuplot-nox"),
            }
        }
    }
}

fn throughput_table(md: &mut String, rows: &[ThroughputResult], ratio: &str) {
    let _ = writeln!(md, "| test | clients | pipeline | rkv req/s | baseline | baseline req/s | {ratio} | rkv RSS MiB |");
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {:.0} | **{:.2}** | {:.0} |",
            r.label,
            r.clients,
            r.pipeline,
            r.rkv,
            r.baseline_name,
            r.baseline,
            r.rkv / r.baseline,
            r.rkv_rss
        );
    }
    md.push('\n');
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
