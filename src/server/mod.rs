//! The RESP server both daemons share: listeners (TCP and Unix sockets),
//! a few event-loop workers that own the client connections, pipelined
//! requests answered in order, the client and request-size caps, `AUTH`,
//! and a shutdown that stops accepting and lets requests in flight finish.
//!
//! An acceptor thread per listener hands each new client to a worker (round
//! robin). A worker waits on its clients with epoll (mio), reads what is
//! there, answers every complete request, and writes the replies. Like
//! Redis, a slow command (`SAVE`, `DBSIZE` on a large database) holds up the
//! other clients of its worker; `BGSAVE` does not.
//!
//! What the commands act on is the daemon's business: it hands the server a
//! [`Backend`], and [`commands`] maps each request onto it.

pub mod commands;
mod listen;
pub mod tls;
pub mod users;
mod wait;
mod watch;
mod worker;

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::Db;
use crate::resp::{Limits, Reply};
use crate::stop::Stop;

pub use listen::{ListenAddr, Listener, Stream};
pub use wait::{Wait, Waiters};

/// Why a daemon will not do what a command asks, in the daemon's terms;
/// only the server words it as Redis would (`MASTERDOWN`, `READONLY`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A follower that has applied no backup yet; where it waits for one.
    NoDataYet {
        /// The backup store's location.
        store: String,
    },
    /// A follower whose data is not known to be within its staleness bound
    /// (under `--stale-reads refuse`); why, as a sentence.
    Stale {
        /// The data's age against the bound, or why it is unknown.
        reason: String,
    },
    /// A follower takes no writes.
    ReadOnlyReplica,
    /// A master that lost its backup directory to another master.
    Fenced {
        /// The master that holds it now.
        by: String,
    },
    /// A master that has not renewed its lease on the backup store within
    /// its term: a promotion may replace it without what it acknowledges.
    LeaseExpired {
        /// Since the last renewal.
        since: std::time::Duration,
        /// `--lease-term`.
        term: std::time::Duration,
    },
    /// A follower takes no backups.
    NoBackupsHere,
    /// The backup that was waited for failed; the reason, when known.
    BackupFailed(Option<String>),
    /// The daemon is shutting down.
    ShuttingDown,
}

/// What `ROLE` reports, as facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The master.
    Master,
    /// A follower of `master_host`, at sequence number `offset`.
    Replica {
        /// The master's host, from the served backup.
        master_host: String,
        /// Whether it reads the backup store and serves data.
        connected: bool,
        /// The served sequence number.
        offset: u64,
    },
}

/// What a request for a backup now did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupRequest {
    /// A backup starts now.
    Started,
    /// One is running; another follows it.
    Scheduled,
}

/// What a daemon offers the commands, in its own terms: the server turns
/// every answer into a Redis reply.
pub trait Backend: Send + Sync + 'static {
    /// `master` or `slave`, for `INFO`.
    fn role_name(&self) -> &'static str;

    /// The database to read from, or why reads are refused.
    fn reader(&self) -> Result<Arc<Db>, Refusal>;

    /// The database being served, even while reads of it are refused: for
    /// figures about it (INFO's keyspace, metrics), not for answers.
    fn served(&self) -> Option<Arc<Db>>;

    /// The database to write to, or why writes are refused.
    fn writer(&self) -> Result<Arc<Db>, Refusal>;

    /// The facts behind `ROLE`.
    fn role(&self) -> Role;

    /// `BGSAVE`: start a backup now.
    fn request_backup(&self) -> Result<BackupRequest, Refusal>;

    /// `SAVE`: returns once a backup holds every write acknowledged before
    /// the call.
    fn backup_now(&self) -> Result<(), Refusal>;

    /// `LASTSAVE`: unix seconds of the last backup (made or applied).
    fn lastsave(&self) -> i64;

    /// What the daemon reports about itself (`INFO persistence` and
    /// `replication`).
    fn status(&self) -> crate::status::DaemonStatus;

    /// The position the served data holds: the master's sequence number of
    /// its newest write (0 before any data).
    fn position(&self) -> u64;

    /// How old the served data is (`None`: unknown, which is not fresh).
    fn staleness(&self) -> Option<Duration>;

    /// The clients waiting for [`Backend::position`] to move on, when it
    /// moves by itself (a follower's); `None` on a master, whose position
    /// moves only by its clients' writes.
    fn waiters(&self) -> Option<Arc<Waiters>> {
        None
    }
}

