//! The live tail's fault scenarios: kill -9 of the master while it ships
//! and of a follower while it applies, damaged and removed segments, and a
//! shipper stalled past what the master keeps of its write-ahead log. A
//! reader of the follower runs through each, checking that every state it
//! serves holds whole write batches and never goes back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rkv::backup::{BackupDir, BackupSource};
use rkv::resp::Reply;
use rkv::server::ListenAddr;
use rkv::tail::store::{segment_object, LogSource};

use crate::procs::Proc;
use crate::scenarios::{missing, outcome, Writer};
use crate::{Outcome, Rng};
use rkv_testkit::wait::time_until as wait_for;

/// A follower of the log: woken by each segment, backups rare.
const FOLLOWER: &[&str] = &["--poll-interval", "1s"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The writer's `last`, as the daemon serves it.
fn last(client: &mut rkv::client::Client) -> Option<u64> {
    match client.call_raw(&[b"GET", b"last"]).ok()? {
        Reply::Bulk(Some(v)) => String::from_utf8(v).ok()?.parse().ok(),
        Reply::Bulk(None) => Some(0),
        _ => None,
    }
}

/// Reads the follower at `addr` until stopped (or the follower goes away),
/// checking each state it serves: `last = n` comes with `w:n` (one batch
/// wrote both: a state without it holds part of a batch), and `n` never
/// goes below what was read before (from `floor` on).
struct Reader {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, u64, u64)>,
}

impl Reader {
    fn start(addr: ListenAddr, floor: u64) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut reads, mut bad, mut high) = (0, 0, floor);
                let Ok(mut c) = rkv::client::Client::connect(&addr, None) else {
                    return (reads, bad, high);
                };
                while !stop.load(Ordering::Relaxed) {
                    let Some(n) = last(&mut c) else {
                        break;
                    };
                    reads += 1;
                    let key = format!("w:{n}");
                    let whole = n == 0
                        || matches!(
                            c.call_raw(&[b"GET", key.as_bytes()]),
                            Ok(Reply::Bulk(Some(_))) | Err(_)
                        );
                    if !whole || n < high {
                        bad += 1;
                    }
                    high = high.max(n);
                }
                (reads, bad, high)
            })
        };
        Reader { stop, handle }
    }

    /// Reads made, bad states seen, and the highest `last` read.
    fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 1, 0))
    }
}

/// The master of these scenarios: the log every 10 ms, backups every
/// `interval`.
fn master(dir: &Path, interval: &str, extra: &[&str]) -> Proc {
    let mut flags = vec!["--interval", interval, "--log-interval", "10ms"];
    flags.extend_from_slice(extra);
    Proc::master(&dir.join("db"), &dir.join("backups"), &flags, &[])
}

/// A master of [`master`]'s flags under a [`Writer`] pausing `pause`
/// between writes, a first backup, and a follower of it that has applied
/// the backup and the log after it.
fn started(dir: &Path, interval: &str, extra: &[&str], pause: Duration) -> (Proc, Writer, Proc) {
    let m = master(dir, interval, extra);
    let writer = Writer::start(&m, 0, pause);
    wait_for(Duration::from_secs(30), || {
        m.info_num("rkv_log_segments") > 0
    });
    m.client()
        .and_then(|mut c| c.call_raw(&[b"SAVE"]).ok())
        .expect("the first backup");
    let follower = Proc::follower(&dir.join("backups"), &dir.join("f1"), FOLLOWER);
    wait_for(Duration::from_secs(60), || {
        follower.info_num("rkv_log_batches_applied") > 0
    });
    (m, writer, follower)
}

/// Waits until the follower serves `last >= n`; how long it took.
fn caught_up(follower: &Proc, n: u64, limit: Duration) -> Option<Duration> {
    wait_for(limit, || {
        follower
            .client()
            .and_then(|mut c| last(&mut c))
            .is_some_and(|l| l + 1 >= n)
    })
}

