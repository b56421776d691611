//! The fault scenarios. Each takes a scratch directory, injects its fault
//! with the real daemons, and returns a line of figures; a scenario is ok
//! only when nothing acknowledged was lost, nothing wrong was served and
//! nothing stayed stuck.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rkv::backup::{BackupDir, BackupSource};
use rkv::resp::Reply;

use crate::procs::Proc;
use crate::tmpfs::Tmpfs;
use crate::{log, Outcome, Plan, Rng};
use rkv_testkit::flags::{partials, REFUSE_AFTER_3S, SLOW_RESTORE};
use rkv_testkit::wait::time_until as wait_for;

/// Every scenario, in the order they run.
pub const NAMES: &[&str] = &[
    "master-kill",
    "follower-kill",
    "swaps",
    "corruption",
    "backup-disk-full",
    "db-disk-full",
    "short-retention",
    "two-masters",
    "replaced-dir",
    "clock-skew",
    "idle-follower",
    "store-lost-reply",
    "store-slow-down",
    "store-hung",
    "store-latency",
    "store-partition",
    "log-master-kill",
    "log-follower-kill",
    "log-damage",
    "log-stalled-shipper",
    "fuzz",
    "floods",
    "big-request",
    "tls-hostile",
];

pub fn run(name: &str, dir: &Path, plan: &Plan, rng: &mut Rng) -> Outcome {
    match name {
        "master-kill" => master_kill(dir, plan.master_kills, rng),
        "follower-kill" => follower_kill(dir, plan.follower_kills, rng),
        "swaps" => swaps(dir, plan.swaps),
        "corruption" => corruption(dir, plan.corruptions),
        "backup-disk-full" => disk_full(dir, false),
        "db-disk-full" => disk_full(dir, true),
        "short-retention" => short_retention(dir),
        "two-masters" => two_masters(dir),
        "replaced-dir" => replaced_dir(dir),
        "clock-skew" => clock_skew(dir),
        "idle-follower" => idle_follower(dir, plan.idle),
        "store-lost-reply" => crate::store::lost_replies(dir),
        "store-slow-down" => {
            crate::store::bad_store(dir, "store-slow-down", "--slow-down", plan.store_fault)
        }
        "store-hung" => crate::store::bad_store(dir, "store-hung", "--hang", plan.store_fault),
        "store-latency" => crate::store::latency(dir),
        "store-partition" => crate::store::partition(dir),
        "log-master-kill" => crate::tail::master_kill(dir, plan.master_kills, rng),
        "log-follower-kill" => crate::tail::follower_kill(dir, plan.follower_kills, rng),
        "log-damage" => crate::tail::damage(dir, plan.corruptions.div_ceil(4)),
        "log-stalled-shipper" => crate::tail::stalled_shipper(dir),
        "fuzz" => crate::hostile::fuzz(dir, plan.fuzz_requests, rng),
        "floods" => crate::hostile::floods(dir, plan.connections),
        "big-request" => crate::hostile::big_request(dir, 1_000_000),
        "tls-hostile" => {
            crate::hostile_tls::run(dir, plan.connections, plan.fuzz_requests / 10, rng)
        }
        _ => unreachable!("unknown scenario {name}"),
    }
}

