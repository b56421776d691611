//! One event-loop worker: owns some client connections, waits on them with
//! epoll (mio, edge-triggered), reads what arrives, answers every complete
//! request in order, and writes the replies without blocking. A client that
//! stops reading its replies stops being read (its output is capped), so no
//! client can make the server buffer without bound.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::commands::{self, Action, Members, WriteGroup};
use super::tls::TlsStream;
use super::{Connection, Shared, Stream, Wait};
use crate::resp;

const WAKER: Token = Token(usize::MAX);
/// Replies buffered for one client before its input is left unread.
const OUTPUT_CAP: usize = 16 << 20;
/// How long a client that sent an unparseable request may keep sending
/// before it is cut off (see [`State::Lingering`]).
const LINGER: Duration = Duration::from_secs(2);
/// How long a TLS client has to finish its handshake: one that connects
/// and says nothing holds no connection slot for longer.
const HANDSHAKE: Duration = Duration::from_secs(10);

enum Message {
    /// A new client, and whether it speaks TLS.
    Client(u64, Stream, bool),
    Stop(Instant),
}

/// Hands clients to a worker.
#[derive(Clone)]
pub(super) struct Sender {
    tx: mpsc::Sender<Message>,
    waker: Arc<Waker>,
}

impl Sender {
    /// Gives the worker a new client.
    pub(super) fn send(&self, id: u64, stream: Stream, tls: bool) -> io::Result<()> {
        self.tx
            .send(Message::Client(id, stream, tls))
            .map_err(|_| io::Error::other("the worker has stopped"))?;
        self.waker.wake()
    }
}

/// A running worker.
pub(super) struct Handle {
    sender: Sender,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends, however it ends.
    finished: mpsc::Receiver<()>,
}

impl Handle {
    /// Starts worker number `index`.
    pub(super) fn spawn(index: usize, shared: Arc<Shared>) -> io::Result<Handle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // Woken too when the served data moves on while a client waits.
        shared.waiters.register(Arc::clone(&waker));
        let (tx, rx) = mpsc::channel();
        let (finishing, finished) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("rkv-worker-{index}"))
            .spawn(move || {
                let _finishing = finishing;
                Worker {
                    poll,
                    rx,
                    shared,
                    clients: HashMap::new(),
                    parked: ParkedSet::default(),
                    group: WriteGroup::default(),
                    held: Vec::new(),
                    cut_off: BTreeSet::new(),
                    next_token: 0,
                    chunk: vec![0u8; 64 * 1024],
                }
                .run()
            })?;
        Ok(Handle {
            sender: Sender { tx, waker },
            thread,
            finished,
        })
    }

    pub(super) fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Asks the worker to finish: close idle clients now, the others once
    /// their replies are out, all of them at `deadline`.
    pub(super) fn stop(&self, deadline: Instant) {
        let _ = self.sender.tx.send(Message::Stop(deadline));
        let _ = self.sender.waker.wake();
    }

    /// Waits for the worker until `deadline`.
    pub(super) fn join(self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Disconnected) = self.finished.recv_timeout(left) {
            let _ = self.thread.join();
        }
    }
}

