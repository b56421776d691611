//! `--metrics-listen`: each daemon's facts as Prometheus metrics on
//! `/metrics`, and its health on `/healthz` for load balancers and probes.
//!
//! The metrics are read at scrape time from what the daemon already
//! reports (its [`DaemonStatus`](crate::status::DaemonStatus), the server's
//! counters and RocksDB's properties), so nothing on the hot path changes
//! and INFO and the metrics cannot disagree. The exposition is written by
//! the `prometheus` crate in Prometheus's text format (which `promtool
//! check metrics` lints); the HTTP server is `hyper`, on a thread and tokio
//! runtime of its own, over TLS with the daemon's certificate when
//! `--metrics-tls` asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::db::LoadFigures;
use crate::server::tls::Tls;
use crate::status::{
    DaemonStatus, Durations, Failures, FollowerStatus, MasterStatus, StoreTraffic, DURATION_BOUNDS,
};

/// Everything one scrape reports.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The daemon's own facts.
    pub status: DaemonStatus,
    /// Clients connected now.
    pub clients: u64,
    /// Connections accepted since start.
    pub connections: u64,
    /// Connections refused (`--max-clients`) since start.
    pub rejected: u64,
    /// TLS clients closed by TLS since start.
    pub tls_refused: u64,
    /// Commands executed since start.
    pub commands: u64,
    /// Calls by command name (`unknown` for commands rkv does not have).
    pub calls: Vec<(&'static str, u64)>,
    /// Commands answered with an error.
    pub command_errors: u64,
    /// Clients' waits for a position and staleness bounds.
    pub freshness: Freshness,
    /// The served database's figures; `None` while there is none.
    pub db: Option<LoadFigures>,
}

/// What clients asked of the data's freshness (`RKV.WAIT`,
/// `RKV.READAFTER`, `RKV.MAXSTALENESS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freshness {
    /// Requests waiting for a position now.
    pub waiting: u64,
    /// Requests that waited for a position since start.
    pub waits: u64,
    /// Of those, the ones whose time ran out.
    pub timeouts: u64,
    /// Reads refused by a connection's staleness bound.
    pub refused: u64,
}

/// What `/healthz` answers: healthy, or the reason it is not.
pub fn health(status: &DaemonStatus) -> Result<(), String> {
    match status {
        DaemonStatus::Master(m) => match (&m.fenced_by, &m.db_error) {
            (Some(by), _) => Err(format!("fenced: {by} took the backup directory over")),
            (None, _) if m.lease_expired => Err(format!(
                "writes refused: the lease on the backup store is not renewed for {:.1} s \
                 (--lease-term {})",
                m.lease_renewed_ago.unwrap_or_default().as_secs_f64(),
                humantime::format_duration(m.lease_term.unwrap_or_default())
            )),
            (None, Some(e)) => Err(format!("the database refuses writes: {e}")),
            (None, None) => Ok(()),
        },
        DaemonStatus::Follower(f) if f.applied_backup_id == 0 => {
            Err("no data yet: no backup applied".to_string())
        }
        DaemonStatus::Follower(f) if !f.healthy => Err(match (f.staleness, f.max_staleness) {
            (Some(s), Some(max)) => format!(
                "stale: data {:.1} s old, past --max-staleness {:.1} s",
                s.as_secs_f64(),
                max.as_secs_f64()
            ),
            (None, _) => {
                "stale: the data's age is unknown (no evidence from the master yet)".to_string()
            }
            _ => f
                .lineage_change
                .clone()
                .unwrap_or_else(|| "unhealthy".to_string()),
        }),
        DaemonStatus::Follower(_) => Ok(()),
    }
}

/// The base unit a metric's name ends in, as Prometheus names it.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Bytes,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Seconds => "_seconds",
            Unit::Bytes => "_bytes",
        }
    }
}

/// A registry that takes values rather than metric objects, and names
/// them as Prometheus wants: `rkv_` first, the base unit, `_total` on
/// counters. Help texts are sentences without the final period.
struct Exposition(Registry);