/// A scenario's outcome without recovery times.
pub fn outcome(name: &'static str, ok: bool, line: String) -> Outcome {
    Outcome {
        name,
        line,
        ok,
        recoveries_ms: Vec::new(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A writer that SETs `w:<n>` for n = 0, 1, 2… (with `last` = n in the same
/// MSET, so any state holding `last = n` holds every key up to n) and
/// counts what was acknowledged. Stops at the first error or at `stop`.
pub struct Writer {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(master: &Proc, from: u64, pause: Duration) -> Writer {
        Writer::start_sized(master, from, pause, 0)
    }

    /// A writer whose values are `size` incompressible bytes (0: the
    /// number itself).
    fn start_sized(master: &Proc, from: u64, pause: Duration, size: usize) -> Writer {
        let acked = Arc::new(AtomicU64::new(from));
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = master.client().expect("connect the writer");
        let handle = {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = from;
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ from;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w:{n}");
                    let last = n.to_string();
                    let value: Vec<u8> = match size {
                        0 => last.clone().into_bytes(),
                        size => (0..size)
                            .map(|_| {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                x as u8
                            })
                            .collect(),
                    };
                    let args: [&[u8]; 5] =
                        [b"MSET", key.as_bytes(), &value, b"last", last.as_bytes()];
                    match client.call_raw(&args) {
                        Ok(Reply::Simple(_)) => {
                            n += 1;
                            acked.store(n, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })
        };
        Writer {
            acked,
            stop,
            handle: Some(handle),
        }
    }

    /// Stops it; the count of acknowledged writes (keys `w:0..count`).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked.load(Ordering::SeqCst)
    }
}

/// How many of the keys `w:from..to` the daemon lacks.
pub fn missing(proc: &Proc, from: u64, to: u64) -> u64 {
    let Some(mut client) = proc.client() else {
        return to - from;
    };
    let mut lacking = 0;
    let mut start = from;
    while start < to {
        let end = (start + 1000).min(to);
        let keys: Vec<String> = (start..end).map(|n| format!("w:{n}")).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        match client.call_raw(&args) {
            Ok(Reply::Array(Some(values))) => {
                lacking += values
                    .iter()
                    .filter(|v| !matches!(v, Reply::Bulk(Some(_))))
                    .count() as u64
            }
            _ => lacking += end - start,
        }
        start = end;
    }
    lacking
}

/// Whether `dir` holds an entry whose name `matches` (a backup or apply in
/// progress leaves one).
fn holds(dir: &Path, matches: impl Fn(&str) -> bool) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| matches(&e.file_name().to_string_lossy()))
    })
}

/// Waits (polling every millisecond, at most `limit`) for `check`, then a
/// random 0–`jitter`: a kill lands inside the step `check` detects.
fn aim(rng: &mut Rng, limit: Duration, jitter: Duration, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(rng.between(Duration::ZERO, jitter));
}

fn master_kill(dir: &Path, tries: usize, rng: &mut Rng) -> Outcome {
    let (db, backups) = (dir.join("db"), dir.join("backups"));
    let flags = ["--interval", "200ms", "--keep", "5", "--keep-within", "10s"];
    let (mut unopenable, mut failed_verifies, mut lost, mut acked) = (0, 0, 0u64, 0u64);
    let mut mid_backup = 0;
    let backing_up = |probe: &mut rkv::client::Client| {
        probe
            .info_field(None, "rdb_bgsave_in_progress")
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    };
    let mut recoveries = Vec::new();
    let mut checked_from = 0;
    for _ in 0..tries {
        let started = Instant::now();
        let master = Proc::master(&db, &backups, &flags, &[]);
        recoveries.push(ms(started.elapsed()));
        // Every write acknowledged before the last kill is still there.
        lost += missing(&master, checked_from, acked);
        checked_from = acked;
        let writer = Writer::start(&master, acked, Duration::ZERO);
        std::thread::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(600)));
        // Most kills aimed inside a backup (a flush and a copy: tens of
        // milliseconds), some anywhere.
        let mut probe = master.client().expect("connect");
        if !rng.next_u64().is_multiple_of(4) {
            let started = Instant::now();
            while !backing_up(&mut probe) && started.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(8)));
        }
        if backing_up(&mut probe) {
            mid_backup += 1;
        }
        master.kill();
        acked = writer.finish();
        let store = BackupDir::new(&backups);
        match store.list() {
            Ok(list) => {
                if let Some(newest) = list.last() {
                    if store.verify(newest.id, &Default::default()).is_err() {
                        failed_verifies += 1;
                    }
                }
            }
            Err(_) => unopenable += 1,
        }
    }
    let master = Proc::master(&db, &backups, &flags, &[]);
    lost += missing(&master, checked_from, acked);
    let line = format!(
        "master kill -9: {tries} tries ({mid_backup} inside a backup), {unopenable} \
         unopenable, {failed_verifies} failed verifies, {lost} of {acked} acknowledged writes \
         lost"
    );
    Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "master-kill",
            unopenable == 0 && failed_verifies == 0 && lost == 0,
            line,
        )
    }
}

