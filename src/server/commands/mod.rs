//! The commands: each request is checked against the command table (name,
//! arity, flags), authenticated, and handed to its handler. A command is one
//! table entry and one function, in the file of its family:
//! [`connection`] (AUTH, PING, CLIENT, COMMAND, MULTI…), [`server`] (INFO,
//! ROLE, SAVE…), [`strings`] (GET, SET, INCR, APPEND, LCS, DEL…),
//! [`expire`] (EXPIRE, TTL, PERSIST…) and [`keyspace`] (SCAN, KEYS, RENAME,
//! COPY, FLUSHDB, RKV.SCAN…). Each data command runs on a [`txn::Txn`]:
//! replies and errors are worded as Redis 7 words them.

mod args;
mod connection;
mod expire;
mod freshness;
mod keyspace;
mod server;
mod strings;
mod transaction;
mod txn;

use std::sync::atomic::Ordering::Relaxed;

use std::sync::Arc;

use super::users::Category;
use super::{Connection, Refusal, Shared};
use crate::db::now_ms;
use crate::resp::Reply;
pub(crate) use freshness::{must_wait, timed_out};

pub(crate) use keyspace::Cursors;
pub(crate) use transaction::{unwatch, Multi, Watching};
use txn::Txn;

/// What the connection does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the next request.
    Continue,
    /// Close the connection once the reply is written (`QUIT`).
    Close,
}

/// What a command's handler gets: the request, its connection, and the
/// server's shared state.
pub(super) struct Ctx<'a, 't> {
    /// The request's arguments, the command name first.
    pub args: &'a [Vec<u8>],
    /// The connection it came on.
    pub conn: &'a mut Connection,
    /// The server's shared state and the daemon behind it.
    pub shared: &'a Shared,
    /// Set by `QUIT`: close once the reply is out.
    pub close: bool,
    /// Inside `EXEC`: the transaction every queued command runs on.
    txn: Option<&'a mut Txn<'t>>,
}

impl Ctx<'_, '_> {
    /// Runs `read` on the keyspace as this command sees it; an error reply
    /// for a storage error or the daemon's refusal.
    fn view<T>(&mut self, read: impl FnOnce(&Txn<'_>) -> crate::Result<T>) -> Result<T, Reply> {
        let counted = |txn: &Txn<'_>, stats: &super::Stats| {
            let before = txn.lookups();
            let result = read(txn).map_err(storage_error);
            let after = txn.lookups();
            stats.keyspace_hits.fetch_add(after.0 - before.0, Relaxed);
            stats.keyspace_misses.fetch_add(after.1 - before.1, Relaxed);
            result
        };
        freshness::check_bound(self.conn, self.shared)?;
        if let Some(txn) = self.txn.as_deref() {
            return counted(txn, &self.shared.stats);
        }
        match self.shared.backend.reader() {
            Ok(db) => counted(&Txn::new(&db, now_ms()), &self.shared.stats),
            Err(refusal) => Err(refusal_reply(refusal)),
        }
    }