/// How the server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: Vec<ListenAddr>,
    /// Where to listen for TLS clients.
    pub tls_listen: Vec<ListenAddr>,
    /// The TLS certificate and what is asked of clients, when
    /// `tls_listen` is not empty.
    pub tls: Option<Arc<tls::Tls>>,
    /// Where to serve metrics and health, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Whether metrics are served over TLS, with `tls`.
    pub metrics_tls: bool,
    /// The default user's password (`--requirepass`), kept for reloads of
    /// the ACL file.
    pub requirepass: Option<Vec<u8>>,
    /// The ACL file (`--aclfile`): re-read on SIGHUP and `ACL LOAD`.
    pub aclfile: Option<std::path::PathBuf>,
    /// The users as loaded at start.
    pub users: users::Users,
    /// The most clients connected at once; more are answered with an error.
    pub max_clients: usize,
    /// Caps on one request.
    pub limits: Limits,
}

/// Counters for `INFO clients`, `INFO stats` and the metrics.
#[derive(Debug)]
pub struct Stats {
    /// Clients connected now.
    pub connected_clients: AtomicUsize,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections refused by `max_clients`.
    pub rejected_connections: AtomicU64,
    /// TLS clients closed by TLS: not TLS, a client certificate refused
    /// or missing, a broken record, or a handshake not finished in time.
    pub tls_refused: AtomicU64,
    /// Commands executed since start.
    pub total_commands: AtomicU64,
    /// Calls per command, in the command table's order, and last the calls
    /// of unknown commands: a label set bounded by the table.
    pub calls: Box<[AtomicU64]>,
    /// Commands answered with an error since start.
    pub command_errors: AtomicU64,
    /// Keys found, and not found, by reading commands (INFO's
    /// `keyspace_hits` and `keyspace_misses`).
    pub keyspace_hits: AtomicU64,
    /// Keys not found by reading commands.
    pub keyspace_misses: AtomicU64,
    /// Requests that waited for a position (`RKV.WAIT`, `RKV.READAFTER`).
    pub waits: AtomicU64,
    /// Of those, the ones whose time ran out.
    pub wait_timeouts: AtomicU64,
    /// Reads refused by a connection's `RKV.MAXSTALENESS`.
    pub reads_refused_bound: AtomicU64,
    /// Recent (time, commands processed) readings, for INFO's
    /// `instantaneous_ops_per_sec`.
    pub ops_samples: std::sync::Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            connected_clients: AtomicUsize::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            tls_refused: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            calls: (0..=commands::names().count())
                .map(|_| AtomicU64::new(0))
                .collect(),
            command_errors: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
            reads_refused_bound: AtomicU64::new(0),
            ops_samples: Default::default(),
        }
    }
}

