//! The object store on a bad network. The master and a follower each reach
//! moto's S3 server through a proxy of their own (`scripts/lib/s3-proxy.py`),
//! which for the fault's time is swapped for one that loses the replies to
//! conditional writes of `latest`, answers every request 503 SlowDown, or
//! hangs every request. A steady writer runs throughout and a checker reads
//! the follower; each scenario reports what the issue of a bad network asks:
//! writes kept or refused, how soon each daemon reported the fault, how fast
//! INFO answered, requests per minute, time to converge after, and
//! acknowledged writes lost and torn or backwards reads (both must be 0).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::moto::Moto;
use crate::procs::Proc;
use crate::scenarios::{missing, outcome, yes};
use crate::{log, Outcome};
use rkv_testkit::wait::time_until as wait_for;

/// The S3 proxy that drops, hangs and throttles, in the repository.
const PROXY: &str = "scripts/lib/s3-proxy.py";
const BUCKET: &str = "rkv-faults";
const STORE_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "rkv-faults"),
    ("AWS_SECRET_ACCESS_KEY", "rkv-faults"),
    ("AWS_REGION", "us-east-1"),
];

/// The fault proxy, saying what it did to each request into `log`.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
    upstream: String,
}

impl Proxy {
    fn start(upstream: &str, port: u16, mode: &[&str], log: &Path) -> Proxy {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new("python3")
            .arg(rkv_harness::repo_file(PROXY))
            .args(["--port", &port.to_string(), "--upstream", upstream])
            .args(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the fault proxy (python3)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the fault proxy did not start (it said {line:?}); its log is {}",
                    log.display()
                )
            });
        Proxy {
            child,
            port,
            log: log.to_path_buf(),
            upstream: upstream.to_string(),
        }
    }

    /// The same port, now doing `mode` to each request.
    fn swap(&mut self, mode: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Proxy::start(&self.upstream, self.port, mode, &self.log);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the proxy said so far: one line per request it did something to.
    fn said(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("s3-proxy:") && l.contains(what))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer at a steady pace that goes on when refused: MSET `w:<n>` and
/// `last` = n, n counting acknowledged writes only (so `w:0..acked` is
/// what must never be lost); refusals and failures are counted.
struct Load {
    acked: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Load {
    fn start(master: &Proc) -> Load {
        let acked = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = master.addr.clone();
        let handle = {
            let (acked, refused, stop) =
                (Arc::clone(&acked), Arc::clone(&refused), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut client = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = match client.as_mut() {
                        Some(c) => c,
                        None => match rkv::client::Client::connect(&addr, None) {
                            Ok(c) => client.insert(c),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    let (key, last) = (format!("w:{n}"), n.to_string());
                    let args: [&[u8]; 5] = [
                        b"MSET",
                        key.as_bytes(),
                        last.as_bytes(),
                        b"last",
                        last.as_bytes(),
                    ];
                    match c.call_raw(&args) {
                        Ok(Reply::Simple(_)) => {
                            n += 1;
                            acked.store(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Ok(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => {
                            // Unknown outcome: the same key again, on a new
                            // connection.
                            refused.fetch_add(1, Ordering::SeqCst);
                            client = None;
                        }
                    }
                }
            })
        };
        Load {
            acked,
            refused,
            stop,
            handle: Some(handle),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked()
    }
}

/// Reads the follower all along: the `last` it serves never goes back, and
/// the key it names is there (a state is whole).
struct Checker {
    served: Arc<AtomicU64>,
    torn: Arc<AtomicU64>,
    backwards: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Checker {
    fn start(follower: &Proc) -> Checker {
        let served = Arc::new(AtomicU64::new(0));
        let torn = Arc::new(AtomicU64::new(0));
        let backwards = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = follower.addr.clone();
        let handle = {
            let (served, torn, backwards, stop) = (
                Arc::clone(&served),
                Arc::clone(&torn),
                Arc::clone(&backwards),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut high = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    let Ok(mut c) = rkv::client::Client::connect(&addr, None) else {
                        continue;
                    };
                    let Ok(Reply::Bulk(Some(last))) = c.call_raw(&[b"GET", b"last"]) else {
                        continue;
                    };
                    let Some(last) = std::str::from_utf8(&last)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        torn.fetch_add(1, Ordering::SeqCst);
                        continue;
                    };
                    if last < high {
                        backwards.fetch_add(1, Ordering::SeqCst);
                    }
                    high = high.max(last);
                    let key = format!("w:{last}");
                    if !matches!(
                        c.call_raw(&[b"GET", key.as_bytes()]),
                        Ok(Reply::Bulk(Some(_)))
                    ) {
                        torn.fetch_add(1, Ordering::SeqCst);
                    }
                    served.store(high, Ordering::SeqCst);
                }
            })
        };
        Checker {
            served,
            torn,
            backwards,
            stop,
            handle: Some(handle),
        }
    }

    /// The newest `last` the follower served.
    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// (torn, backwards) reads.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.torn.load(Ordering::SeqCst),
            self.backwards.load(Ordering::SeqCst),
        )
    }
}

/// HTTP requests a daemon counted (every retry included).
fn requests(proc: &Proc) -> i64 {
    ["get", "put", "list", "delete"]
        .iter()
        .map(|kind| proc.info_num(&format!("rkv_store_{kind}_requests")).max(0))
        .sum()
}

/// A master and a follower, each through its own proxy, with the load on.
struct Setup {
    _moto: Moto,
    master_proxy: Proxy,
    follower_proxy: Proxy,
    master: Proc,
    follower: Proc,
}

fn setup(dir: &Path) -> Setup {
    let moto = Moto::start(dir);
    moto.create_bucket(BUCKET);
    let master_proxy = Proxy::start(&moto.addr, 0, &[], &dir.join("master-proxy.log"));
    let follower_proxy = Proxy::start(&moto.addr, 0, &[], &dir.join("follower-proxy.log"));
    let url = format!("s3://{BUCKET}/prod");
    let db = dir.join("db");
    let master = Proc::start(
        "rkv-master",
        [
            "--db",
            &db.display().to_string(),
            "--backup-dir",
            &url,
            "--s3-endpoint",
            &master_proxy.endpoint(),
            "--interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        &STORE_ENV,
        &db,
        dir.join("master.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let data = dir.join("follower");
    let follower = Proc::start(
        "rkv-follower",
        [
            "--backup-dir",
            &url,
            "--data",
            &data.display().to_string(),
            "--s3-endpoint",
            &follower_proxy.endpoint(),
            "--poll-interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        &STORE_ENV,
        &data,
        dir.join("follower.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Setup {
        _moto: moto,
        master_proxy,
        follower_proxy,
        master,
        follower,
    }
}

/// The daemons with the load on and the follower caught up; `Err` with the
/// scenario's outcome when it cannot run (no moto, or no catching up).
fn loaded(dir: &Path, name: &'static str) -> Result<(Setup, Load, Checker), Outcome> {
    if !Moto::installed() {
        return Err(outcome(
            name,
            true,
            format!("{name}: skipped (no moto server installed)"),
        ));
    }
    let s = setup(dir);
    let load = Load::start(&s.master);
    let checker = Checker::start(&s.follower);
    if wait_for(Duration::from_secs(120), || checker.served() > 100).is_none() {
        let acked = load.finish();
        let _ = checker.finish();
        return Err(outcome(
            name,
            false,
            format!("{name}: the follower never caught up before the fault ({acked} acknowledged)"),
        ));
    }
    Ok((s, load, checker))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("NO".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The store answers every request 503 SlowDown (`--slow-down`) or
/// answers none (`--hang`) for `fault`, then comes back.
pub fn bad_store(dir: &Path, name: &'static str, mode: &str, fault: Duration) -> Outcome {
    let (mut s, load, checker) = match loaded(dir, name) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    // Requests per minute before the fault, as the daemons count them.
    let quiet = Duration::from_secs(10);
    let (m0, f0) = (requests(&s.master), requests(&s.follower));
    std::thread::sleep(quiet);
    let per_min = |n: i64, d: Duration| n as f64 * 60.0 / d.as_secs_f64();
    let idle = (
        per_min(requests(&s.master) - m0, quiet),
        per_min(requests(&s.follower) - f0, quiet),
    );

    log(&format!("{name}: the store answers {mode} for {fault:?}"));
    let (acked_before, refused_before) = (load.acked(), load.refused());
    let (m_said, f_said) = (s.master_proxy.said(""), s.follower_proxy.said(""));
    s.master_proxy.swap(&[mode]);
    s.follower_proxy.swap(&[mode]);
    let started = Instant::now();
    let (mut link_down, mut master_reported, mut first_refusal) = (None, None, None);
    let mut slowest_info = Duration::ZERO;
    while started.elapsed() < fault {
        let asked = Instant::now();
        let fields = s
            .follower
            .info_fields(&["master_link_status", "rkv_last_error"]);
        slowest_info = slowest_info.max(asked.elapsed());
        if link_down.is_none() && fields.is_some_and(|f| f[0].as_deref() == Some("down")) {
            link_down = Some(started.elapsed());
        }
        let asked = Instant::now();
        let fields = s
            .master
            .info_fields(&["rdb_last_bgsave_status", "rkv_lease_held"]);
        slowest_info = slowest_info.max(asked.elapsed());
        if master_reported.is_none()
            && fields
                .is_some_and(|f| f[0].as_deref() == Some("err") || f[1].as_deref() == Some("0"))
        {
            master_reported = Some(started.elapsed());
        }
        if first_refusal.is_none() && load.refused() > refused_before {
            first_refusal = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    let acked_during = load.acked() - acked_before;
    let refused_during = load.refused() - refused_before;
    let sent = (
        per_min((s.master_proxy.said("") - m_said) as i64, took),
        per_min((s.follower_proxy.said("") - f_said) as i64, took),
    );
    s.master_proxy.swap(&[]);
    s.follower_proxy.swap(&[]);
    let back = Instant::now();
    // Converged: writes are taken again and the follower serves one taken
    // after the store came back.
    let converged = wait_for(Duration::from_secs(120), || {
        load.acked() > acked_before + acked_during + 10
    })
    .and_then(|_| {
        let target = load.acked();
        wait_for(Duration::from_secs(120), || checker.served() >= target)
    })
    .map(|_| back.elapsed());
    let acked = load.finish();
    let lost = missing(&s.master, 0, acked);
    let (torn, backwards) = checker.finish();
    let line = format!(
        "{name}: {mode} for {:.0} s under load: writes acked {acked_during}, refused \
         {refused_during} (first refusal {}); reported by the follower (link down) after {}, \
         by the master after {}; slowest INFO {:.0} ms; requests/min master {:.0}, follower \
         {:.0} (before: {:.0}, {:.0}); converged {} after; acknowledged writes lost {lost} of \
         {acked}; torn reads {torn}, backwards {backwards}",
        took.as_secs_f64(),
        secs(first_refusal),
        secs(link_down),
        secs(master_reported),
        slowest_info.as_secs_f64() * 1000.0,
        sent.0,
        sent.1,
        idle.0,
        idle.1,
        secs(converged),
    );
    let ok = lost == 0
        && torn == 0
        && backwards == 0
        && converged.is_some()
        && link_down.is_some()
        && master_reported.is_some();
    outcome(name, ok, line)
}

/// The replies to the first conditional writes of `latest` are lost after
/// the store applied them: the master must recognise its own writes, not
/// take them for another master's.
pub fn lost_replies(dir: &Path) -> Outcome {
    let name = "store-lost-reply";
    let (mut s, load, checker) = match loaded(dir, name) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    s.master_proxy.swap(&["--lose-replies", "5"]);
    let lost_all = wait_for(Duration::from_secs(120), || {
        s.master_proxy.said("lost the reply") >= 5
    });
    let after = load.acked();
    let converged = wait_for(Duration::from_secs(120), || checker.served() >= after + 10);
    let owns = s.master.info("rkv_owns_backup_dir");
    let refused = load.refused();
    let acked = load.finish();
    let lost = missing(&s.master, 0, acked);
    let (torn, backwards) = checker.finish();
    let line = format!(
        "{name}: {} replies to conditional writes of latest lost after the store applied them, \
         under load: master still owns the store: {}, writes refused {refused}; follower caught \
         up {} after; acknowledged writes lost {lost} of {acked}; torn reads {torn}, backwards \
         {backwards}",
        s.master_proxy.said("lost the reply"),
        yes(owns.as_deref() == Some("1")),
        secs(converged),
    );
    let ok = lost_all.is_some()
        && owns.as_deref() == Some("1")
        && converged.is_some()
        && lost == 0
        && torn == 0
        && backwards == 0;
    outcome(name, ok, line)
}

/// Every request to the store takes 500 ms more (a distant or overloaded
/// store): how long a backup cycle takes, and whether writes go on.
pub fn latency(dir: &Path) -> Outcome {
    let name = "store-latency";
    let (mut s, load, checker) = match loaded(dir, name) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    let before = s.master.info_num("rkv_last_backup_duration_ms");
    s.master_proxy.swap(&["--delay", "500"]);
    let refused_before = load.refused();
    let done = s.master.info_num("rkv_backups_done");
    let requests_before = requests(&s.master);
    // Five backups taken wholly at the new latency.
    let mut durations = Vec::new();
    let mut seen = done + 1;
    let all = wait_for(Duration::from_secs(300), || {
        let now = s.master.info_num("rkv_backups_done");
        if now > seen {
            durations.push(s.master.info_num("rkv_last_backup_duration_ms"));
            seen = now;
        }
        durations.len() >= 5
    });
    let backups = (s.master.info_num("rkv_backups_done") - done).max(1);
    let per_backup = (requests(&s.master) - requests_before) / backups;
    let refused = load.refused() - refused_before;
    s.master_proxy.swap(&[]);
    let target = load.acked();
    let converged = wait_for(Duration::from_secs(120), || checker.served() >= target);
    let acked = load.finish();
    let lost = missing(&s.master, 0, acked);
    let (torn, backwards) = checker.finish();
    durations.sort_unstable();
    let line = format!(
        "{name}: 500 ms added to every request of the master's: a backup cycle took {} ms \
         (median of {}; max {} ms; {before} ms before), about {per_backup} requests a backup \
         (heartbeats included); writes refused {refused}; follower caught up {} after; \
         acknowledged writes lost {lost} of {acked}; torn reads {torn}, backwards {backwards}",
        durations.get(durations.len() / 2).copied().unwrap_or(-1),
        durations.len(),
        durations.last().copied().unwrap_or(-1),
        secs(converged),
    );
    let ok = all.is_some()
        && refused == 0
        && converged.is_some()
        && lost == 0
        && torn == 0
        && backwards == 0;
    outcome(name, ok, line)
}

/// The master is cut off from the store (the follower is not) while
/// clients write, and the follower is promoted with `rkv promote`: the old
/// master stops acknowledging once its lease term has passed, the promotion
/// waits that out, and no write the old master acknowledged after its
/// first refusal is dropped. What the promotion does drop (acknowledged
/// between the follower's backup and the term's end) is counted.
pub fn partition(dir: &Path) -> Outcome {
    let name = "store-partition";
    let (s, load, checker) = match loaded(dir, name) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    let Setup {
        _moto: moto,
        master_proxy,
        follower_proxy,
        master,
        follower,
    } = s;
    // Cut off: nothing answers on the master's proxy port.
    let cut_at = load.acked();
    let port = master_proxy.port;
    let log_path = master_proxy.log.clone();
    let refused_before = load.refused();
    drop(master_proxy);
    let cut = Instant::now();
    // The follower, still in touch, applies the last backup the master
    // published, and is then stopped, to be promoted; meanwhile the old
    // master's first refusal is timed.
    let (mut caught_up, mut first_refusal, mut acked_at_refusal) = (false, None, 0);
    let _ = wait_for(Duration::from_secs(120), || {
        if !caught_up {
            let ids = follower.info_fields(&["rkv_applied_backup_id", "rkv_newest_backup_id"]);
            caught_up = ids.is_some_and(|ids| ids[0].is_some() && ids[0] == ids[1]);
        }
        if first_refusal.is_none() && load.refused() > refused_before {
            first_refusal = Some(cut.elapsed());
            acked_at_refusal = load.acked();
        }
        caught_up && first_refusal.is_some()
    });
    let (torn, backwards) = checker.finish();
    let _ = follower.stop();
    drop(follower_proxy);
    let reported = master.info("rkv_lease_held");

    let promoting = Instant::now();
    let out = Command::new(rkv_testkit::process::bin("rkv"))
        .args([
            format!("--db={}", dir.join("new").display()),
            "promote".into(),
            format!("--data={}", dir.join("follower").display()),
            format!("--backup_dir=s3://{BUCKET}/prod"),
            format!("--s3-endpoint={}", moto.endpoint()),
        ])
        .envs(STORE_ENV)
        .output()
        .expect("run rkv promote");
    let promote_took = promoting.elapsed();
    let promoted = out.status.success();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    if !promoted {
        log(&format!(
            "{name}: rkv promote failed: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let acked = load.acked();
    let after_refusal = acked - acked_at_refusal;

    // The promoted database: what of the old master's acknowledged writes
    // it lacks.
    let new = Proc::start(
        "rkv-master",
        [
            "--db",
            &dir.join("new").display().to_string(),
            "--backup-dir",
            &format!("s3://{BUCKET}/prod"),
            "--s3-endpoint",
            &moto.endpoint(),
            "--interval",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        &STORE_ENV,
        &dir.join("new"),
        dir.join("new.log"),
    );
    let dropped = match &new {
        Ok(new) => missing(new, 0, acked) as i64,
        Err(e) => {
            log(&format!("{name}: the promoted master did not start: {e}"));
            -1
        }
    };
    // Back in touch, the old master finds the store handed over.
    let _back = Proxy::start(&moto.addr, port, &[], &log_path);
    let fenced = wait_for(Duration::from_secs(120), || {
        master.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let acked_total = load.finish();
    let lost_on_old = missing(&master, 0, acked_total);
    let line = format!(
        "{name}: master cut off from the store under load, its follower promoted: the master \
         refused writes {} after the cut (lease held: {}), acknowledged {after_refusal} after \
         its first refusal; rkv promote took {:.1} s (waited out the term: {}); the promoted \
         database lacks {dropped} of {acked} acknowledged writes (those past what the follower \
         held: its backup and the log it applied; {} acknowledged after the cut); old master \
         fenced {} after it was back; \
         acknowledged writes lost from the old master {lost_on_old}; torn reads {torn}, \
         backwards {backwards}",
        secs(first_refusal),
        reported.as_deref().unwrap_or("?"),
        promote_took.as_secs_f64(),
        yes(said.contains("lease term")),
        acked_at_refusal - cut_at,
        secs(fenced),
    );
    let ok = caught_up
        && first_refusal.is_some()
        && after_refusal == 0
        && promoted
        && dropped >= 0
        && fenced.is_some()
        && lost_on_old == 0
        && torn == 0
        && backwards == 0;
    outcome(name, ok, line)
}