/// What a follower serves is a prefix of the writer's sequence: `last = n`
/// with `w:n` present and `w:n+1` absent. `Some(n)` when it is, `None` when
/// it is not (or a read failed).
fn prefix(follower: &Proc) -> Option<u64> {
    let mut c = follower.client()?;
    let last = match c.call_raw(&[b"GET", b"last"]).ok()? {
        Reply::Bulk(Some(v)) => String::from_utf8(v).ok()?.parse::<u64>().ok()?,
        _ => return None,
    };
    let here = c.call_raw(&[b"GET", format!("w:{last}").as_bytes()]).ok()?;
    let next = c
        .call_raw(&[b"GET", format!("w:{}", last + 1).as_bytes()])
        .ok()?;
    (matches!(here, Reply::Bulk(Some(_))) && next == Reply::Bulk(None)).then_some(last)
}

fn follower_kill(dir: &Path, tries: usize, rng: &mut Rng) -> Outcome {
    let backups = dir.join("backups");
    // Of the backup path (restores, generations): without the log.
    let master = Proc::master(
        &dir.join("db"),
        &backups,
        &["--interval", "200ms", "--log-interval", "0"],
        &[],
    );
    let writer = Writer::start(&master, 0, Duration::from_micros(500));
    let data = dir.join("f1");
    let flags = ["--poll-interval", "100ms"];
    let mut follower = Proc::follower(&backups, &data, &flags);
    wait_for(Duration::from_secs(60), || prefix(&follower).is_some());
    let (mut not_at_once, mut wrong, mut went_back, mut mid_apply) = (0, 0, 0, 0);
    let mut recoveries = Vec::new();
    let mut seen = 0;
    let applying = || holds(&data, |n| n.ends_with(".partial"));
    for _ in 0..tries {
        std::thread::sleep(rng.between(Duration::from_millis(50), Duration::from_millis(400)));
        let before = prefix(&follower);
        // Most kills aimed inside an apply, some anywhere.
        if !rng.next_u64().is_multiple_of(4) {
            aim(
                rng,
                Duration::from_secs(2),
                Duration::from_millis(5),
                applying,
            );
        }
        if applying() {
            mid_apply += 1;
        }
        follower.kill();
        let started = Instant::now();
        follower = Proc::follower(&backups, &data, &flags);
        // It answers as soon as it listens: from its current generation.
        match prefix(&follower) {
            Some(n) => {
                recoveries.push(ms(started.elapsed()));
                if n < before.unwrap_or(0).min(seen) {
                    went_back += 1;
                }
                seen = seen.max(n);
            }
            None => {
                not_at_once += 1;
                if wait_for(Duration::from_secs(30), || prefix(&follower).is_some()).is_none() {
                    wrong += 1;
                }
            }
        }
    }
    let acked = writer.finish();
    // And it catches up with everything.
    let caught_up = wait_for(Duration::from_secs(60), || {
        prefix(&follower).is_some_and(|n| n + 1 >= acked)
    })
    .is_some();
    let line = format!(
        "follower kill -9 during applies: {tries} tries ({mid_apply} inside an apply), \
         {not_at_once} not serving at once, \
         {wrong} partial or wrong states, {went_back} went back, caught up: {}",
        if caught_up { "yes" } else { "NO" }
    );
    Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "follower-kill",
            not_at_once == 0 && wrong == 0 && went_back == 0 && caught_up,
            line,
        )
    }
}

