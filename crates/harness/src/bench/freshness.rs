//! Scenario 9: reading your own writes on a follower. Under the standard
//! load, a writer sets a key on the master, asks the position it reached
//! (`RKV.POSITION`), waits for it on a follower (`RKV.WAIT`) and reads the
//! key there: the time from the write's acknowledgment to the follower's
//! answer. And what waiting costs reads: pipelined GETs on connections that
//! read after a position (`RKV.READAFTER`, one the follower holds), against
//! the same GETs on plain connections, in alternation.

use std::path::Path;
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::scenarios::{LagSetup, Load, Pair, ThroughputResult};

/// What the scenario measured.
pub struct FreshnessResult {
    /// From each write's acknowledgment to the follower's answer, in ms,
    /// sorted.
    pub ryw_ms: Vec<f64>,
    /// Reads after a wait that did not see their write (a defect if not 0).
    pub missed: usize,
    /// Waits that timed out (10 s each).
    pub timeouts: usize,
    /// GETs on connections reading after a position, against plain ones.
    pub reads: ThroughputResult,
}

/// Connections the read-cost measurement uses, and GETs per pipeline.
const CONNECTIONS: usize = 8;
const PIPELINE: usize = 16;

pub fn freshness(
    work: &Path,
    duration: Duration,
    rate: u32,
    requests: usize,
    rounds: usize,
) -> FreshnessResult {
    let setup = LagSetup::defaults("rkv, defaults, read-your-writes");
    let pair = Pair::start(work, &setup);
    let (master, follower) = (&pair.master, &pair.followers[0]);
    let mut writer = master.client();
    writer.call(&[b"SET", b"ryw:boot", b"1"]).unwrap();
    writer.call(&[b"SAVE"]).unwrap();
    let load = Load::start(&master.addr, rate);
    let mut reader = follower.client();
    let (mut ryw_ms, mut missed, mut timeouts) = (Vec::new(), 0, 0);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let (key, value) = (format!("ryw:{}", n % 1000), n.to_string());
        writer
            .call(&[b"SET", key.as_bytes(), value.as_bytes()])
            .unwrap();
        let acknowledged = Instant::now();
        let Reply::Integer(position) = writer.call(&[b"RKV.POSITION"]).unwrap() else {
            panic!("RKV.POSITION answers an integer");
        };
        let at = position.to_string();
        match reader.call(&[b"RKV.WAIT", at.as_bytes(), b"10000"]) {
            Ok(Reply::Integer(_)) => {
                let read = reader.call(&[b"GET", key.as_bytes()]).unwrap();
                ryw_ms.push(acknowledged.elapsed().as_secs_f64() * 1000.0);
                if read != Reply::bulk(value.into_bytes()) {
                    missed += 1;
                }
            }
            _ => timeouts += 1,
        }
        n += 1;
        // About 100 checks a second beside the load.
        std::thread::sleep(Duration::from_millis(10));
    }
    load.stop();
    ryw_ms.sort_by(f64::total_cmp);

    // The cost of waiting on reads: the follower holds every position
    // asked here, so the wait is the check alone.
    let held = follower.info_num("rkv_applied_seq").max(1).to_string();
    let rate_with = |read_after: bool| get_rate(&follower.addr, requests, read_after, &held);
    // A first pass warms the caches; then each round measures both, the
    // first of them alternating.
    rate_with(false);
    let pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|round| match round % 2 {
            0 => (rate_with(true), rate_with(false)),
            _ => {
                let plain = rate_with(false);
                (rate_with(true), plain)
            }
        })
        .collect();
    pair.stop();
    FreshnessResult {
        ryw_ms,
        missed,
        timeouts,
        reads: ThroughputResult::new(
            format!(
                "GET on connections under RKV.READAFTER (a position held) vs plain, \
                 {CONNECTIONS} connections"
            ),
            (CONNECTIONS, PIPELINE),
            &pairs,
            "plain connections",
            0.0,
        ),
    }
}

/// GETs a second over `requests` GETs on [`CONNECTIONS`] connections,
/// pipelined [`PIPELINE`] deep; each connection reads after `position`
/// first when `read_after`.
fn get_rate(
    addr: &rkv::server::ListenAddr,
    requests: usize,
    read_after: bool,
    position: &str,
) -> f64 {
    let per_connection = requests / CONNECTIONS / PIPELINE;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..CONNECTIONS {
            scope.spawn(move || {
                let mut client = rkv::client::Client::connect(addr, None).unwrap();
                if read_after {
                    let set = [&b"RKV.READAFTER"[..], position.as_bytes(), b"10000"];
                    client.call(&set).unwrap();
                }
                let keys: Vec<Vec<u8>> = (0..PIPELINE)
                    .map(|i| format!("ryw:{}", (c * PIPELINE + i) % 1000).into_bytes())
                    .collect();
                let gets: Vec<Vec<&[u8]>> = keys.iter().map(|k| vec![&b"GET"[..], k]).collect();
                for _ in 0..per_connection {
                    client.pipeline(&gets).unwrap();
                }
            });
        }
    });
    (per_connection * CONNECTIONS * PIPELINE) as f64 / started.elapsed().as_secs_f64()
}