pub fn master_kill(dir: &Path, tries: usize, rng: &mut Rng) -> Outcome {
    let (mut m, writer, follower) = started(dir, "10s", &[], Duration::from_micros(200));
    let reader = Reader::start(follower.addr.clone(), 0);
    let mut writer = Some(writer);
    let (mut acked, mut checked_from, mut lost, mut ahead) = (0, 0, 0, 0);
    let mut recoveries = Vec::new();
    for _ in 0..tries {
        std::thread::sleep(rng.between(Duration::from_millis(30), Duration::from_millis(300)));
        // The shipper runs every 10 ms, under a steady writer: a kill
        // lands in a shipment or between two.
        std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(10)));
        m.kill();
        if let Some(w) = writer.take() {
            acked = w.finish();
        }
        let started = Instant::now();
        m = master(dir, "10s", &[]);
        recoveries.push(ms(started.elapsed()));
        // Nothing acknowledged is lost, and no follower holds a write the
        // recovered master lacks.
        lost += missing(&m, checked_from, acked);
        checked_from = acked;
        let master_last = m.client().and_then(|mut c| last(&mut c)).unwrap_or(0);
        let follower_last = follower
            .client()
            .and_then(|mut c| last(&mut c))
            .unwrap_or(0);
        if follower_last > master_last {
            ahead += 1;
        }
        writer = Some(Writer::start(&m, acked, Duration::from_micros(200)));
    }
    if let Some(w) = writer.take() {
        acked = w.finish();
    }
    lost += missing(&m, checked_from, acked);
    let converged = caught_up(&follower, acked, Duration::from_secs(120));
    let (reads, bad, _) = reader.finish();
    let lacking = missing(&follower, 0, acked);
    let fallbacks = follower.info_num("rkv_log_fallbacks");
    let line = format!(
        "log, master kill -9 while it ships: {tries} kills, {lost} of {acked} acknowledged \
         writes lost, {ahead} times a follower ahead of the recovered master; the follower \
         read {reads} times: {bad} partial or backwards states; caught up {} after the last \
         kill, lacking {lacking}, {fallbacks} fallbacks to a backup",
        converged.map_or("NEVER".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    crate::Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "log-master-kill",
            lost == 0 && ahead == 0 && bad == 0 && lacking == 0 && converged.is_some(),
            line,
        )
    }
}

pub fn follower_kill(dir: &Path, tries: usize, rng: &mut Rng) -> Outcome {
    let backups = dir.join("backups");
    // The master stays up throughout, under the writer.
    let (_master, writer, mut follower) = started(dir, "30s", &[], Duration::from_micros(200));
    let data = dir.join("f1");
    let (mut not_at_once, mut bad, mut reads, mut seen) = (0, 0, 0, 0);
    let mut recoveries = Vec::new();
    let mut fallbacks = 0;
    for _ in 0..tries {
        let reader = Reader::start(follower.addr.clone(), seen);
        std::thread::sleep(rng.between(Duration::from_millis(20), Duration::from_millis(200)));
        fallbacks += follower.info_num("rkv_log_fallbacks").max(0);
        follower.kill();
        let (r, b, high) = reader.finish();
        (reads, bad, seen) = (reads + r, bad + b, seen.max(high));
        let started = Instant::now();
        follower = Proc::follower(&backups, &data, FOLLOWER);
        // It answers from what it had applied, at once: never less.
        match follower.client().and_then(|mut c| last(&mut c)) {
            Some(n) => {
                recoveries.push(ms(started.elapsed()));
                if n < seen {
                    bad += 1;
                }
            }
            None => not_at_once += 1,
        }
    }
    let acked = writer.finish();
    let converged = caught_up(&follower, acked, Duration::from_secs(120));
    fallbacks += follower.info_num("rkv_log_fallbacks").max(0);
    let lacking = missing(&follower, 0, acked);
    let line = format!(
        "log, follower kill -9 while it applies: {tries} kills under {acked} writes, \
         {not_at_once} not serving at once, {bad} partial or backwards states in {reads} reads \
         and restarts, {fallbacks} fallbacks to a backup (resumed from the log otherwise); \
         caught up: {}, lacking {lacking}",
        converged.map_or("NEVER".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    crate::Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "log-follower-kill",
            not_at_once == 0 && bad == 0 && lacking == 0 && converged.is_some(),
            line,
        )
    }
}