impl Exposition {
    fn register(&mut self, collector: impl prometheus::core::Collector + 'static) {
        self.0
            .register(Box::new(collector))
            .expect("each metric is registered once, with a valid name");
    }

    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(name, help.trim_end_matches('.')).namespace("rkv")
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let gauge = Gauge::with_opts(Self::opts(name, help)).expect("a valid gauge");
        gauge.set(value);
        self.register(gauge);
    }

    fn gauge_in(&mut self, name: &str, help: &str, unit: Unit, value: f64) {
        self.gauge(&format!("{name}{}", unit.suffix()), help, value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let opts = Self::opts(&format!("{name}_total"), help);
        let counter = IntCounter::with_opts(opts).expect("a valid counter");
        counter.inc_by(value);
        self.register(counter);
    }

    fn counter_in(&mut self, name: &str, help: &str, unit: Unit, value: u64) {
        self.counter(&format!("{name}{}", unit.suffix()), help, value);
    }

    fn counters_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let opts = Self::opts(&format!("{name}_total"), help);
        let family = IntCounterVec::new(opts, &[label]).expect("a valid counter family");
        for (value, n) in values {
            family.with_label_values(&[value]).inc_by(n);
        }
        self.register(family);
    }

    fn failures(&mut self, name: &str, help: &str, failures: &Failures) {
        self.counters_by(name, help, "kind", failures.by_kind());
    }

    /// A histogram of durations the daemon recorded as they happened.
    fn histogram(&mut self, name: &str, help: &str, durations: &Durations) {
        let opts = Self::opts(&format!("{name}_seconds"), help);
        self.register(Recorded::histogram(opts, durations));
    }
}

/// A histogram whose buckets were counted by the daemon (a [`Durations`]),
/// given to the registry as it stands: the crate's own `Histogram` counts
/// observations, and the daemon's are already counted.
struct Recorded {
    desc: Desc,
    family: MetricFamily,
}

impl Recorded {
    fn histogram(opts: Opts, durations: &Durations) -> Recorded {
        let desc = opts.describe().expect("a valid histogram name");
        let mut cumulative = 0;
        let buckets = DURATION_BOUNDS
            .iter()
            .zip(&durations.counts)
            .map(|(&bound, &count)| {
                cumulative += count;
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(durations.count());
        histogram.set_sample_sum(durations.sum.as_secs_f64());
        histogram.set_bucket(buckets);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        Recorded { desc, family }
    }
}

impl Collector for Recorded {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family.clone()]
    }
}

/// The Prometheus text exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut x = Exposition(Registry::new());
    x.gauge(
        "connected_clients",
        "Clients connected now.",
        snapshot.clients as f64,
    );
    x.counter("connections", "Connections accepted.", snapshot.connections);
    x.counter(
        "rejected_connections",
        "Connections refused because --max-clients were connected.",
        snapshot.rejected,
    );
    x.counter(
        "tls_refused_connections",
        "TLS clients closed by TLS: not TLS, a client certificate refused or missing, a broken \
         record, or no handshake within 10 s.",
        snapshot.tls_refused,
    );
    x.counter("commands", "Commands executed.", snapshot.commands);
    x.counters_by(
        "command_calls",
        "Calls by command name (unknown: commands rkv does not have).",
        "command",
        snapshot.calls.iter().copied(),
    );
    x.counter(
        "command_errors",
        "Commands answered with an error.",
        snapshot.command_errors,
    );
    let freshness = &snapshot.freshness;
    x.gauge(
        "waiting_clients",
        "Requests waiting for the data to reach a position (RKV.WAIT, RKV.READAFTER).",
        freshness.waiting as f64,
    );
    x.counter(
        "position_waits",
        "Requests that waited for the data to reach a position.",
        freshness.waits,
    );
    x.counter(
        "position_wait_timeouts",
        "Requests whose wait for a position ran out of time.",
        freshness.timeouts,
    );
    x.counter(
        "reads_refused_bound",
        "Reads refused because the data was older than the connection's RKV.MAXSTALENESS.",
        freshness.refused,
    );
    if let Some(db) = &snapshot.db {
        x.gauge(
            "db_estimated_keys",
            "RocksDB's estimate of the number of keys in the served database.",
            db.keys as f64,
        );
        x.gauge_in(
            "db_live_sst",
            "Size of the served database's live SST files.",
            Unit::Bytes,
            db.live_sst_bytes as f64,
        );
        x.gauge_in(
            "db_memtable",
            "Size of the served database's memtables.",
            Unit::Bytes,
            db.memtable_bytes as f64,
        );
        x.gauge_in(
            "db_pending_compaction",
            "Bytes RocksDB estimates compaction has still to rewrite.",
            Unit::Bytes,
            db.pending_compaction_bytes as f64,
        );
        x.gauge_in(
            "db_block_cache_usage",
            "Bytes of the block cache in use.",
            Unit::Bytes,
            db.block_cache_bytes as f64,
        );
    }
    match &snapshot.status {
        DaemonStatus::Master(m) => master(&mut x, m),
        DaemonStatus::Follower(f) => follower(&mut x, f),
    }
    TextEncoder::new()
        .encode_to_string(&x.0.gather())
        .expect("the text encoding of valid metrics cannot fail")
}

/// Seconds from unix milliseconds `ms` to now (0 for a time in the future).
fn age_seconds(ms: u64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(ms) as f64 / 1000.0
}