struct Worker {
    poll: Poll,
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
    clients: HashMap<usize, Client>,
    /// The clients whose request waits for a position.
    parked: ParkedSet,
    /// The write commands of this turn of the loop, written together
    /// once every ready client has been read (see [`WriteGroup`]).
    group: WriteGroup,
    /// Clients that stopped at a request until the group is written.
    held: Vec<usize>,
    /// The clients closed at a deadline, by when: lingering ones (see
    /// [`State::Lingering`]) and TLS clients in their handshake. The loop
    /// looks at these, not at every client.
    cut_off: BTreeSet<(Instant, usize)>,
    next_token: usize,
    /// Scratch space for reads, shared by the worker's clients.
    chunk: Vec<u8>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut stop_at: Option<Instant> = None;
        loop {
            let mut timeout = stop_at.is_some().then_some(Duration::from_millis(50));
            if let Some(&(at, _)) = self.cut_off.first() {
                let left = at.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            let next_deadline = self.next_deadline();
            if let Some(deadline) = next_deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("a server worker cannot wait for clients: {e}");
                    return;
                }
            }
            let mut woken = next_deadline.is_some_and(|d| Instant::now() >= d);
            for event in events.iter() {
                if event.token() == WAKER {
                    woken = true;
                    while let Ok(message) = self.rx.try_recv() {
                        match message {
                            Message::Client(id, stream, tls) => self.add(id, stream, tls),
                            Message::Stop(deadline) => stop_at = Some(deadline),
                        }
                    }
                    continue;
                }
                let token = event.token().0;
                let Some(client) = self.clients.get_mut(&token) else {
                    continue;
                };
                // A waiting client is not read, so its leaving shows here:
                // it is let go at once, not when its wait ends.
                if client.parked.is_some() && (event.is_read_closed() || event.is_error()) {
                    self.close(token);
                    continue;
                }
                // The peer's end of input shows in the event, not after it.
                if event.is_read_closed() {
                    client.peer_closed = true;
                }
                client.serve(&self.shared, &mut self.chunk, &mut self.group, token);
                self.settle(token);
            }
            self.write_group();
            if woken && !self.parked.is_empty() {
                self.wake_parked();
            }
            let now = Instant::now();
            while self.cut_off.first().is_some_and(|&(at, _)| at <= now) {
                if let Some((_, token)) = self.cut_off.pop_first() {
                    if let Some(client) = self.clients.get(&token) {
                        if client.handshake_until.is_some() {
                            client.span.in_scope(|| {
                                tracing::info!(
                                    "closing a TLS client: no handshake within {HANDSHAKE:?}"
                                )
                            });
                            self.shared
                                .stats
                                .tls_refused
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.close(token);
                }
            }
            if let Some(deadline) = stop_at {
                // Idle clients go now; those with replies on the way, once
                // the replies are out; everyone at the deadline.
                let done: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| now >= deadline || (c.out.is_empty() && !c.stream.pending()))
                    .map(|(t, _)| *t)
                    .collect();
                for token in done {
                    self.close(token);
                }
                if self.clients.is_empty() {
                    return;
                }
            }
        }
    }

    fn add(&mut self, id: u64, stream: Stream, tls: bool) {
        let token = self.next_token;
        self.next_token = (self.next_token + 1) % (usize::MAX - 1);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let ready = NonBlocking::from_std(stream).and_then(|mut stream| {
            stream.register(registry, Token(token), interest)?;
            if !tls {
                return Ok(Wire::Plain(stream));
            }
            // Never plain on a TLS listener.
            let config =
                self.shared.config.tls.as_ref().ok_or_else(|| {
                    io::Error::other("a TLS listener without a TLS configuration")
                })?;
            Ok(Wire::Tls(Box::new(TlsStream::new(
                stream,
                config.session()?,
            ))))
        });
        let stream = match ready {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(client = id, error = %e, "cannot set up a client's socket");
                let stats = &self.shared.stats;
                stats.connected_clients.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        // What is logged while serving this client carries its id and
        // address (`--log-format json`: `.span.client`, `.span.addr`).
        let span = tracing::info_span!("client", client = id, addr = %stream.socket().peer());
        let handshake_until = tls.then(|| Instant::now() + HANDSHAKE);
        // Read before the users: a reload in between is seen at the first
        // command.
        let users_version = self.shared.users_version.load(Ordering::SeqCst);
        let user = self.shared.users.load().at_connect();
        if let Some(at) = handshake_until {
            self.cut_off.insert((at, token));
        }
        let client = Client {
            handshake_until,
            span,
            stream,
            conn: Connection {
                id,
                authenticated: user.is_some(),
                user,
                users_version,
                name: None,
                protocol: crate::resp::Protocol::default(),
                multi: None,
                watching: None,
                last_write: None,
                read_after: None,
                max_staleness: None,
            },
            buf: Vec::new(),
            start: 0,
            parser: resp::RequestParser::default(),
            out: Vec::new(),
            written: 0,
            state: State::Open,
            eof: false,
            broken: false,
            paused: false,
            parked: None,
            in_group: false,
            next: None,
            drained: false,
            peer_closed: false,
            write_shut: false,
        };
        self.clients.insert(token, client);
        // Bytes may have arrived before the registration: read them now.
        if let Some(client) = self.clients.get_mut(&token) {
            client.serve(&self.shared, &mut self.chunk, &mut self.group, token);
            self.settle(token);
        }
        self.write_group();
    }

    /// Writes the group of this turn's write commands, hands each client
    /// its replies, and goes on with the clients that stopped for it
    /// (which may make a new group, written in turn).
    fn write_group(&mut self) {
        while !self.group.is_empty() || !self.held.is_empty() {
            let owners = self.group.flush(&self.shared, &mut self.clients);
            let mut again = std::mem::take(&mut self.held);
            again.extend(owners);
            again.sort_unstable();
            again.dedup();
            for token in again {
                let Some(client) = self.clients.get_mut(&token) else {
                    continue;
                };
                client.in_group = false;
                client.carry_on(&self.shared, &mut self.chunk, &mut self.group, token);
                if client.next.is_some() {
                    self.held.push(token);
                }
                self.settle(token);
            }
        }
    }

    /// After serving a client: closes it when it is done, and notes
    /// whether it waits.
    fn settle(&mut self, token: usize) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.next.is_some() && !client.in_group && !self.held.contains(&token) {
            // Stopped for a full group it has no command in.
            self.held.push(token);
        }
        if let State::Lingering(until) = client.state {
            self.cut_off.insert((until, token));
        }
        if !client.stream.handshaking() {
            if let Some(at) = client.handshake_until.take() {
                self.cut_off.remove(&(at, token));
            }
        }
        if client.finished() {
            self.close(token);
        } else {
            let waits = client.parked.as_ref().map(|p| p.wait.deadline);
            self.parked.note(token, waits);
        }
    }

    /// The nearest time a waiting client's wait runs out.
    fn next_deadline(&self) -> Option<Instant> {
        self.parked.deadlines.first().map(|(at, _)| *at)
    }

    /// Answers the waiting clients whose position is reached or whose time
    /// is up, and goes on with what they sent after.
    fn wake_parked(&mut self) {
        let now = Instant::now();
        let tokens: Vec<usize> = self.parked.deadline_of.keys().copied().collect();
        for token in tokens {
            let Some(client) = self.clients.get_mut(&token) else {
                self.parked.note(token, None);
                continue;
            };
            if client.resume(&self.shared, now) {
                client.answer(&self.shared, &mut self.group, token);
                client.serve(&self.shared, &mut self.chunk, &mut self.group, token);
            }
            self.settle(token);
        }
        self.write_group();
    }

    fn close(&mut self, token: usize) {
        self.parked.note(token, None);
        if let Some(mut client) = self.clients.remove(&token) {
            if let State::Lingering(until) = client.state {
                self.cut_off.remove(&(until, token));
            }
            if let Some(at) = client.handshake_until {
                self.cut_off.remove(&(at, token));
            }
            if !client.broken {
                // TLS's close_notify, as far as the socket takes it.
                client.stream.close();
                let _ = client.stream.send_pending();
            }
            if client.parked.take().is_some() {
                self.shared.waiters.unpark();
            }
            let _ = client.stream.socket_mut().deregister(self.poll.registry());
            self.shared.cursors.release(client.conn.id);
            commands::unwatch(&mut client.conn, &self.shared);
            self.shared
                .stats
                .connected_clients
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests are read and answered.
    Open,
    /// `QUIT`: the replies go out, then the connection closes.
    Closing,
    /// After a request that cannot be framed: the error goes out, writing is
    /// shut, and what the client still sends is read and dropped until it
    /// closes or the time is up. Closing with unread input would make the
    /// kernel reset the connection, and the client would lose the error.
    Lingering(Instant),
}

/// A worker's waiting clients, and when their waits run out.
#[derive(Default)]
struct ParkedSet {
    /// Each waiting client's deadline (`None`: none).
    deadline_of: HashMap<usize, Option<Instant>>,
    /// The deadlines, nearest first.
    deadlines: BTreeSet<(Instant, usize)>,
}

impl ParkedSet {
    /// Records that client `token` waits until `waits` (`Some(None)`: with
    /// no deadline), or does not wait (`None`).
    fn note(&mut self, token: usize, waits: Option<Option<Instant>>) {
        let before = self.deadline_of.get(&token).copied();
        if before == waits {
            return;
        }
        if let Some(Some(at)) = before {
            self.deadlines.remove(&(at, token));
        }
        match waits {
            Some(deadline) => {
                self.deadline_of.insert(token, deadline);
                if let Some(at) = deadline {
                    self.deadlines.insert((at, token));
                }
            }
            None => {
                self.deadline_of.remove(&token);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.deadline_of.is_empty()
    }
}

/// A request that waits for a position, kept until it can run.
struct Parked {
    request: Vec<Vec<u8>>,
    found: Option<usize>,
    wait: Wait,
}

struct Client {
    span: tracing::Span,
    stream: Wire,
    /// A TLS client in its handshake: when it is cut off.
    handshake_until: Option<Instant>,
    conn: Connection,
    /// Bytes read; `buf[start..]` is not parsed yet.
    buf: Vec<u8>,
    start: usize,
    /// Keeps a partly received request's arguments between reads.
    parser: resp::RequestParser,
    /// Replies; `out[written..]` is not sent yet.
    out: Vec<u8>,
    written: usize,
    state: State,
    /// The client shut its side: answer what it sent, then close.
    eof: bool,
    /// The socket failed: close now.
    broken: bool,
    /// Output is over the cap: input waits until it drains.
    paused: bool,
    /// A request waits for a position: nothing after it is read or
    /// answered until it has run.
    parked: Option<Parked>,
    /// Write commands of this client wait in the worker's group: its
    /// replies come once the group is written.
    in_group: bool,
    /// What the client sent next, kept until the worker's group is
    /// written: a command that cannot join it (its replies must follow
    /// the group's), or one that found the group full.
    next: Option<Next>,
    /// The last read emptied the socket: nothing to read until the next
    /// readiness event.
    drained: bool,
    /// The peer shut its side (the event said so): read on to the end of
    /// input, past a short read, as no later event will come for it.
    peer_closed: bool,
    write_shut: bool,
}

/// A request read but not yet run (see [`Client::next`]).
enum Next {
    Request(Vec<Vec<u8>>, Option<usize>),
    Malformed(resp::ProtocolError),
}

impl Members for HashMap<usize, Client> {
    fn member(&mut self, owner: usize) -> Option<(&mut super::Connection, &mut Vec<u8>)> {
        self.get_mut(&owner).map(|c| (&mut c.conn, &mut c.out))
    }
}

impl Client {
    /// Runs `work` inside the client's span (moved out and back, so
    /// entering it costs no reference count).
    fn in_span(&mut self, work: impl FnOnce(&mut Client)) {
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        span.in_scope(|| work(self));
        self.span = span;
    }

    /// After a readiness event: [`Client::on_ready`].
    fn serve(&mut self, shared: &Shared, chunk: &mut [u8], group: &mut WriteGroup, token: usize) {
        self.drained = false;
        self.in_span(|client| client.on_ready(shared, chunk, group, token));
    }

    /// After the worker's group is written: answers what waited for it,
    /// then goes on reading, unless the socket was found empty already.
    fn carry_on(
        &mut self,
        shared: &Shared,
        chunk: &mut [u8],
        group: &mut WriteGroup,
        token: usize,
    ) {
        self.in_span(|client| {
            if client.next.is_some() {
                client.answer(shared, group, token);
            }
            client.on_ready(shared, chunk, group, token);
        });
    }

    /// Reads, answers and writes as far as the socket allows.
    fn on_ready(
        &mut self,
        shared: &Shared,
        chunk: &mut [u8],
        group: &mut WriteGroup,
        token: usize,
    ) {
        loop {
            self.read(shared, chunk, group, token);
            self.write();
            // Output drained below the cap while input was waiting: an
            // edge-triggered socket will not say again that it is readable.
            if self.paused && self.out.len() - self.written < OUTPUT_CAP / 2 && !self.broken {
                self.paused = false;
                // Requests already buffered come first.
                if matches!(self.state, State::Open) {
                    self.answer(shared, group, token);
                }
                continue;
            }
            return;
        }
    }

    fn read(&mut self, shared: &Shared, chunk: &mut [u8], group: &mut WriteGroup, token: usize) {
        while !self.paused
            && self.parked.is_none()
            && self.next.is_none()
            && !self.drained
            && !self.eof
            && !self.broken
        {
            match self.stream.read(chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    if matches!(self.state, State::Open) {
                        self.buf.extend_from_slice(&chunk[..n]);
                        self.answer(shared, group, token);
                    }
                    // A read shorter than the chunk emptied the socket: a
                    // second would only say WouldBlock, one system call per
                    // request for nothing. Bytes that arrive later bring a
                    // new edge (epoll reports every arrival), as tokio
                    // relies on too; but an end of input that arrived with
                    // the bytes brings none, so then the reading goes on.
                    self.drained =
                        n < chunk.len() && !self.peer_closed && self.stream.short_read_drains();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        // TLS refused it: not TLS, a certificate the CA did
                        // not sign, none where one is required…
                        tracing::info!(error = %e, "closing a TLS client");
                        shared.stats.tls_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    self.broken = true;
                }
            }
        }
    }

    /// Answers every complete request in the buffer, adding write
    /// commands to the worker's `group`; stops at a request that must wait
    /// for the group to be written (kept in [`Client::next`]).
    fn answer(&mut self, shared: &Shared, group: &mut WriteGroup, token: usize) {
        let limits = shared.config.limits;
        while matches!(self.state, State::Open) && self.parked.is_none() {
            let (args, found) = match self.next.take() {
                Some(Next::Request(args, found)) => (args, found),
                Some(Next::Malformed(e)) => {
                    self.malformed(e);
                    break;
                }
                None => {
                    let authenticated = self.conn.authenticated;
                    match self
                        .parser
                        .parse(&self.buf[self.start..], &limits, authenticated)
                    {
                        Ok(Some((args, used))) => {
                            self.start += used;
                            if args.is_empty() {
                                continue;
                            }
                            shared.stats.total_commands.fetch_add(1, Ordering::Relaxed);
                            // The command is looked up once, here.
                            let found = commands::slot_of(&args[0]);
                            commands::refresh_user(&mut self.conn, shared);
                            (args, found)
                        }
                        Ok(None) => break,
                        Err(e) if self.in_group => {
                            self.next = Some(Next::Malformed(e));
                            break;
                        }
                        Err(e) => {
                            self.malformed(e);
                            break;
                        }
                    }
                }
            };
            if let Some(slot) = found.filter(|_| WriteGroup::accepts(&args, found, &self.conn)) {
                if group.is_full() {
                    self.next = Some(Next::Request(args, found));
                    break;
                }
                group.push(token, args, slot);
                self.in_group = true;
                continue;
            }
            if self.in_group {
                // Its reply must follow those of the writes before it.
                self.next = Some(Next::Request(args, found));
                break;
            }
            if let Some(wait) = commands::must_wait(&args, found, &self.conn, shared) {
                // Counted before the last look, so an advance between the
                // two still wakes this worker.
                shared.waiters.park();
                if shared.backend.position() < wait.position {
                    shared.stats.waits.fetch_add(1, Ordering::Relaxed);
                    self.parked = Some(Parked {
                        request: args,
                        found,
                        wait,
                    });
                    break;
                }
                shared.waiters.unpark();
            }
            let (reply, action) = commands::execute(&args, found, &mut self.conn, shared);
            reply.encode_as(&mut self.out, self.conn.protocol);
            if action == Action::Close {
                self.state = State::Closing;
            }
            if self.out.len() - self.written >= OUTPUT_CAP {
                self.paused = true;
                break;
            }
        }
        // Keep the unparsed tail only.
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// After a request that cannot be framed: the error, then the
    /// connection lingers (see [`State::Lingering`]).
    fn malformed(&mut self, e: resp::ProtocolError) {
        tracing::debug!(error = %e.0, "protocol error");
        e.reply().encode(&mut self.out);
        self.state = State::Lingering(Instant::now() + LINGER);
    }

    /// Runs the waiting request once its position is reached, or answers
    /// that its time ran out; whether it did either.
    fn resume(&mut self, shared: &Shared, now: Instant) -> bool {
        let Some(parked) = &self.parked else {
            return false;
        };
        let reached = shared.backend.position() >= parked.wait.position;
        if !reached && parked.wait.deadline.is_none_or(|d| now < d) {
            return false;
        }
        let parked = self.parked.take().expect("checked above");
        shared.waiters.unpark();
        let reply = if reached {
            let (reply, action) =
                commands::execute(&parked.request, parked.found, &mut self.conn, shared);
            if action == Action::Close {
                self.state = State::Closing;
            }
            reply
        } else {
            commands::timed_out(&parked.wait, shared)
        };
        reply.encode_as(&mut self.out, self.conn.protocol);
        true
    }

    fn write(&mut self) {
        while self.written < self.out.len() && !self.broken {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => self.broken = true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
        self.out.clear();
        self.written = 0;
        if matches!(self.state, State::Lingering(_)) && !self.write_shut && !self.broken {
            // The error, then TLS's close_notify, then the socket's end.
            self.stream.close();
        }
        // TLS bytes the socket did not take yet (the session holds a few).
        match self.stream.send_pending() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.broken = true;
                return;
            }
        }
        if matches!(self.state, State::Lingering(_)) && !self.write_shut {
            self.stream.socket().shutdown(Shutdown::Write);
            self.write_shut = true;
        }
        if matches!(self.state, State::Lingering(_)) && !self.eof && !self.broken {
            // Drop what the client still sends.
            let mut sink = [0u8; 4096];
            loop {
                match self.stream.socket_mut().read(&mut sink) {
                    Ok(0) => {
                        self.eof = true;
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                }
            }
        }
    }

    /// Whether the connection can be closed.
    fn finished(&self) -> bool {
        if self.in_group || self.next.is_some() {
            // Its writes are not done: the group answers it first.
            return false;
        }
        let sent = self.written >= self.out.len() && !self.stream.pending();
        self.broken || (sent && self.state == State::Closing) || (sent && self.eof)
    }
}

/// A client's connection: its socket, or a TLS session over it.
enum Wire {
    Plain(NonBlocking),
    Tls(Box<TlsStream<NonBlocking>>),
}

impl Wire {
    fn socket(&self) -> &NonBlocking {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(s) => s.socket(),
        }
    }

    fn socket_mut(&mut self) -> &mut NonBlocking {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(s) => s.socket_mut(),
        }
    }

    /// Whether a read shorter than asked emptied the socket. Not so under
    /// TLS: the records read may leave more in the socket.
    fn short_read_drains(&self) -> bool {
        matches!(self, Wire::Plain(_))
    }

    fn handshaking(&self) -> bool {
        matches!(self, Wire::Tls(s) if s.handshaking())
    }

    /// Whether TLS bytes wait for the socket.
    fn pending(&self) -> bool {
        matches!(self, Wire::Tls(s) if s.pending())
    }

    /// Sends the TLS bytes that wait; `WouldBlock` when some still do.
    fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(s) => s.send_pending(),
        }
    }

    /// Ends a TLS session (close_notify, sent with what waits).
    fn close(&mut self) {
        if let Wire::Tls(s) = self {
            s.close();
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client socket in non-blocking mode, registered with mio.
enum NonBlocking {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl NonBlocking {
    fn from_std(stream: Stream) -> io::Result<NonBlocking> {
        Ok(match stream {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                NonBlocking::Tcp(mio::net::TcpStream::from_std(s))
            }
            Stream::Unix(s) => {
                s.set_nonblocking(true)?;
                NonBlocking::Unix(mio::net::UnixStream::from_std(s))
            }
        })
    }

    /// The client's address, for the logs.
    fn peer(&self) -> String {
        match self {
            NonBlocking::Tcp(s) => s.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            NonBlocking::Unix(_) => "unix".into(),
        }
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            NonBlocking::Tcp(s) => s.shutdown(how),
            NonBlocking::Unix(s) => s.shutdown(how),
        };
    }
}

impl Read for NonBlocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NonBlocking::Tcp(s) => s.read(buf),
            NonBlocking::Unix(s) => s.read(buf),
        }
    }
}