impl Stats {
    /// Commands per second over about the last 1.6 s (Redis samples 16
    /// times 100 ms), read from the readings INFO leaves: when INFO is
    /// asked less often, over the time since the last reading.
    pub fn ops_per_sec(&self) -> f64 {
        const WINDOW: Duration = Duration::from_millis(1600);
        let (now, total) = (Instant::now(), self.total_commands.load(Ordering::Relaxed));
        let mut samples = self.ops_samples.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the newest reading older than the window, and those within.
        while samples.len() > 1 && now.duration_since(samples[1].0) >= WINDOW {
            samples.pop_front();
        }
        let rate = samples.front().map_or(0.0, |&(then, before)| {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                total.saturating_sub(before) as f64 / seconds
            } else {
                0.0
            }
        });
        if samples
            .back()
            .is_none_or(|&(last, _)| now.duration_since(last) >= WINDOW / 16)
        {
            samples.push_back((now, total));
        }
        rate
    }

    /// Calls per command name since start (`unknown` for commands rkv does
    /// not have), leaving out those never called.
    pub fn calls_by_command(&self) -> Vec<(&'static str, u64)> {
        commands::names()
            .chain(std::iter::once("unknown"))
            .zip(self.calls.iter())
            .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// State every connection shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) stats: Stats,
    pub(crate) started: Instant,
    pub(crate) cursors: commands::Cursors,
    /// Who watches which keys (`WATCH`).
    pub(crate) watches: watch::Watches,
    /// The clients waiting for a position; never woken on a master.
    pub(crate) waiters: Arc<Waiters>,
    /// Whether the served position moves by itself (a follower's), so a
    /// request may wait for it; asked once, at start.
    pub(crate) positions_move: bool,
    /// The users, replaced whole by a reload.
    pub(crate) users: arc_swap::ArcSwap<users::Users>,
    /// Moves on with each reload of the users: a connection whose user was
    /// looked up before looks it up again.
    pub(crate) users_version: AtomicU64,
    next_client_id: AtomicU64,
}

impl Shared {
    /// Re-reads the ACL file, if there is one (SIGHUP, `ACL LOAD`); on an
    /// error the users in use stay.
    pub(crate) fn reload_users(&self) -> Result<(), users::UsersError> {
        let Some(path) = &self.config.aclfile else {
            return Ok(());
        };
        let users = users::Users::load(Some(path), self.config.requirepass.as_deref())?;
        let count = users.iter().count();
        self.users.store(Arc::new(users));
        self.users_version.fetch_add(1, Ordering::SeqCst);
        tracing::info!(users = count, "reloaded the ACL file {}", path.display());
        Ok(())
    }

    /// What a metrics scrape reports.
    fn snapshot(&self) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot {
            status: self.backend.status(),
            clients: self.stats.connected_clients.load(Ordering::Relaxed) as u64,
            connections: self.stats.total_connections.load(Ordering::Relaxed),
            rejected: self.stats.rejected_connections.load(Ordering::Relaxed),
            tls_refused: self.stats.tls_refused.load(Ordering::Relaxed),
            commands: self.stats.total_commands.load(Ordering::Relaxed),
            calls: self.stats.calls_by_command(),
            command_errors: self.stats.command_errors.load(Ordering::Relaxed),
            freshness: crate::metrics::Freshness {
                waiting: self.waiters.parked() as u64,
                waits: self.stats.waits.load(Ordering::Relaxed),
                timeouts: self.stats.wait_timeouts.load(Ordering::Relaxed),
                refused: self.stats.reads_refused_bound.load(Ordering::Relaxed),
            },
            db: self.backend.served().map(|db| db.load_figures()),
        }
    }
}