fn master(x: &mut Exposition, m: &MasterStatus) {
    let last = m.last.as_ref();
    x.gauge(
        "master_last_backup_id",
        "The id of the newest backup this master took (0: none since start).",
        last.map_or(0.0, |l| f64::from(l.id)),
    );
    x.gauge(
        "master_last_backup_sequence",
        "The database sequence number the newest backup holds.",
        m.backed_up_seq as f64,
    );
    if m.last_save_unix > 0 {
        x.gauge_in(
            "master_last_backup_age",
            "Time since the newest backup was created.",
            Unit::Seconds,
            age_seconds(m.last_save_unix as u64 * 1000),
        );
    }
    x.gauge(
        "master_unbacked_writes",
        "Writes not in any backup yet (sequence numbers since the newest backup).",
        m.seq.saturating_sub(m.backed_up_seq) as f64,
    );
    if let Some(log) = &m.log {
        x.gauge(
            "master_log_shipped_sequence",
            "The last sequence number the shipped write log holds.",
            log.stats.shipped as f64,
        );
        x.counter(
            "master_log_segments",
            "Log segments shipped since start.",
            log.stats.segments,
        );
        x.counter_in(
            "master_log_shipped",
            "Bytes of log segments shipped since start.",
            Unit::Bytes,
            log.stats.bytes,
        );
        x.counter(
            "master_log_jumps",
            "Times the write-ahead log no longer held the next writes to ship, so a backup \
             bridged the log.",
            log.stats.jumps,
        );
        x.gauge(
            "master_log_failing",
            "1 while shipping the write log fails.",
            f64::from(u8::from(log.error.is_some())),
        );
    }
    x.histogram(
        "master_backup_duration",
        "How long backups took, publishing included.",
        &m.durations,
    );
    x.counter_in(
        "master_backup_added",
        "Bytes backups wrote into the store (files no earlier backup had).",
        Unit::Bytes,
        m.added.bytes,
    );
    x.counter(
        "master_backup_added_files",
        "Files backups wrote into the store.",
        m.added.files,
    );
    x.counter("master_backups", "Backups taken since start.", m.done);
    x.failures(
        "master_backup_failures",
        "Backups that failed since start, by kind.",
        &m.failed,
    );
    x.counter(
        "master_purged_backups",
        "Backups retention removed since start.",
        m.purged,
    );
    x.counter(
        "master_purge_failures",
        "Retention passes that failed since start.",
        m.purge_failures,
    );
    if let Some(ago) = m.heartbeat_ago {
        x.gauge_in(
            "master_heartbeat_age",
            "Time since the master last wrote its heartbeat (and renewed its lease).",
            Unit::Seconds,
            ago.as_secs_f64(),
        );
    }
    x.gauge(
        "master_owns_backup_dir",
        "1 while this master holds the backup directory, 0 once another took it over.",
        if m.fenced_by.is_none() { 1.0 } else { 0.0 },
    );
    x.gauge(
        "master_lease_held",
        "1 while the lease on the backup store is renewed within its term, 0 while it is not \
         (writes are refused).",
        if m.lease_expired { 0.0 } else { 1.0 },
    );
    x.gauge(
        "master_db_writable",
        "1 while the database accepts writes, 0 while it refuses them (a full disk).",
        if m.db_error.is_none() { 1.0 } else { 0.0 },
    );
    x.counter(
        "master_damaged_files",
        "Damaged backup files found (and healed) since start.",
        m.damaged_found,
    );
    if let Some(t) = &m.store {
        store(x, t);
    }
}

