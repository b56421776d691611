//! The RESP server both daemons share: listeners (TCP and Unix sockets), one
//! thread per client, pipelined requests answered in order, the client and
//! request-size caps, `AUTH`, and a shutdown that stops accepting and lets
//! requests in flight finish.
//!
//! What the commands act on is the daemon's business: it hands the server a
//! [`Backend`], and [`commands`] maps each request onto it.

pub mod commands;
mod listen;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::Db;
use crate::resp::{self, Limits, Reply};

pub use listen::{ListenAddr, Listener, Stream};

/// What a daemon offers the commands.
pub trait Backend: Send + Sync + 'static {
    /// `master` or `slave`, for `INFO` and error texts.
    fn role_name(&self) -> &'static str;

    /// The database to read from, or the error reply that refuses reads
    /// (`-MASTERDOWN` on a follower whose data is too stale).
    fn reader(&self) -> Result<Arc<Db>, Reply>;

    /// The database to write to, or the error reply that refuses writes
    /// (`-READONLY` on a follower).
    fn writer(&self) -> Result<Arc<Db>, Reply>;

    /// Serialises read-modify-write commands (`SET … NX`, `DEL` counting).
    fn write_lock(&self) -> &Mutex<()>;

    /// The reply to `ROLE`.
    fn role(&self) -> Reply;

    /// `BGSAVE`: start a backup now; the reply says what happened.
    fn bgsave(&self) -> Reply;

    /// `SAVE`: take a backup now and return once it is done.
    fn save(&self) -> Reply;

    /// `LASTSAVE`: unix seconds of the last backup (made or applied).
    fn lastsave(&self) -> i64;

    /// Daemon-specific `INFO` sections (`persistence`, `replication`, …),
    /// each a name and its `field:value` lines.
    fn info_sections(&self) -> Vec<(&'static str, Vec<(String, String)>)>;
}

/// How the server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: Vec<ListenAddr>,
    /// The password clients must `AUTH` with; `None` for no authentication.
    pub password: Option<Vec<u8>>,
    /// The most clients connected at once; more are answered with an error.
    pub max_clients: usize,
    /// Caps on one request.
    pub limits: Limits,
}

/// Counters for `INFO clients` and `INFO stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub connected_clients: AtomicUsize,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections refused by `max_clients`.
    pub rejected_connections: AtomicU64,
    /// Commands executed since start.
    pub total_commands: AtomicU64,
}