    /// Runs `read` on the keyspace as this command sees it, or words the
    /// daemon's refusal.
    fn read(&mut self, read: impl FnOnce(&Txn<'_>) -> crate::Result<Reply>) -> Reply {
        self.view(read).unwrap_or_else(|reply| reply)
    }

    /// Runs `write` on the writable keyspace and commits what it wrote as
    /// one batch, under the database's write lock; or words the refusal.
    /// A handler that answers an error must not have written.
    fn write(&mut self, write: impl FnOnce(&mut Txn<'_>) -> crate::Result<Reply>) -> Reply {
        if let Some(txn) = self.txn.as_deref_mut() {
            return write(txn).unwrap_or_else(storage_error);
        }
        let db = match self.shared.backend.writer() {
            Ok(db) => db,
            Err(refusal) => return refusal_reply(refusal),
        };
        let ordered = db.write_lock();
        let mut txn = Txn::writing(&db, now_ms(), &ordered);
        let reply = match write(&mut txn) {
            Ok(reply) => reply,
            Err(e) => return storage_error(e),
        };
        let committed = commit(txn, self.shared);
        self.conn.last_write = Some(db.latest_sequence_number());
        match committed {
            Ok(()) => reply,
            Err(e) => storage_error(e),
        }
    }
}

/// Commits `txn` and spoils the transactions watching what it wrote. The
/// caller holds the database's write lock.
fn commit(txn: Txn<'_>, shared: &Shared) -> crate::Result<()> {
    if txn.flushed() {
        let db = txn.db();
        let now = txn.now();
        shared
            .watches
            .flushed(|key| db.entry(key, now).is_ok_and(|e| e.is_some()));
    }
    shared.watches.touched(txn.written());
    txn.commit()
}

/// A command's handler.
type Handler = fn(&mut Ctx<'_, '_>) -> Reply;

/// One entry of the command table.
pub(super) struct Spec {
    name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n` at least n.
    arity: i64,
    /// Redis's command flags, for `COMMAND`.
    flags: &'static [&'static str],
    /// Position of the first and last key, and the step between keys.
    keys: (i64, i64, i64),
    handler: Handler,
}

impl Spec {
    /// Whether `argc` arguments (the name included) fit the arity.
    fn arity_allows(&self, argc: usize) -> bool {
        let argc = argc as i64;
        (self.arity > 0 && argc == self.arity) || (self.arity < 0 && argc >= -self.arity)
    }
}

const WRITE: &[&str] = &["write"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const READ: &[&str] = &["readonly", "fast"];
const READ_SLOW: &[&str] = &["readonly"];
const ADMIN: &[&str] = &["admin"];
const FAST: &[&str] = &["fast"];
const AUTH_FREE: &[&str] = &["noauth", "fast"];
const BLOCKING: &[&str] = &["blocking"];

/// No keys.
const NONE: (i64, i64, i64) = (0, 0, 0);
/// The first argument is the key.
const KEY: (i64, i64, i64) = (1, 1, 1);
/// Every argument is a key.
const ALL: (i64, i64, i64) = (1, -1, 1);
/// The first two arguments are keys.
const TWO: (i64, i64, i64) = (1, 2, 1);

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    handler: Handler,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        handler,
    }
}

/// The command table, sorted by name: each command's arity, flags and key
/// positions (what `COMMAND` reports) and the function that runs it.
#[rustfmt::skip]
pub(super) const COMMANDS: &[Spec] = &[
    spec("acl", -2, FAST, NONE, connection::acl),
    spec("append", 3, WRITE, KEY, strings::append),
    spec("auth", -2, AUTH_FREE, NONE, connection::auth),
    spec("bgsave", -1, ADMIN, NONE, server::bgsave),
    spec("client", -2, FAST, NONE, connection::client),
    spec("command", -1, FAST, NONE, connection::command),
    spec("config", -2, ADMIN, NONE, server::config),
    spec("copy", -3, WRITE, TWO, keyspace::copy),
    spec("dbsize", 1, READ_SLOW, NONE, keyspace::dbsize),
    spec("decr", 2, WRITE_FAST, KEY, strings::decr),
    spec("decrby", 3, WRITE_FAST, KEY, strings::decrby),
    spec("del", -2, WRITE, ALL, strings::del),
    spec("discard", 1, FAST, NONE, transaction::discard),
    spec("echo", 2, FAST, NONE, connection::echo),
    spec("exec", 1, FAST, NONE, transaction::exec),
    spec("exists", -2, READ, ALL, keyspace::exists),
    spec("expire", -3, WRITE_FAST, KEY, expire::expire),
    spec("expireat", -3, WRITE_FAST, KEY, expire::expireat),
    spec("expiretime", 2, READ, KEY, expire::expiretime),
    spec("flushall", -1, WRITE, NONE, keyspace::flushdb),
    spec("flushdb", -1, WRITE, NONE, keyspace::flushdb),
    spec("get", 2, READ, KEY, strings::get),
    spec("getdel", 2, WRITE_FAST, KEY, strings::getdel),
    spec("getex", -2, WRITE_FAST, KEY, strings::getex),
    spec("getrange", 4, READ_SLOW, KEY, strings::getrange),
    spec("getset", 3, WRITE_FAST, KEY, strings::getset),
    spec("hello", -1, AUTH_FREE, NONE, connection::hello),
    spec("incr", 2, WRITE_FAST, KEY, strings::incr),
    spec("incrby", 3, WRITE_FAST, KEY, strings::incrby),
    spec("incrbyfloat", 3, WRITE_FAST, KEY, strings::incrbyfloat),
    spec("info", -1, FAST, NONE, server::info),
    spec("keys", 2, READ_SLOW, NONE, keyspace::keys),
    spec("lastsave", 1, FAST, NONE, server::lastsave),
    spec("lcs", -3, READ_SLOW, TWO, strings::lcs),
    spec("memory", -2, READ_SLOW, NONE, keyspace::memory),
    spec("mget", -2, READ, ALL, strings::mget),
    spec("mset", -3, WRITE, (1, -1, 2), strings::mset),
    spec("msetnx", -3, WRITE, (1, -1, 2), strings::msetnx),
    spec("multi", 1, FAST, NONE, transaction::multi),
    spec("object", -2, READ_SLOW, NONE, keyspace::object),
    spec("persist", 2, WRITE_FAST, KEY, expire::persist),
    spec("pexpire", -3, WRITE_FAST, KEY, expire::pexpire),
    spec("pexpireat", -3, WRITE_FAST, KEY, expire::pexpireat),
    spec("pexpiretime", 2, READ, KEY, expire::pexpiretime),
    spec("ping", -1, FAST, NONE, connection::ping),
    spec("psetex", 4, WRITE, KEY, strings::psetex),
    spec("pttl", 2, READ, KEY, expire::pttl),
    spec("quit", -1, AUTH_FREE, NONE, connection::quit),
    spec("randomkey", 1, READ_SLOW, NONE, keyspace::randomkey),
    spec("rename", 3, WRITE, TWO, keyspace::rename),
    spec("renamenx", 3, WRITE_FAST, TWO, keyspace::renamenx),
    spec("rkv.maxstaleness", 2, FAST, NONE, freshness::max_staleness),
    spec("rkv.position", 1, FAST, NONE, freshness::position),
    spec("rkv.readafter", -2, FAST, NONE, freshness::read_after),
    spec("rkv.scan", 4, READ_SLOW, NONE, keyspace::range_scan),
    spec("rkv.wait", 3, BLOCKING, NONE, freshness::wait),
    spec("role", 1, FAST, NONE, server::role),
    spec("save", 1, ADMIN, NONE, server::save),
    spec("scan", -2, READ_SLOW, NONE, keyspace::scan),
    spec("select", 2, FAST, NONE, connection::select),
    spec("set", -3, WRITE, KEY, strings::set),
    spec("setex", 4, WRITE, KEY, strings::setex),
    spec("setnx", 3, WRITE_FAST, KEY, strings::setnx),
    spec("setrange", 4, WRITE, KEY, strings::setrange),
    spec("strlen", 2, READ, KEY, strings::strlen),
    spec("substr", 4, READ_SLOW, KEY, strings::getrange),
    spec("touch", -2, READ, ALL, keyspace::exists),
    spec("ttl", 2, READ, KEY, expire::ttl),
    spec("type", 2, READ, KEY, keyspace::type_of),
    spec("unlink", -2, WRITE_FAST, ALL, strings::del),
    spec("unwatch", 1, FAST, NONE, transaction::unwatch_command),
    spec("watch", -2, FAST, ALL, transaction::watch),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    position(name).map(|i| &COMMANDS[i])
}

/// The command names, in the table's order: the slots of
/// [`Stats::calls`](super::Stats::calls) (the last slot, one more, counts
/// unknown commands).
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|spec| spec.name)
}

/// Where `name` is in [`COMMANDS`] (its slot in [`Stats::calls`](super::Stats::calls)).
fn position(name: &str) -> Option<usize> {
    COMMANDS.binary_search_by(|spec| spec.name.cmp(name)).ok()
}

/// Counts one call of the command at `slot` ([`COMMANDS`]'s length for an
/// unknown one), and an error reply.
fn count_call(shared: &Shared, slot: usize, reply: &Reply) {
    shared.stats.calls[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if matches!(reply, Reply::Error(_)) {
        shared
            .stats
            .command_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Executes one request whose command is at `found` in [`COMMANDS`]
/// (see [`slot_of`]), and counts it by command name.
pub(crate) fn execute(
    args: &[Vec<u8>],
    found: Option<usize>,
    conn: &mut Connection,
    shared: &Shared,
) -> (Reply, Action) {
    let slot = found.unwrap_or(COMMANDS.len());
    let (reply, action) = run(args, found, conn, shared);
    count_call(shared, slot, &reply);
    (reply, action)
}

/// Executes one request.
fn run(
    args: &[Vec<u8>],
    found: Option<usize>,
    conn: &mut Connection,
    shared: &Shared,
) -> (Reply, Action) {
    let name = found.map_or("", |i| COMMANDS[i].name);
    let spec = check(args, found, conn);
    let queue =
        conn.multi.is_some() && !matches!(name, "exec" | "discard" | "multi" | "watch" | "quit");
    if queue {
        let reply = transaction::queue(args, spec, conn, shared);
        return (reply, Action::Continue);
    }
    let spec = match spec {
        Ok((_, spec)) => spec,
        Err(reply) => return (reply, Action::Continue),
    };
    let mut ctx = Ctx {
        args,
        conn,
        shared,
        close: false,
        txn: None,
    };
    let reply = (spec.handler)(&mut ctx);
    let action = if ctx.close {
        Action::Close
    } else {
        Action::Continue
    };
    (reply, action)
}

/// The command of a request, or the reply refusing it: unknown, the wrong
/// number of arguments, or not authenticated.
fn check(
    args: &[Vec<u8>],
    found: Option<usize>,
    conn: &Connection,
) -> Result<(usize, &'static Spec), Reply> {
    let Some((slot, spec)) = found.map(|i| (i, &COMMANDS[i])) else {
        return Err(unknown_command(args));
    };
    if !spec.arity_allows(args.len()) {
        return Err(Reply::error(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        )));
    }
    if !conn.authenticated && !spec.flags.contains(&"noauth") {
        return Err(Reply::error("NOAUTH Authentication required."));
    }
    permitted(spec, args, conn)?;
    Ok((slot, spec))
}

/// Commands that reach keys other than through their arguments (they list,
/// pick or drop keys): refused to a user limited to key patterns.
const EVERY_KEY: &[&str] = &[
    "flushall",
    "flushdb",
    "keys",
    "memory",
    "object",
    "randomkey",
    "rkv.scan",
    "scan",
];

/// Whether the connection's user may run `spec` on the keys of `args`;
/// Redis's `NOPERM` error when not.
fn permitted(spec: &Spec, args: &[Vec<u8>], conn: &Connection) -> Result<(), Reply> {
    let Some(user) = conn.user.as_deref().filter(|u| !u.unrestricted()) else {
        return Ok(());
    };
    let refused_category = [
        ("write", Category::Write),
        ("readonly", Category::Read),
        ("admin", Category::Admin),
    ]
    .into_iter()
    .any(|(flag, category)| spec.flags.contains(&flag) && !user.may(category));
    if refused_category {
        return Err(Reply::error(format!(
            "NOPERM this user has no permissions to run the '{}' command",
            spec.name
        )));
    }
    let refused = || {
        Reply::error(
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        )
    };
    if user.all_keys() {
        return Ok(());
    }
    if EVERY_KEY.contains(&spec.name) {
        return Err(refused());
    }
    let (first, last, step) = spec.keys;
    if first > 0 {
        let last = if last < 0 {
            args.len() as i64 + last
        } else {
            last
        };
        let mut i = first;
        while i <= last && (i as usize) < args.len() {
            if !user.may_touch(&args[i as usize]) {
                return Err(refused());
            }
            i += step.max(1);
        }
    }
    Ok(())
}

/// Looks the connection's user up again after the users were reloaded:
/// new permissions apply from now on, and a user removed or turned off is
/// logged out (`NOAUTH` from its next command).
pub(crate) fn refresh_user(conn: &mut Connection, shared: &Shared) {
    let version = shared
        .users_version
        .load(std::sync::atomic::Ordering::SeqCst);
    if version == conn.users_version {
        return;
    }
    conn.users_version = version;
    let Some(name) = conn.user.as_ref().map(|u| u.name().to_string()) else {
        return;
    };
    let users = shared.users.load();
    match users.get(&name).filter(|u| u.may_log_in()) {
        Some(user) => conn.user = Some(Arc::clone(user)),
        None => {
            tracing::info!(user = %name, "the user is gone from the ACL file or off: logged out");
            conn.user = None;
            conn.authenticated = false;
        }
    }
}

/// Runs a command checked before (queued by MULTI, or grouped), at
/// `slot` in [`COMMANDS`], on `txn`; the caller counts it.
fn run_on(
    txn: &mut Txn<'_>,
    args: &[Vec<u8>],
    slot: usize,
    conn: &mut Connection,
    shared: &Shared,
) -> Reply {
    let mut ctx = Ctx {
        args,
        conn,
        shared,
        close: false,
        txn: Some(txn),
    };
    (COMMANDS[slot].handler)(&mut ctx)
}

/// Where the command `name` (any case) is in [`COMMANDS`]; lower-cased on
/// the stack, as this runs for every request, once.
pub(crate) fn slot_of(name: &[u8]) -> Option<usize> {
    let mut buf = [0u8; 16];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    position(std::str::from_utf8(lower).ok()?)
}

/// How much of an unknown command Redis echoes back: the name and the
/// arguments each cut to 128 bytes in all, so a huge argument never makes a
/// huge error line.
const ECHO_LIMIT: usize = 128;

fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let clip = |bytes: &[u8], room: usize| {
        String::from_utf8_lossy(&bytes[..bytes.len().min(room)]).into_owned()
    };
    let mut echoed = String::new();
    for arg in &args[1..] {
        if echoed.len() >= ECHO_LIMIT {
            break;
        }
        echoed.push_str(&format!("'{}' ", clip(arg, ECHO_LIMIT - echoed.len())));
    }
    Reply::error(format!(
        "ERR unknown command '{}', with args beginning with: {echoed}",
        clip(&args[0], ECHO_LIMIT)
    ))
}

/// A daemon's refusal, worded as Redis words it.
pub(crate) fn refusal_reply(refusal: Refusal) -> Reply {
    Reply::error(match refusal {
        Refusal::NoDataYet { store } => format!(
            "MASTERDOWN no backup applied yet: this follower is waiting for the first \
             complete backup in {store}"
        ),
        Refusal::Stale { reason } => format!("MASTERDOWN {reason}"),
        Refusal::ReadOnlyReplica => "READONLY You can't write against a read only replica.".into(),
        Refusal::Fenced { by } => format!(
            "READONLY this master lost its backup directory to another master ({by}): writes \
             here would never reach a follower"
        ),
        Refusal::LeaseExpired { since, term } => format!(
            "READONLY this master has not renewed its lease on the backup store for {:.1} s \
             (--lease-term {}): it acknowledges no write until it does, since a promotion may \
             replace it without them",
            since.as_secs_f64(),
            humantime::format_duration(term)
        ),
        Refusal::NoBackupsHere => {
            "ERR a follower takes no backups: run BGSAVE on the master".into()
        }
        Refusal::BackupFailed(Some(e)) => format!("ERR backup failed: {e}"),
        Refusal::BackupFailed(None) => "ERR backup failed".into(),
        Refusal::ShuttingDown => "ERR the master is shutting down".into(),
    })
}

fn storage_error(e: crate::Error) -> Reply {
    tracing::error!(error = %e.report(), "a command failed in the database");
    Reply::error(format!("ERR {e}"))
}

/// The write commands a worker gathered from its clients in one turn of
/// its event loop (several from a pipeline, one each from many clients),
/// run in arrival order as one group and written as one RocksDB batch:
/// one WAL append and one take of the write lock for the lot, where each
/// command alone would take its own (redis-server likewise appends a
/// turn's writes to its AOF in one `write`). A group is what its commands
/// would do one after the other: each sees the writes before it, no
/// reader sees between them (the batch is atomic), and a client's reply
/// goes out only after the commit, so no write is acknowledged before it
/// is written. A client whose writes wait in the group sends nothing
/// else until the group is written, so its replies keep their order.
#[derive(Default)]
pub(crate) struct WriteGroup {
    /// Each command: the client it came from, its slot in [`COMMANDS`],
    /// its arguments.
    commands: Vec<(usize, usize, Vec<Vec<u8>>)>,
    /// Every command is a plain `SET key value`: they need no [`Txn`].
    plain_sets: bool,
}

/// The clients a [`WriteGroup`] answers, by the number the worker gave
/// each.
pub(crate) trait Members {
    /// Client `owner`'s connection and its reply buffer.
    fn member(&mut self, owner: usize) -> Option<(&mut Connection, &mut Vec<u8>)>;
}

impl WriteGroup {
    /// Whether `args` (its command at `found`), from `conn`, may join the
    /// group: a write command that [`execute`] would run as it is (known,
    /// of the right arity, the connection authenticated and not inside
    /// `MULTI`), or the `EXEC` of a transaction that writes (see
    /// [`Multi::joins_group`]).
    pub(crate) fn accepts(args: &[Vec<u8>], found: Option<usize>, conn: &Connection) -> bool {
        let Some(spec) = found.map(|i| &COMMANDS[i]) else {
            return false;
        };
        let runs = match &conn.multi {
            None => spec.flags.contains(&"write"),
            Some(multi) => spec.name == "exec" && multi.joins_group(conn),
        };
        conn.authenticated
            && spec.arity_allows(args.len())
            && runs
            && permitted(spec, args, conn).is_ok()
    }

    /// The most commands one group holds: a longer pipeline is written in
    /// several batches, so the lock is never held long.
    const MAX: usize = 1024;

    /// Whether the group should be written before it takes more.
    pub(crate) fn is_full(&self) -> bool {
        self.commands.len() >= Self::MAX
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Adds a command [`WriteGroup::accepts`] took, at `slot`, from client
    /// `owner`.
    pub(crate) fn push(&mut self, owner: usize, args: Vec<Vec<u8>>, slot: usize) {
        let plain_set = args.len() == 3 && COMMANDS[slot].name == "set";
        self.plain_sets = plain_set && (self.commands.is_empty() || self.plain_sets);
        self.commands.push((owner, slot, args));
    }

    /// Runs the group, writes it, and appends each command's reply to its
    /// client's buffer; the clients it answered, in order (a client once
    /// per run of its commands). A client no longer among `members` gets
    /// no reply; its plain `SET`s are still written.
    pub(crate) fn flush(&mut self, shared: &Shared, members: &mut impl Members) -> Vec<usize> {
        let commands = std::mem::take(&mut self.commands);
        let mut owners: Vec<usize> = Vec::new();
        for (owner, _, _) in &commands {
            if owners.last() != Some(owner) {
                owners.push(*owner);
            }
        }
        if commands.is_empty() {
            return owners;
        }
        let db = match shared.backend.writer() {
            Ok(db) => db,
            Err(refusal) => {
                let reply = refusal_reply(refusal);
                for (owner, slot, _) in &commands {
                    count_call(shared, *slot, &reply);
                    if let Some((conn, out)) = members.member(*owner) {
                        reply.encode_as(out, conn.protocol);
                    }
                }
                return owners;
            }
        };
        let ordered = db.write_lock();
        let replies = if self.plain_sets {
            // Straight into one batch: a plain SET reads nothing but a
            // deadline the key may have had.
            let written = (|| {
                let mut batch = db.batch();
                // In key order (a stable sort: the last write of a key stays
                // last): each insert into the memtable's skiplist starts
                // from where the one before ended, instead of from the top.
                let mut sorted: Vec<&[Vec<u8>]> =
                    commands.iter().map(|(_, _, args)| &args[..]).collect();
                sorted.sort_by(|a, b| a[1].cmp(&b[1]));
                for args in sorted {
                    db.stage_plain(&mut batch, &args[1], &args[2])?;
                }
                db.write(batch)
            })();
            let keys = commands.iter().map(|(_, _, args)| args[1].as_slice());
            shared.watches.touched(keys);
            let reply = written.map_or_else(storage_error, |()| Reply::ok());
            vec![reply; commands.len()]
        } else {
            let mut txn = Txn::writing(&db, now_ms(), &ordered);
            let replies: Vec<Reply> = commands
                .iter()
                .map(|(owner, slot, args)| match members.member(*owner) {
                    Some((conn, _)) => run_on(&mut txn, args, *slot, conn, shared),
                    None => Reply::error("ERR the client left"),
                })
                .collect();
            match commit(txn, shared) {
                Ok(()) => replies,
                Err(e) => vec![storage_error(e); replies.len()],
            }
        };
        let position = db.latest_sequence_number();
        for ((owner, slot, _), reply) in commands.iter().zip(&replies) {
            count_call(shared, *slot, reply);
            if let Some((conn, out)) = members.member(*owner) {
                conn.last_write = Some(position);
                reply.encode_as(out, conn.protocol);
            }
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_table_is_sorted_for_lookup() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(lookup("get").is_some() && lookup("nope").is_none());
    }

    #[test]
    fn unknown_command_is_worded_as_redis_words_it() {
        let reply = unknown_command(&[b"FOO".to_vec(), b"a".to_vec()]);
        assert_eq!(
            reply,
            Reply::error("ERR unknown command 'FOO', with args beginning with: 'a' ")
        );
    }
}