impl Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            NonBlocking::Tcp(s) => s.write(buf),
            NonBlocking::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for NonBlocking {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            NonBlocking::Tcp(s) => s.register(registry, token, interests),
            NonBlocking::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            NonBlocking::Tcp(s) => s.reregister(registry, token, interests),
            NonBlocking::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            NonBlocking::Tcp(s) => s.deregister(registry),
            NonBlocking::Unix(s) => s.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parked_set_keeps_one_deadline_per_client_nearest_first() {
        let mut set = ParkedSet::default();
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_secs(1), now + Duration::from_secs(5));
        set.note(1, Some(Some(later)));
        set.note(2, Some(Some(soon)));
        set.note(3, Some(None));
        assert_eq!(set.deadlines.first(), Some(&(soon, 2)));
        // Noted again with the same deadline: still once.
        set.note(2, Some(Some(soon)));
        assert_eq!(set.deadlines.len(), 2);
        // A client that parks again with a new deadline moves.
        set.note(2, Some(Some(later + Duration::from_secs(1))));
        assert_eq!(set.deadlines.first(), Some(&(later, 1)));
        // Clients that stop waiting leave no trace.
        for token in [1, 2, 3] {
            set.note(token, None);
        }
        assert!(set.is_empty() && set.deadlines.is_empty());
    }
}