/// State every connection shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) stats: Stats,
    pub(crate) started: Instant,
    pub(crate) cursors: commands::Cursors,
    shutting_down: AtomicBool,
    /// Open client sockets, so shutdown can end their idle reads.
    clients: Mutex<Vec<(u64, Stream)>>,
    next_client_id: AtomicU64,
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    local_addrs: Vec<ListenAddr>,
    acceptors: Vec<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Binds every listen address and starts accepting clients.
    pub fn start(config: ServerConfig, backend: Arc<dyn Backend>) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(Listener::bind(addr)?);
        }
        let local_addrs = listeners
            .iter()
            .map(Listener::local_addr)
            .collect::<Result<_, _>>()?;
        let shared = Arc::new(Shared {
            config,
            backend,
            stats: Stats::default(),
            started: Instant::now(),
            cursors: commands::Cursors::default(),
            shutting_down: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            next_client_id: AtomicU64::new(1),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptors = listeners
            .into_iter()
            .map(|listener| {
                let shared = Arc::clone(&shared);
                let connections = Arc::clone(&connections);
                std::thread::Builder::new()
                    .name("rkv-accept".into())
                    .spawn(move || accept_loop(listener, shared, connections))
                    .expect("spawn accept thread")
            })
            .collect();
        Ok(Server {
            shared,
            local_addrs,
            acceptors,
            connections,
        })
    }

    /// The addresses actually bound (with the real port when 0 was asked).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.local_addrs
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Stops accepting, lets each client finish the requests it has sent,
    /// closes every connection, and waits up to `grace` for all that.
    pub fn shutdown(self, grace: Duration) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for addr in &self.local_addrs {
            listen::wake(addr);
        }
        for acceptor in self.acceptors {
            let _ = acceptor.join();
        }
        // Idle clients are blocked reading: end their reads. A client in the
        // middle of a request finishes it, writes its replies, then sees EOF.
        for (_, stream) in self.shared.clients.lock().unwrap().iter() {
            stream.shutdown_read();
        }
        let deadline = Instant::now() + grace;
        let handles = std::mem::take(&mut *self.connections.lock().unwrap());
        for handle in handles {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        if let Some(ListenAddr::Unix(path)) = self.local_addrs.iter().find(|a| a.is_unix()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(e) => {
                if shared.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept on {}: {e}", listener.describe());
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let stats = &shared.stats;
        stats.total_connections.fetch_add(1, Ordering::Relaxed);
        if stats.connected_clients.load(Ordering::SeqCst) >= shared.config.max_clients {
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream;
            let mut out = Vec::new();
            Reply::error("ERR max number of clients reached").encode(&mut out);
            let _ = stream.write_all(&out);
            continue;
        }
        stats.connected_clients.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.clients.lock().unwrap().push((id, clone));
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("rkv-client-{id}"))
            .spawn(move || {
                serve_client(stream, id, &conn_shared);
                conn_shared
                    .clients
                    .lock()
                    .unwrap()
                    .retain(|(cid, _)| *cid != id);
                conn_shared
                    .stats
                    .connected_clients
                    .fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => {
                let mut all = connections.lock().unwrap();
                all.retain(|h| !h.is_finished());
                all.push(handle);
            }
            Err(e) => {
                tracing::warn!("cannot start a thread for a new client: {e}");
                shared.clients.lock().unwrap().retain(|(cid, _)| *cid != id);
                shared
                    .stats
                    .connected_clients
                    .fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Per-connection state the commands see.
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) authenticated: bool,
    pub(crate) name: Option<Vec<u8>>,
}

/// Reads requests, answers them in order, until the client leaves, sends a
/// request that cannot be framed, or the server shuts down.
fn serve_client(mut stream: Stream, id: u64, shared: &Shared) {
    let mut conn = Connection {
        id,
        authenticated: shared.config.password.is_none(),
        name: None,
    };
    let limits = shared.config.limits;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut start = 0; // first unparsed byte of `buf`
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Answer every complete request already buffered, then write the
        // replies in one go: that is what makes pipelining cheap.
        let mut close = false;
        // Consecutive plain SETs of a pipeline go to RocksDB as one write
        // batch (one WAL append): a bulk load costs a write per batch, not
        // per key. Any other command first flushes them, so order holds.
        let mut sets = commands::SetBatch::default();
        loop {
            match resp::parse_request(&buf[start..], &limits) {
                Ok(Some((args, used))) => {
                    start += used;
                    if args.is_empty() {
                        continue;
                    }
                    shared.stats.total_commands.fetch_add(1, Ordering::Relaxed);
                    if conn.authenticated && commands::SetBatch::accepts(&args) {
                        sets.push(args);
                        continue;
                    }
                    sets.flush(shared, &mut out);
                    let (reply, action) = commands::execute(&args, &mut conn, shared);
                    reply.encode(&mut out);
                    if action == commands::Action::Close {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("client {id}: protocol error: {}", e.0);
                    sets.flush(shared, &mut out);
                    e.reply().encode(&mut out);
                    close = true;
                    break;
                }
            }
        }
        sets.flush(shared, &mut out);
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            linger(&mut stream, &mut chunk);
            return;
        }
        if start == buf.len() {
            buf.clear();
            start = 0;
        } else if start > 0 && start >= buf.len() / 2 {
            buf.drain(..start);
            start = 0;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Before closing on a client, signals EOF and reads (briefly) what it is
/// still sending: closing with unread input makes the kernel reset the
/// connection, and the client would lose the error reply it was sent.
fn linger(stream: &mut Stream, chunk: &mut [u8]) {
    stream.shutdown_write();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match stream.read(chunk) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
