//! `rkv-faults`: rkv's fault suite. It starts the real daemons on temp dirs
//! and loopback ports, injects the faults an operator meets (kill -9 of
//! either daemon at random moments, damaged backup files, full disks,
//! retention shorter than a restore, two masters on one directory, a
//! replaced directory, skewed clocks) and hostile clients (a seeded
//! fuzzer, floods, slow and non-reading clients), checks what users rely
//! on, and prints one line of figures per scenario. It writes
//! RELIABILITY.md and a plot into --out. Exits 1 when any scenario lost,
//! served wrong or got stuck. Run it through `scripts/faults.sh`.

mod hostile;
mod hostile_tls;
mod procs;
mod scenarios;
mod store;
mod tail;

use rkv_testkit::{moto, process, tmpfs};

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;

/// Runs rkv's fault scenarios and reports their figures.
#[derive(Debug, Parser)]
#[command(name = "rkv-faults")]
struct Args {
    #[command(flatten)]
    run: rkv_harness::RunArgs,
    /// Seed of the random kill moments, so a failing run can be repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run only these scenarios.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(scenarios::NAMES))]
    only: Vec<String>,
}

/// One scenario's result: its line, and whether it lost, served wrong or
/// got stuck.
pub struct Outcome {
    pub name: &'static str,
    pub line: String,
    pub ok: bool,
    /// Recovery times in ms, for the plot.
    pub recoveries_ms: Vec<f64>,
}

/// How many tries each scenario makes.
pub struct Plan {
    pub master_kills: usize,
    pub follower_kills: usize,
    pub swaps: usize,
    pub corruptions: usize,
    pub idle: Duration,
    pub fuzz_requests: usize,
    pub connections: usize,
    /// How long each object store fault lasts.
    pub store_fault: Duration,
}

pub fn log(message: &str) {
    eprintln!(
        "{} rkv-faults: {message}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
}

/// A small deterministic random source (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration uniformly in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next_u64() % span)
    }
}

fn main() {
    let args = Args::parse();
    let plan = if args.run.quick {
        Plan {
            master_kills: 5,
            follower_kills: 5,
            swaps: 20,
            corruptions: 4,
            idle: Duration::from_secs(10),
            fuzz_requests: 20_000,
            connections: 1_000,
            store_fault: Duration::from_secs(15),
        }
    } else {
        Plan {
            master_kills: 100,
            follower_kills: 100,
            swaps: 100,
            corruptions: 20,
            idle: Duration::from_secs(60),
            fuzz_requests: 200_000,
            connections: 5_000,
            store_fault: Duration::from_secs(30),
        }
    };
    std::fs::create_dir_all(&args.run.out).expect("create --out");
    let work =
        args.run.work.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("rkv-faults-{}", std::process::id()))
        });
    let started = Instant::now();
    let mut rng = Rng::new(args.seed);
    let mut outcomes = Vec::new();
    for &name in scenarios::NAMES {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        log(&format!("scenario {name}"));
        let mut outcome = scenarios::run(name, &dir, &plan, &mut rng);
        // A daemon that crashed or stalled fails the scenario, whatever
        // else held.
        let incidents = procs::take_incidents();
        if !incidents.is_empty() {
            for incident in &incidents {
                log(&format!("{name}: {incident}"));
            }
            outcome.ok = false;
            outcome.line = format!(
                "{}; daemons that crashed or stalled: {}",
                outcome.line,
                incidents.len()
            );
        }
        println!("{}", outcome.line);
        if !outcome.ok {
            log(&format!("FAILED: {name}; logs in {}", dir.display()));
        }
        outcomes.push(outcome);
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    write_report(&args, &plan, &outcomes, started.elapsed());
    println!(
        "faults: {} passed, {failed} failed",
        outcomes.len() - failed
    );
    if failed > 0 {
        // The evidence stays: daemon logs and directories.
        log(&format!("scratch directories kept in {}", work.display()));
        std::process::exit(1);
    }
    if args.run.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib >> 20);
    format!("{cpu}, {cores} cores, {mem} GiB")
}