fn swaps(dir: &Path, swaps: usize) -> Outcome {
    let backups = dir.join("backups");
    // Of the backup path (generation swaps): without the log.
    let master = Proc::master(
        &dir.join("db"),
        &backups,
        &["--interval", "100ms", "--log-interval", "0"],
        &[],
    );
    let writer = Writer::start(&master, 0, Duration::from_millis(2));
    let follower = Proc::follower(&backups, &dir.join("f1"), &["--poll-interval", "50ms"]);
    wait_for(Duration::from_secs(60), || prefix(&follower).is_some());
    let applies = |f: &Proc| f.info_num("rkv_applies_done").max(0) as usize;
    let first = applies(&follower);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let addr = follower.addr.clone();
        std::thread::spawn(move || {
            let mut c = rkv::client::Client::connect(&addr, None).unwrap();
            let (mut reads, mut bad, mut high) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                reads += 1;
                let last = match c.call_raw(&[b"GET", b"last"]) {
                    Ok(Reply::Bulk(Some(v))) => String::from_utf8_lossy(&v).parse::<u64>().ok(),
                    _ => None,
                };
                let Some(last) = last else {
                    bad += 1;
                    continue;
                };
                // Monotonic, and the keys it promises are there.
                let key = format!("w:{}", last / 2);
                let ok = last >= high
                    && matches!(
                        c.call_raw(&[b"GET", key.as_bytes()]),
                        Ok(Reply::Bulk(Some(_)))
                    );
                high = high.max(last);
                if !ok {
                    bad += 1;
                }
            }
            (reads, bad)
        })
    };
    let done = wait_for(Duration::from_secs(600), || {
        applies(&follower) >= first + swaps
    })
    .is_some();
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    writer.finish();
    let swapped = applies(&follower) - first;
    let line = format!(
        "follower swaps under reads: {swapped} swaps, {reads} reads, {bad} failed or wrong"
    );
    outcome("swaps", done && bad == 0, line)
}

/// The kinds of damage, in turn.
#[derive(Debug, Clone, Copy)]
enum Damage {
    SharedFlipped,
    SharedTruncated,
    PrivateFlipped,
    MetaTruncated,
}

const DAMAGE: [Damage; 4] = [
    Damage::SharedFlipped,
    Damage::SharedTruncated,
    Damage::PrivateFlipped,
    Damage::MetaTruncated,
];