/// A running server.
pub struct Server {
    local_addrs: Vec<ListenAddr>,
    tls_addrs: Vec<ListenAddr>,
    metrics: Option<crate::metrics::MetricsServer>,
    acceptors: Vec<JoinHandle<()>>,
    /// Stops the accept loops.
    stop: Stop,
    workers: Vec<worker::Handle>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every listen address and starts accepting clients.
    pub fn start(config: ServerConfig, backend: Arc<dyn Backend>) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push((Listener::bind(addr)?, false));
        }
        for addr in &config.tls_listen {
            listeners.push((Listener::bind(addr)?, true));
        }
        let bound = |tls: bool| {
            listeners
                .iter()
                .filter(|(_, is_tls)| *is_tls == tls)
                .map(|(listener, _)| listener.local_addr())
                .collect::<std::io::Result<Vec<_>>>()
        };
        let (local_addrs, tls_addrs) = (bound(false)?, bound(true)?);
        let (waiters, positions_move) = match backend.waiters() {
            Some(waiters) => (waiters, true),
            None => (Arc::default(), false),
        };
        let shared = Arc::new(Shared {
            users: arc_swap::ArcSwap::from_pointee(config.users.clone()),
            users_version: AtomicU64::new(0),
            config,
            waiters,
            positions_move,
            backend,
            stats: Stats::default(),
            started: Instant::now(),
            cursors: commands::Cursors::default(),
            watches: watch::Watches::default(),
            next_client_id: AtomicU64::new(1),
        });
        // One worker per core: the work is CPU (parsing, RocksDB reads from
        // cache) and the clients are spread over them.
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16));
        let workers: Vec<worker::Handle> = (0..count)
            .map(|i| worker::Handle::spawn(i, Arc::clone(&shared)))
            .collect::<std::io::Result<_>>()?;
        let senders: Arc<Vec<worker::Sender>> =
            Arc::new(workers.iter().map(worker::Handle::sender).collect());
        let stop = Stop::new();
        let acceptors = listeners
            .into_iter()
            .map(|(listener, tls)| {
                let acceptor = Acceptor::new(listener, tls, &stop)?;
                let shared = Arc::clone(&shared);
                let senders = Arc::clone(&senders);
                std::thread::Builder::new()
                    .name("rkv-accept".into())
                    .spawn(move || acceptor.run(&shared, &senders))
            })
            .collect::<std::io::Result<_>>()?;
        let metrics = match shared.config.metrics_listen {
            Some(addr) => {
                let tls = shared
                    .config
                    .tls
                    .clone()
                    .filter(|_| shared.config.metrics_tls);
                let shared = Arc::clone(&shared);
                let snapshot = Arc::new(move || shared.snapshot());
                Some(crate::metrics::MetricsServer::start(addr, snapshot, tls)?)
            }
            None => None,
        };
        Ok(Server {
            local_addrs,
            tls_addrs,
            metrics,
            acceptors,
            stop,
            workers,
            shared,
        })
    }

    /// Re-reads what may change while the daemon runs (SIGHUP): the ACL
    /// file, and the TLS certificate, key and CA. Open connections keep
    /// their TLS session; their users' new permissions apply from their
    /// next command, and a user removed or turned off is logged out. On an
    /// error what is in use stays in use, and the error says which file is
    /// wrong.
    pub fn reload(&self) -> Result<(), String> {
        let mut failed = Vec::new();
        if let Err(e) = self.shared.reload_users() {
            failed.push(e.to_string());
        }
        if let Some(tls) = &self.shared.config.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate, key and CA files"),
                Err(e) => failed.push(e.to_string()),
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(failed.join("; ")),
        }
    }

    /// The TLS addresses actually bound (`--tls-listen`).
    pub fn tls_addrs(&self) -> &[ListenAddr] {
        &self.tls_addrs
    }

    /// The addresses actually bound (with the real port when 0 was asked).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.local_addrs
    }

    /// Where metrics are served (with the real port when 0 was asked).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }

    /// Stops accepting, lets each client finish the requests it has sent
    /// and receive their replies, closes every connection, and waits up to
    /// `grace` for all that.
    pub fn shutdown(self, grace: Duration) {
        self.stop.stop();
        for acceptor in self.acceptors {
            let _ = acceptor.join();
        }
        let deadline = Instant::now() + grace;
        for worker in &self.workers {
            worker.stop(deadline);
        }
        for worker in self.workers {
            worker.join(deadline);
        }
        for addr in self.local_addrs.iter().chain(&self.tls_addrs) {
            if let ListenAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// One listener's accept loop: waits on the listener and on the server's
/// stop in one mio poll, and hands each client to the workers in turn.
struct Acceptor {
    listener: Listener,
    /// Whether its clients speak TLS.
    tls: bool,
    poll: mio::Poll,
    stop: Stop,
    /// Owned here as well as by the stop's hook, which is dropped once it
    /// ran: closing the waker's eventfd would take its pending wake-up off
    /// the poll before this thread saw it.
    _waker: Arc<mio::Waker>,
}

impl Acceptor {
    const LISTENER: mio::Token = mio::Token(0);
    const STOP: mio::Token = mio::Token(1);

    fn new(listener: Listener, tls: bool, stop: &Stop) -> std::io::Result<Acceptor> {
        use std::os::fd::AsRawFd;
        listener.set_nonblocking()?;
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            Self::LISTENER,
            mio::Interest::READABLE,
        )?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), Self::STOP)?);
        let wake = Arc::clone(&waker);
        stop.on_stop(move || {
            let _ = wake.wake();
        });
        Ok(Acceptor {
            listener,
            tls,
            poll,
            stop: stop.clone(),
            _waker: waker,
        })
    }

    /// Accepts until the stop.
    fn run(mut self, shared: &Shared, workers: &[worker::Sender]) {
        let mut events = mio::Events::with_capacity(4);
        let mut next = 0;
        // After a failed accept (EMFILE and friends), retried after a pause
        // instead of spinning; the poll's edge has passed, so the timeout
        // is what brings the retry.
        let mut pause = None;
        loop {
            if let Err(e) = self.poll.poll(&mut events, pause) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "the accept loop cannot wait for clients");
                    return;
                }
            }
            pause = None;
            // Edge-triggered: take every waiting client.
            while !self.stop.is_stopped() {
                match self.listener.accept() {
                    Ok(stream) => {
                        admit(stream, self.tls, shared, &workers[next % workers.len()]);
                        next += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                        ) => {}
                    Err(e) => {
                        tracing::warn!(listener = %self.listener.describe(), error = %e, "accept failed");
                        pause = Some(Duration::from_millis(100));
                        break;
                    }
                }
            }
            if self.stop.is_stopped() {
                return;
            }
        }
    }
}