fn write_report(args: &Args, plan: &Plan, outcomes: &[Outcome], took: Duration) {
    let mut md = String::new();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let _ = writeln!(md, "# rkv under faults\n");
    let _ = writeln!(
        md,
        "Measured by `scripts/faults.sh{}` on {} ({}), in {}, seed {}. Each scenario \
         starts the real daemons on loopback and temp dirs and injects its fault; a line \
         counts what a user would see go wrong. Every count of lost, wrong or stuck must be \
         zero: the suite fails otherwise, and its quick mode runs in the test command.\n",
        if args.run.quick { " --quick" } else { "" },
        &date[..10],
        machine(),
        humantime::format_duration(Duration::from_secs(took.as_secs())),
        args.seed
    );
    let _ = writeln!(md, "```");
    for o in outcomes {
        let _ = writeln!(md, "{}", o.line);
    }
    let _ = writeln!(md, "```\n");
    let _ = writeln!(
        md,
        "Tries: {} master kills, {} follower kills, {} swaps under reads, {} corruptions \
         (shared SST flipped and truncated, private file flipped, meta truncated, in turn), \
         an idle follower watched for {}; then hostile clients: {} fuzzed requests (valid \
         commands, then one mutated: flipped, cut or inserted bytes, huge declared lengths, \
         10,000-deep nesting, random bytes), {} connections at once, unauthenticated floods, \
         slow senders, clients that never read, a 100,000-command pipeline and a \
         million-argument request; and over TLS (`tls-hostile`): as many TLS sessions open at \
         once, 250 clients silent or stopped mid-handshake (cut off at the 10 s handshake \
         deadline), broken handshakes and records (random bytes, a flipped ClientHello, plain \
         RESP, garbage records after a handshake), a tenth as many fuzzed requests inside TLS \
         sessions, clients that never read, and 100,000 commands pipelined 1,000 deep. Peak memory of a daemon under hostile clients must stay \
         under {:.0} MiB.\n\n\
         The object store scenarios (`store-*`, with moto's S3 server) put a fault proxy \
         (`scripts/lib/s3-proxy.py`) between each daemon and the store, under a steady writer \
         (about 200 writes/s, one backup a second) and a reader of the follower that checks \
         every state it serves is whole and never goes back: replies lost after the store \
         applied a conditional write of `latest`, then every request answered 503 SlowDown \
         for {}, then every request hung for as long, then 500 ms added to every request, \
         then the master cut off while its follower is promoted. The master's \
         `--lease-term` is the default 10 s, so past it writes are refused, as promised. \
         With the object store, the master ships the write log every second (its default \
         there) and the follower applies it between backups.\n\n\
         The live tail's scenarios (`log-*`) run the master shipping its write log every \
         10 ms under a steady writer (each write one batch: `w:N` and `last = N`) and a \
         follower woken by each segment, with a reader of the follower checking every state \
         it serves (`last = N` comes with `w:N`, and never goes below what was read before): \
         the master killed at random moments while it ships, the follower killed while it \
         applies (each restart must serve at once, never less than before), a segment ahead \
         of a stopped follower flipped, cut in half or removed (the follower must say so, \
         apply nothing of it, and go on from the next backup), and the shipper stalled (its \
         directory made a file) until neither the batches it keeps in memory (40 MiB \
         written past its 32 MiB) nor the write-ahead log (`--keep-log 1s`, backups each \
         second) hold what it needs: the log must jump and a backup bridge it. At the end each \
         follower must hold every acknowledged write.\n\n\
         Every scenario also watches each daemon it starts: an exit it did not ask for (a \
         crash, a panic, a signal) or a stall (alive, and no reply to `PING` within 5 s) \
         fails the scenario and is logged with the end of the daemon's log.\n",
        plan.master_kills,
        plan.follower_kills,
        plan.swaps,
        plan.corruptions,
        humantime::format_duration(plan.idle),
        plan.fuzz_requests,
        plan.connections,
        hostile::RSS_BOUND_MIB,
        humantime::format_duration(plan.store_fault)
    );
    let _ = writeln!(
        md,
        "![recovery time of each try](reliability-recovery.png)\n\n\
         The plot, one point a try: how long each daemon took, after a kill -9 and a \
         restart, to answer its first read (the follower serves its current generation at \
         once; the master replays its write-ahead log), and how long a follower took to \
         serve the data of a backup whose file was damaged (the master finds the damage, \
         copies the file again in a new backup, and the follower applies that).\n"
    );
    std::fs::write(args.run.out.join("RELIABILITY.md"), md).expect("write RELIABILITY.md");
    plot(&args.run.out, outcomes);
}

/// Plots the recovery times of the kill scenarios with gnuplot, if it is
/// installed.
fn plot(out: &Path, outcomes: &[Outcome]) {
    let mut data = String::new();
    // One block per scenario, two blank lines apart: gnuplot's `index`.
    for o in outcomes.iter().filter(|o| !o.recoveries_ms.is_empty()) {
        let _ = writeln!(data, "# {}", o.name);
        for (i, ms) in o.recoveries_ms.iter().enumerate() {
            let _ = writeln!(data, "{i} {ms:.1}");
        }
        data.push_str("\n\n");
    }
    let dat = out.join("reliability-recovery.dat");
    std::fs::write(&dat, &data).unwrap();
    let names: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.recoveries_ms.is_empty())
        .map(|o| o.name)
        .collect();
    let label = |name: &'static str| match name {
        "master-kill" => "master: kill -9, restart, first read answered",
        "follower-kill" => "follower: kill -9, restart, first read answered",
        "corruption" => "damaged backup: the follower serves its data",
        other => other,
    };
    let plots: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "'{}' index {i} using 1:2 with points pt 7 ps 0.6 title '{}'",
                dat.display(),
                label(n)
            )
        })
        .collect();
    if plots.is_empty() {
        return;
    }
    let script = format!(
        "set terminal pngcairo size 900,500\nset output '{}'\nset xlabel 'try'\n\
         set ylabel 'ms'\nset logscale y\nset grid\nset key outside bottom center\n\
         plot {}\n",
        out.join("reliability-recovery.png").display(),
        plots.join(", ")
    );
    let plotted = std::process::Command::new("gnuplot")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(script.as_bytes())?;
            child.wait()
        });
    if !plotted.is_ok_and(|s| s.success()) {
        log("gnuplot failed or is missing: no plot");
    }
}