fn flip(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// Damages one file that backup `id` holds and backup `id - 1` does not.
fn damage(backups: &Path, id: u32, kind: Damage) -> String {
    let store = BackupDir::new(backups);
    let files = |id| -> Vec<String> {
        store
            .read_meta(id)
            .map(|m| m.files.into_iter().map(|f| f.path).collect())
            .unwrap_or_default()
    };
    let before = files(id - 1);
    let new: Vec<String> = files(id)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    let pick = |pred: &dyn Fn(&str) -> bool| {
        new.iter()
            .find(|f| pred(f))
            .cloned()
            .unwrap_or_else(|| panic!("backup {id} has no such new file: {new:?}"))
    };
    let file = match kind {
        Damage::SharedFlipped | Damage::SharedTruncated => {
            pick(&|f| f.starts_with("shared_checksum/") && f.ends_with(".sst"))
        }
        Damage::PrivateFlipped => pick(&|f| f.contains("MANIFEST")),
        Damage::MetaTruncated => format!("meta/{id}"),
    };
    let path = backups.join(&file);
    match kind {
        Damage::SharedFlipped | Damage::PrivateFlipped => flip(&path),
        Damage::SharedTruncated | Damage::MetaTruncated => truncate(&path),
    }
    file
}

fn corruption(dir: &Path, tries: usize) -> Outcome {
    let backups = dir.join("backups");
    let master = Proc::master(
        &dir.join("db"),
        &backups,
        // Damaged backups: without the log, which would bring the
        // follower the writes without them.
        &[
            "--interval",
            "0",
            "--scrub-interval",
            "500ms",
            "--log-interval",
            "0",
        ],
        &[],
    );
    let data = dir.join("f1");
    let flags = ["--poll-interval", "100ms"];
    let mut m = master.client().unwrap();
    m.call(&[b"SET", b"c", b"0"]).unwrap();
    m.call(&[b"SAVE"]).unwrap();
    let mut follower = Some(Proc::follower(&backups, &data, &flags));
    let (mut applied_damaged, mut unreported, mut stuck, mut wrong) = (0, 0, 0, 0);
    let mut recoveries = Vec::new();
    for round in 1..=tries {
        let kind = DAMAGE[(round - 1) % DAMAGE.len()];
        let f = follower.take().unwrap();
        let value = round.to_string();
        let previous = (round - 1).to_string();
        wait_for(Duration::from_secs(60), || {
            f.get("c") == Some(Reply::bulk(previous.as_bytes().to_vec()))
        });
        let failures_before = f.info_num("rkv_apply_failures").max(0) as u64;
        let damage_before = master.info_num("rkv_damaged_files_found");
        // A backup the stopped follower lacks, with new data in a new SST.
        f.stop();
        let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..64 {
            mset.push(format!("r{round}:{i}").into_bytes());
            mset.push(format!("{round}:{i}:{}", "x".repeat(1000)).into_bytes());
        }
        mset.push(b"c".to_vec());
        mset.push(value.clone().into_bytes());
        let refs: Vec<&[u8]> = mset.iter().map(Vec::as_slice).collect();
        m.call(&refs).unwrap();
        m.call(&[b"SAVE"]).unwrap();
        let id = master.info_num("rkv_last_backup_id") as u32;
        let file = damage(&backups, id, kind);
        let f = Proc::follower(&backups, &data, &flags);
        // Until it has the new data, it serves the old, whole; then the new,
        // whole. Anything else is wrong.
        let started = Instant::now();
        let resumed = wait_for(Duration::from_secs(60), || match f.get("c") {
            Some(Reply::Bulk(Some(v))) if v == previous.as_bytes() => false,
            Some(Reply::Bulk(Some(v))) if v == value.as_bytes() => true,
            _ => {
                wrong += 1;
                false
            }
        });
        match resumed {
            Some(_) => {
                recoveries.push(ms(started.elapsed()));
                let mut c = f.client().unwrap();
                for i in [0, 31, 63] {
                    let key = format!("r{round}:{i}");
                    let expected = format!("{round}:{i}:{}", "x".repeat(1000));
                    if c.call_raw(&[b"GET", key.as_bytes()]).ok()
                        != Some(Reply::bulk(expected.into_bytes()))
                    {
                        applied_damaged += 1;
                    }
                }
            }
            None => stuck += 1,
        }
        let reported = master.info_num("rkv_damaged_files_found") > damage_before
            || f.info_num("rkv_apply_failures").max(0) as u64 > failures_before;
        if !reported {
            unreported += 1;
            log(&format!(
                "round {round}: damage to {file} ({kind:?}) went unreported"
            ));
        }
        follower = Some(f);
    }
    let line = format!(
        "corruption of a backup the follower lacks: {tries} tries, {applied_damaged} applied \
         damaged, {wrong} wrong reads, {unreported} unreported, {stuck} stuck"
    );
    Outcome {
        recoveries_ms: recoveries,
        ..outcome(
            "corruption",
            applied_damaged == 0 && wrong == 0 && unreported == 0 && stuck == 0,
            line,
        )
    }
}

fn disk_full(dir: &Path, database: bool) -> Outcome {
    let name = if database {
        "db-disk-full"
    } else {
        "backup-disk-full"
    };
    let what = if database { "database" } else { "backup" };
    // Roomy enough for RocksDB's recovery, which waits for a memtable's
    // worth (64 MiB) of free space.
    let Some(disk) = Tmpfs::mount(&dir.join("disk"), "400m") else {
        return outcome(
            name,
            true,
            format!("full {what} filesystem: skipped (mounting a tmpfs needs root)"),
        );
    };
    let (db, backups) = if database {
        (dir.join("disk/db"), dir.join("backups"))
    } else {
        (dir.join("db"), dir.join("disk/backups"))
    };
    let master = Proc::master(&db, &backups, &["--interval", "200ms"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let filler = disk.fill(2 << 20);
    // Incompressible values: RocksDB preallocates its log, so only real
    // bytes fill a disk.
    let writer = Writer::start_sized(&master, 0, Duration::ZERO, 16 << 10);
    // The fault shows: writes refused (database) or backups failing (backup).
    let showed = wait_for(Duration::from_secs(60), || {
        if database {
            master.info("rkv_db_writable").as_deref() == Some("0")
        } else {
            master.info("rdb_last_bgsave_status").as_deref() == Some("err")
        }
    })
    .is_some();
    let acked_while_full = writer.finish();
    let store = BackupDir::new(&backups);
    let half_listed = !database
        && store
            .list()
            .ok()
            .and_then(|l| {
                l.last()
                    .map(|b| store.verify(b.id, &Default::default()).is_err())
            })
            .unwrap_or(false);
    std::fs::remove_file(&filler).unwrap();
    let recovered = wait_for(Duration::from_secs(60), || {
        let Some(mut c) = master.client() else {
            return false;
        };
        let wrote = matches!(
            c.call_raw(&[b"SET", b"after", b"space"]),
            Ok(Reply::Simple(_))
        );
        wrote
            && matches!(c.call_raw(&[b"SAVE"]), Ok(Reply::Simple(_)))
            && master.info("rkv_db_writable").as_deref() == Some("1")
    });
    let lost = missing(&master, 0, acked_while_full);
    let final_ok = master.stop() == Some(0);
    let line = format!(
        "full {what} filesystem: {acked_while_full} acknowledged writes, {lost} lost, fault \
         reported: {}, {} half-written backups listed, recovered by itself {}, clean stop: {}",
        yes(showed),
        u8::from(half_listed),
        recovered.map_or("NO".to_string(), |d| format!("in {:.1} s", d.as_secs_f64())),
        yes(final_ok)
    );
    outcome(
        name,
        showed && !half_listed && recovered.is_some() && lost == 0 && final_ok,
        line,
    )
}

pub fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn fill(master: &Proc, mib: usize) {
    let mut c = master.client().unwrap();
    // Values that do not compress, so each MiB written is a MiB on disk.
    let mut rng = rkv_testkit::rng::Rng(0x9E37_79B9_7F4A_7C15);
    for batch in 0..mib * 16 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..16 {
            let value = rng.bytes(4096);
            args.push(format!("big:{batch:06}:{i:02}").into_bytes());
            args.push(value);
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.call(&refs).unwrap();
    }
}

fn short_retention(dir: &Path) -> Outcome {
    let backups = dir.join("backups");
    let master = Proc::master(
        &dir.join("db"),
        &backups,
        // Restores racing the purge: without the log, which would spare
        // the follower the restores.
        &[
            "--interval",
            "1s",
            "--keep",
            "1",
            "--keep-within",
            "10s",
            "--log-interval",
            "0",
        ],
        &[],
    );
    fill(&master, 16);
    let data = dir.join("f1");
    let follower = Proc::follower(
        &backups,
        &data,
        // One file at a time: side by side, a backup's small files are
        // copied first and the race is rarer; lost, it must be said.
        &SLOW_RESTORE,
    );
    let writer = Writer::start(&master, 0, Duration::from_millis(100));
    let mut most = 0;
    let said = wait_for(Duration::from_secs(90), || {
        most = most.max(partials(&data));
        follower
            .info("rkv_last_error")
            .is_some_and(|e| e.contains("raise --keep-within"))
    });
    writer.finish();
    let failures = follower.info_num("rkv_apply_failures");
    let line = format!(
        "retention shorter than a restore: {failures} restores lost to the purge, at most \
         {most} partial generation on disk, reason reported: {}",
        said.map_or("NO".to_string(), |d| format!(
            "yes, after {:.0} s",
            d.as_secs_f64()
        ))
    );
    outcome("short-retention", said.is_some() && most <= 1, line)
}

fn two_masters(dir: &Path) -> Outcome {
    let backups = dir.join("backups");
    let a = Proc::master(&dir.join("a"), &backups, &["--interval", "200ms"], &[]);
    let follower = Proc::follower(&backups, &dir.join("f1"), &["--poll-interval", "100ms"]);
    let mut ca = a.client().unwrap();
    ca.call(&[b"SET", b"who", b"a"]).unwrap();
    wait_for(Duration::from_secs(60), || {
        follower.get("who") == Some(Reply::bulk(b"a".to_vec()))
    });
    let start_b = |extra: &[&str]| {
        let mut args = vec![
            "--db".to_string(),
            dir.join("b").display().to_string(),
            "--backup-dir".to_string(),
            backups.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::start("rkv-master", args, &[], &dir.join("b"), dir.join("b.log"))
    };
    // Watch the follower while a second master tries its luck.
    let flips = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (flips, stop, addr) = (Arc::clone(&flips), Arc::clone(&stop), follower.addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut c) = rkv::client::Client::connect(&addr, None) {
                    if c.call_raw(&[b"GET", b"who"]).ok() == Some(Reply::bulk(b"b".to_vec())) {
                        flips.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut refused = 0;
    let tries = 2;
    if start_b(&[]).is_err() {
        refused += 1;
    }
    // As on a filesystem whose locks do not reach across hosts.
    let _ = std::fs::remove_file(backups.join("rkv-master.lock"));
    if start_b(&[]).is_err() {
        refused += 1;
    }
    ca.call(&[b"SET", b"who", b"a"]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    // The promotion: the first master is gone, the second takes over.
    a.kill();
    let without = start_b(&[]).is_err();
    let started = Instant::now();
    let b = start_b(&["--interval", "200ms", "--take-over"]);
    let switched = b.as_ref().ok().and_then(|b| {
        b.client()?.call(&[b"SET", b"who", b"b"]).ok()?;
        wait_for(Duration::from_secs(60), || {
            follower.get("who") == Some(Reply::bulk(b"b".to_vec()))
        })
    });
    let flips = flips.load(Ordering::Relaxed);
    let line = format!(
        "two masters on one directory: {refused} of {tries} second masters refused, {flips} \
         reads of the second's data, take-over refused without --take-over: {}, follower \
         switched after --take-over {}",
        yes(without),
        switched.map_or("NO".to_string(), |_| format!(
            "in {:.1} s",
            started.elapsed().as_secs_f64()
        ))
    );
    outcome(
        "two-masters",
        refused == tries && flips == 0 && without && switched.is_some(),
        line,
    )
}

fn replaced_dir(dir: &Path) -> Outcome {
    let (db, backups) = (dir.join("db"), dir.join("backups"));
    let master = Proc::master(&db, &backups, &["--interval", "0"], &[]);
    let follower = Proc::follower(
        &backups,
        &dir.join("f1"),
        &["--poll-interval", "100ms", "--max-staleness", "30s"],
    );
    let mut c = master.client().unwrap();
    for i in 1..=6 {
        c.call(&[b"SET", b"k", format!("old{i}").as_bytes()])
            .unwrap();
        c.call(&[b"SAVE"]).unwrap();
    }
    wait_for(Duration::from_secs(60), || {
        follower.get("k") == Some(Reply::bulk(b"old6".to_vec()))
    });
    master.stop();
    std::fs::remove_dir_all(&db).unwrap();
    std::fs::remove_dir_all(&backups).unwrap();
    let master = Proc::master(&db, &backups, &["--interval", "0"], &[]);
    let mut c = master.client().unwrap();
    let started = Instant::now();
    let mut wrong_healthy = 0;
    let mut round = 0;
    let switched = wait_for(Duration::from_secs(60), || {
        if round < 10 {
            round += 1;
            let _ = c.call(&[b"SET", b"k", format!("new{round}").as_bytes()]);
            let _ = c.call(&[b"SAVE"]);
        }
        // Healthy, by a follower that polled the replaced directory (a
        // poll read it after `started`), then the old data served: wrong.
        // Until that poll the follower cannot know, however long it takes.
        let since = started.elapsed().as_millis();
        let polled_new = follower
            .info_fields(&["healthy", "rkv_last_poll_ms_ago"])
            .is_some_and(|f| {
                let ago = f[1].as_deref().and_then(|a| a.parse::<u128>().ok());
                f[0].as_deref() == Some("1") && ago.is_some_and(|ago| ago < since)
            });
        let served = follower.get("k");
        let old = matches!(&served, Some(Reply::Bulk(Some(v))) if v.starts_with(b"old"));
        if old && polled_new {
            wrong_healthy += 1;
        }
        matches!(served, Some(Reply::Bulk(Some(v))) if v.starts_with(b"new"))
    });
    let line = format!(
        "replaced backup directory: re-bootstrapped {}, {wrong_healthy} reads of the old \
         data while reporting healthy",
        switched.map_or("NO".to_string(), |d| format!("in {:.1} s", d.as_secs_f64()))
    );
    outcome(
        "replaced-dir",
        switched.is_some() && wrong_healthy == 0,
        line,
    )
}

fn libfaketime() -> Option<&'static str> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

fn clock_skew(dir: &Path) -> Outcome {
    let Some(lib) = libfaketime() else {
        return outcome(
            "clock-skew",
            true,
            "clock skew: skipped (libfaketime missing: apt-get install faketime)".into(),
        );
    };
    let mut parts = Vec::new();
    let mut ok = true;
    for skew in ["+2h", "-2h"] {
        let d = dir.join(
            skew.trim_start_matches(['+', '-']).to_string()
                + if skew.starts_with('+') {
                    "-ahead"
                } else {
                    "-behind"
                },
        );
        std::fs::create_dir_all(&d).unwrap();
        let env = [
            ("LD_PRELOAD", lib),
            ("FAKETIME", skew),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        let backups = d.join("backups");
        let master = Proc::master(&d.join("db"), &backups, &["--interval", "200ms"], &env);
        let follower = Proc::follower(&backups, &d.join("f1"), &REFUSE_AFTER_3S);
        master
            .client()
            .unwrap()
            .call(&[b"SET", b"k", b"v"])
            .unwrap();
        let served = wait_for(Duration::from_secs(60), || {
            follower.get("k") == Some(Reply::bulk(b"v".to_vec()))
        });
        // Past the first heartbeats, fresh data is healthy and fresh by
        // the bound whatever the master's clock says. Waited for, not read
        // once: a busy machine may delay a heartbeat past the bound.
        std::thread::sleep(Duration::from_secs(2));
        let mut staleness = -1;
        let healthy = wait_for(Duration::from_secs(60), || {
            let fields = follower.info_fields(&["healthy", "rkv_staleness_ms"]);
            let Some([healthy, ms]) = fields.as_deref() else {
                return false;
            };
            staleness = ms.as_deref().and_then(|m| m.parse().ok()).unwrap_or(-1);
            healthy.as_deref() == Some("1") && (0..3000).contains(&staleness)
        })
        .is_some();
        let skew_ms = follower.info_num("rkv_master_clock_skew_ms");
        master.kill();
        let died = Instant::now();
        let refused = wait_for(
            Duration::from_secs(60),
            || matches!(follower.get("k"), Some(Reply::Error(e)) if e.starts_with("MASTERDOWN")),
        )
        .map(|_| died.elapsed());
        // Refused because the data's age passed the bound, on the
        // follower's own clock: not before, and not by hours.
        let refused_at = follower.info_num("rkv_staleness_ms");
        let right = served.is_some()
            && healthy
            && refused.is_some_and(|r| {
                (3000..r.as_millis() as i64 + 3000 + 60_000).contains(&refused_at)
            });
        ok &= right;
        parts.push(format!(
            "{skew}: staleness {staleness} ms while alive (skew seen {:+.1} h), reads refused {} \
             after the master died, at a staleness of {refused_at} ms",
            skew_ms as f64 / 3_600_000.0,
            refused.map_or("NEVER".to_string(), |r| format!("{:.1} s", r.as_secs_f64()))
        ));
    }
    let line = format!(
        "master clock off by hours (bound 3 s): {}",
        parts.join("; ")
    );
    outcome("clock-skew", ok, line)
}

fn idle_follower(dir: &Path, watch: Duration) -> Outcome {
    let backups = dir.join("backups");
    let master = Proc::master(&dir.join("db"), &backups, &["--interval", "1s"], &[]);
    let follower = Proc::follower(&backups, &dir.join("f1"), &[]);
    master
        .client()
        .unwrap()
        .call(&[b"SET", b"k", b"v"])
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        follower.get("k") == Some(Reply::bulk(b"v".to_vec()))
    });
    let before = follower.cpu_time();
    std::thread::sleep(watch);
    let used = follower.cpu_time() - before;
    let share = used.as_secs_f64() / watch.as_secs_f64() * 100.0;
    let line = format!(
        "idle follower: {:.2}% of a core over {} ({} ms of CPU)",
        share,
        humantime::format_duration(watch),
        used.as_millis()
    );
    outcome("idle-follower", share < 2.0, line)
}