fn follower(x: &mut Exposition, f: &FollowerStatus) {
    if let Some(staleness) = f.staleness {
        x.gauge_in(
            "follower_staleness",
            "How old the served data is, on this host's clock (rkv_staleness_ms in INFO).",
            Unit::Seconds,
            staleness.as_secs_f64(),
        );
    }
    x.gauge(
        "follower_healthy",
        "1 while the follower serves the master's data within --max-staleness, else 0.",
        if f.healthy { 1.0 } else { 0.0 },
    );
    x.gauge(
        "follower_applied_backup_id",
        "The id of the backup being served (0: none).",
        f64::from(f.applied_backup_id),
    );
    x.gauge(
        "follower_newest_backup_id",
        "The id of the newest backup seen in the store.",
        f64::from(f.newest_backup_id),
    );
    x.gauge(
        "follower_applied_sequence",
        "The master's sequence number the served data holds (its backup and the log since).",
        f.applied_seq as f64,
    );
    if let Some(master) = f.master_seq {
        x.gauge(
            "follower_lag_sequence",
            "Writes the master's latest heartbeat holds that the served data does not.",
            master.saturating_sub(f.applied_seq) as f64,
        );
    }
    if let Some(log) = &f.log {
        x.counter(
            "follower_log_segments",
            "Log segments read since start.",
            log.segments,
        );
        x.counter(
            "follower_log_batches",
            "Write batches of the log applied since start.",
            log.batches,
        );
        x.counter(
            "follower_log_fallbacks",
            "Backups restored because the log could not bring the data on (a gap, a damaged \
             or foreign segment, a stuck log).",
            log.fallbacks,
        );
        x.gauge(
            "follower_log_broken",
            "1 while the log cannot be followed from the served data.",
            f64::from(u8::from(log.broken.is_some())),
        );
    }
    if let Some(ago) = f.last_poll_ago {
        x.gauge_in(
            "follower_last_poll_age",
            "Time since the follower last looked at the store.",
            Unit::Seconds,
            ago.as_secs_f64(),
        );
    }
    if let Some(max) = f.max_staleness {
        x.gauge_in(
            "follower_max_staleness",
            "The --max-staleness bound.",
            Unit::Seconds,
            max.as_secs_f64(),
        );
    }
    x.counter(
        "follower_applies",
        "Backups applied since start.",
        f.applies_done,
    );
    x.failures(
        "follower_apply_failures",
        "Failed applies and skipped backups since start, by kind.",
        &f.failures,
    );
    x.histogram(
        "follower_apply_duration",
        "How long applies took, from the store's news to serving the new data.",
        &f.durations,
    );
    x.counter_in(
        "follower_apply_copied",
        "Bytes applies copied into new generations.",
        Unit::Bytes,
        f.copied.bytes,
    );
    x.counter(
        "follower_apply_copied_files",
        "Files applies copied into new generations.",
        f.copied.files,
    );
    x.counter(
        "follower_apply_kept_files",
        "Files applies kept from the previous generation instead of copying.",
        f.copied.files_kept,
    );
    x.counter(
        "follower_reads_refused_stale",
        "Reads refused because the data was stale past --max-staleness (--stale-reads refuse).",
        f.reads_refused_stale,
    );
    if let Some(ago) = f.heartbeat_ago {
        x.gauge_in(
            "follower_master_heartbeat_age",
            "Time since the master's heartbeat was last seen to change.",
            Unit::Seconds,
            ago.as_secs_f64(),
        );
    }
    if let Some(t) = &f.store {
        store(x, t);
    }
}

fn store(x: &mut Exposition, t: &StoreTraffic) {
    x.counters_by(
        "store_requests",
        "HTTP requests sent to the object store, by kind, every retry included.",
        "kind",
        [
            ("get", t.gets),
            ("put", t.puts),
            ("list", t.lists),
            ("delete", t.deletes),
        ],
    );
    x.counter(
        "store_request_failures",
        "Requests to the object store that failed: no answer, 5xx or 429 (SlowDown).",
        t.failed,
    );
    x.counter_in(
        "store_uploaded",
        "Bytes uploaded to the object store.",
        Unit::Bytes,
        t.bytes_up,
    );
    x.counter_in(
        "store_downloaded",
        "Bytes downloaded from the object store.",
        Unit::Bytes,
        t.bytes_down,
    );
}

/// The metrics endpoint, serving until the process exits.
pub struct MetricsServer {
    addr: SocketAddr,
}

/// How long a client has to finish its TLS handshake or send its request
/// headers before it is let go.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

impl MetricsServer {
    /// Listens on `addr` and answers `/metrics` and `/healthz` from
    /// `snapshot`, on a thread of its own; over TLS with `tls`'s
    /// certificate (and its demand for client certificates) when given.
    pub fn start(
        addr: SocketAddr,
        snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
        tls: Option<Arc<Tls>>,
    ) -> std::io::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("serve metrics on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("rkv-metrics".into())
            .spawn(move || runtime.block_on(serve(listener, snapshot, tls)))?;
        Ok(MetricsServer { addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Accepts clients until the process exits; each is served on a task of
/// its own, so a slow one holds up nobody.
async fn serve(
    listener: std::net::TcpListener,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    tls: Option<Arc<Tls>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "the metrics endpoint cannot accept clients");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: pause rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (snapshot, tls) = (Arc::clone(&snapshot), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&request, snapshot.as_ref());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT);
            let served = match tls {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "metrics: TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics: a client's connection failed");
            }
        });
    }
}

/// The reply to one request: `/metrics`, `/healthz`, or why not.
fn answer<B>(
    request: &hyper::Request<B>,
    snapshot: &dyn Fn() -> Snapshot,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, body, kind) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (200, render(&snapshot()), prometheus::TEXT_FORMAT),
        (&hyper::Method::GET, "/healthz") => match health(&snapshot().status) {
            Ok(()) => (200, "ok\n".to_string(), TEXT),
            Err(why) => (503, format!("{why}\n"), TEXT),
        },
        (&hyper::Method::GET, _) => (404, "not found: try /metrics or /healthz\n".into(), TEXT),
        _ => (405, "only GET\n".to_string(), TEXT),
    };
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests;