/// How a segment is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip,
    Cut,
    Remove,
}

impl Damage {
    fn apply(self, path: &Path) {
        match self {
            Damage::Flip => {
                let mut bytes = std::fs::read(path).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x40;
                std::fs::write(path, bytes).unwrap();
            }
            Damage::Cut => {
                let bytes = std::fs::read(path).unwrap();
                std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
            }
            Damage::Remove => std::fs::remove_file(path).unwrap(),
        }
    }
}

/// The first segment past both `seq` and the newest backup's sequence
/// number that has another segment after it.
fn segment_past(backups: &Path, seq: u64) -> Option<(u64, PathBuf)> {
    let store = BackupDir::new(backups);
    let backed_up = store
        .list()
        .ok()?
        .last()
        .and_then(|b| b.metadata.as_ref().map(|m| m.seq))
        .unwrap_or(0);
    let firsts = store.segments().ok()?;
    let past = seq.max(backed_up) + 1;
    let i = firsts.iter().position(|&f| f > past)?;
    (i + 1 < firsts.len()).then(|| (firsts[i], backups.join(segment_object(firsts[i]))))
}

pub fn damage(dir: &Path, rounds: usize) -> Outcome {
    let backups = dir.join("backups");
    // Backups on request only, so that none passes a damaged segment
    // before the follower meets it: the scenario asks for the backup the
    // interval would bring, once the follower has said what it met.
    let (m, writer, mut follower) = started(dir, "0", &[], Duration::from_millis(1));
    let save = |command: &[u8]| {
        m.client()
            .and_then(|mut c| c.call_raw(&[command]).ok())
            .expect("a backup")
    };
    let data = dir.join("f1");
    let (mut unreported, mut stuck, mut bad, mut reads) = (0, 0, 0, 0);
    let mut recoveries = Vec::new();
    let mut seen = 0;
    let mut fallbacks = 0;
    let reported = |f: &Proc| {
        wait_for(Duration::from_secs(60), || {
            f.info("rkv_log_error").is_some_and(|e| !e.is_empty())
                || f.info_num("rkv_log_fallbacks") > 0
        })
        .is_some()
    };
    for _ in 0..rounds {
        for how in [Damage::Flip, Damage::Cut, Damage::Remove] {
            // Stopped, so that the damage lands ahead of where it stands.
            let at = follower.info_num("rkv_applied_seq").max(0) as u64;
            fallbacks += follower.info_num("rkv_log_fallbacks").max(0);
            follower.kill();
            let mut target = None;
            wait_for(Duration::from_secs(30), || {
                target = segment_past(&backups, at + 100);
                target.is_some()
            });
            if let Some((_, path)) = &target {
                how.apply(path);
            }
            follower = Proc::follower(&backups, &data, FOLLOWER);
            let Some((first, _)) = target else {
                stuck += 1;
                continue;
            };
            let reader = Reader::start(follower.addr.clone(), seen);
            let started = Instant::now();
            // A damaged segment is said at once. A missing one, only once
            // a newer backup waits (until then the follower cannot tell
            // it from one not shipped yet, and waits): it is taken once the
            // follower stands just before the gap.
            if matches!(how, Damage::Remove) {
                wait_for(Duration::from_secs(60), || {
                    follower.info_num("rkv_applied_seq") == first as i64 - 1
                });
                save(b"BGSAVE");
            }
            if !reported(&follower) {
                unreported += 1;
            }
            save(b"BGSAVE");
            let now = m.client().and_then(|mut c| last(&mut c)).unwrap_or(0);
            match caught_up(&follower, now, Duration::from_secs(120)) {
                Some(_) => recoveries.push(ms(started.elapsed())),
                None => stuck += 1,
            }
            let (r, b, high) = reader.finish();
            (reads, bad, seen) = (reads + r, bad + b, seen.max(high));
        }
    }
    let acked = writer.finish();
    let converged = caught_up(&follower, acked, Duration::from_secs(120)).is_some();
    // A damaged segment applied, or a batch skipped, leaves keys missing.
    let lacking = missing(&follower, 0, acked);
    fallbacks += follower.info_num("rkv_log_fallbacks").max(0);
    let line = format!(
        "log, damaged segments (flipped byte, cut in half, removed; {rounds} of each) ahead \
         of a follower: {lacking} writes lacking, {bad} partial or backwards states in {reads} \
         reads, {unreported} unreported, {stuck} stuck; recovered through {fallbacks} \
         restores of the next backup; caught up at the end: {}",
        if converged { "yes" } else { "NO" }
    );
    crate::Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "log-damage",
            lacking == 0 && bad == 0 && unreported == 0 && stuck == 0 && converged,
            line,
        )
    }
}