/// Gives a new client to `worker`, or turns it away when the server is full.
fn admit(mut stream: Stream, tls: bool, shared: &Shared, worker: &worker::Sender) {
    let stats = &shared.stats;
    stats.total_connections.fetch_add(1, Ordering::Relaxed);
    if stats.connected_clients.load(Ordering::SeqCst) >= shared.config.max_clients {
        stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
        // A TLS client could not read the error before a handshake, which
        // a full server does not spend: it is only closed.
        if !tls {
            let mut out = Vec::new();
            Reply::error("ERR max number of clients reached").encode(&mut out);
            let _ = stream.write_all(&out);
        }
        return;
    }
    stats.connected_clients.fetch_add(1, Ordering::SeqCst);
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = worker.send(id, stream, tls) {
        tracing::warn!(error = %e, "cannot hand a new client to a worker");
        stats.connected_clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Per-connection state the commands see.
pub(crate) struct Connection {
    pub(crate) id: u64,
    /// Logged in: `user` says as whom.
    pub(crate) authenticated: bool,
    /// The user it is logged in as.
    pub(crate) user: Option<Arc<users::User>>,
    /// [`Shared::users_version`] when `user` was looked up.
    pub(crate) users_version: u64,
    pub(crate) name: Option<Vec<u8>>,
    /// RESP2, or RESP3 after `HELLO 3`.
    pub(crate) protocol: crate::resp::Protocol,
    /// Between `MULTI` and `EXEC`: the queued commands.
    pub(crate) multi: Option<commands::Multi>,
    /// The keys `WATCH`ed since the last `EXEC`, `DISCARD` or `UNWATCH`.
    pub(crate) watching: Option<commands::Watching>,
    /// On a master: the position this connection's last write reached.
    pub(crate) last_write: Option<u64>,
    /// `RKV.READAFTER`: every read waits for this position first, for at
    /// most this long.
    pub(crate) read_after: Option<(u64, Duration)>,
    /// `RKV.MAXSTALENESS`: reads are refused when the data is older.
    pub(crate) max_staleness: Option<Duration>,
}