pub fn stalled_shipper(dir: &Path) -> Outcome {
    let backups = dir.join("backups");
    // Backups every second flush the write-ahead log; kept for a second.
    let (m, writer, follower) = started(dir, "1s", &["--keep-log", "1s"], Duration::from_millis(1));
    let reader = Reader::start(follower.addr.clone(), 0);
    // The shipper stalls: its directory is a file.
    let log = backups.join("log");
    let away = backups.join("log.away");
    std::fs::rename(&log, &away).unwrap();
    std::fs::write(&log, b"").unwrap();
    let failing = wait_for(Duration::from_secs(30), || {
        m.info("rkv_log_error").is_some_and(|e| !e.is_empty())
    })
    .is_some();
    // Past what the shipper keeps of the batches written (32 MiB): only
    // the write-ahead log could supply the next one then.
    let bulk = vec![b'x'; 64 << 10];
    if let Some(mut c) = m.client() {
        for i in 0..640 {
            let key = format!("bulk:{i:04}");
            let _ = c.call_raw(&[b"SET", key.as_bytes(), &bulk]);
        }
    }
    // And past what the master keeps of its write-ahead log, with backups
    // flushing it meanwhile.
    let backups_then = m.info_num("rkv_backups_done");
    wait_for(Duration::from_secs(60), || {
        m.info_num("rkv_backups_done") >= backups_then + 4
    });
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&away, &log).unwrap();
    let jumped = wait_for(Duration::from_secs(60), || m.info_num("rkv_log_jumps") > 0).is_some();
    let now = m.client().and_then(|mut c| last(&mut c)).unwrap_or(0);
    let recovered = caught_up(&follower, now, Duration::from_secs(120));
    let acked = writer.finish();
    let converged = caught_up(&follower, acked, Duration::from_secs(120)).is_some();
    let (reads, bad, _) = reader.finish();
    let lacking = missing(&follower, 0, acked);
    let lost = missing(&m, 0, acked);
    let line = format!(
        "log, shipper stalled past --keep-log (1 s) and 40 MiB of writes under writes: \
         reported by the master: {}, \
         the log jumped: {}, the follower caught up {} after the store came back; {lost} of \
         {acked} acknowledged writes lost, the follower lacking {lacking}; {bad} partial or \
         backwards states in {reads} reads",
        if failing { "yes" } else { "NO" },
        if jumped { "yes" } else { "NO" },
        recovered.map_or("NEVER".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    outcome(
        "log-stalled-shipper",
        failing
            && jumped
            && recovered.is_some()
            && converged
            && lacking == 0
            && lost == 0
            && bad == 0,
        line,
    )
}
