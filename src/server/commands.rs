//! The commands: each request is checked against the command table (name,
//! arity, whether it writes), authenticated, and mapped onto the daemon's
//! [`Backend`]. Replies and errors are worded as Redis words them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rocksdb::WriteBatch;

use super::{BackupRequest, Connection, Refusal, Role, Shared};
use crate::db::{Db, ScanRange};
use crate::glob;
use crate::resp::Reply;

/// What the connection does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the next request.
    Continue,
    /// Close the connection once the reply is written (`QUIT`).
    Close,
}

/// One entry of the command table.
struct Spec {
    name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n` at least n.
    arity: i64,
    /// Redis's command flags, for `COMMAND`.
    flags: &'static [&'static str],
    /// Position of the first and last key, and the step between keys.
    keys: (i64, i64, i64),
}

const WRITE: &[&str] = &["write"];
const READ: &[&str] = &["readonly", "fast"];
const ADMIN: &[&str] = &["admin"];
const FAST: &[&str] = &["fast"];
const AUTH_FREE: &[&str] = &["noauth", "fast"];

/// The command table, sorted by name.
const COMMANDS: &[Spec] = &[
    Spec {
        name: "auth",
        arity: -2,
        flags: AUTH_FREE,
        keys: (0, 0, 0),
    },
    Spec {
        name: "bgsave",
        arity: -1,
        flags: ADMIN,
        keys: (0, 0, 0),
    },
    Spec {
        name: "client",
        arity: -2,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "command",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly"],
        keys: (0, 0, 0),
    },
    Spec {
        name: "del",
        arity: -2,
        flags: WRITE,
        keys: (1, -1, 1),
    },
    Spec {
        name: "discard",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "echo",
        arity: 2,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "exec",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "exists",
        arity: -2,
        flags: READ,
        keys: (1, -1, 1),
    },
    Spec {
        name: "get",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
    },
    Spec {
        name: "info",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "lastsave",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "mget",
        arity: -2,
        flags: READ,
        keys: (1, -1, 1),
    },
    Spec {
        name: "mset",
        arity: -3,
        flags: WRITE,
        keys: (1, -1, 2),
    },
    Spec {
        name: "multi",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: AUTH_FREE,
        keys: (0, 0, 0),
    },
    Spec {
        name: "rkv.scan",
        arity: 4,
        flags: &["readonly"],
        keys: (0, 0, 0),
    },
    Spec {
        name: "role",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "save",
        arity: 1,
        flags: ADMIN,
        keys: (0, 0, 0),
    },
    Spec {
        name: "scan",
        arity: -2,
        flags: &["readonly"],
        keys: (0, 0, 0),
    },
    Spec {
        name: "select",
        arity: 2,
        flags: FAST,
        keys: (0, 0, 0),
    },
    Spec {
        name: "set",
        arity: -3,
        flags: WRITE,
        keys: (1, 1, 1),
    },
    Spec {
        name: "ttl",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
    },
    Spec {
        name: "type",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
    },
];

fn lookup(name: &str) -> Option<&'static Spec> {
    COMMANDS
        .binary_search_by(|spec| spec.name.cmp(name))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// Executes one request.
pub(crate) fn execute(args: &[Vec<u8>], conn: &mut Connection, shared: &Shared) -> (Reply, Action) {
    // Lower-cased on the stack: this runs for every request.
    let mut buf = [0u8; 16];
    let name = match args[0].len() {
        n if n <= buf.len() => {
            buf[..n].copy_from_slice(&args[0]);
            buf[..n].make_ascii_lowercase();
            std::str::from_utf8(&buf[..n]).unwrap_or("")
        }
        _ => "",
    };
    if conn.refused_multi {
        return (refused_transaction(name, conn), Action::Continue);
    }
    let Some(spec) = lookup(name) else {
        return (unknown_command(args), Action::Continue);
    };
    let argc = args.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return (
            Reply::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            Action::Continue,
        );
    }
    if !conn.authenticated && !spec.flags.contains(&"noauth") {
        return (
            Reply::error("NOAUTH Authentication required."),
            Action::Continue,
        );
    }
    let backend = shared.backend.as_ref();
    let reply = match name {
        "auth" => auth(args, conn, shared),
        "multi" => {
            conn.refused_multi = true;
            Reply::error(
                "ERR MULTI is not supported by rkv yet: the commands up to EXEC or DISCARD \
                 will be refused, not run",
            )
        }
        "exec" => Reply::error("ERR EXEC without MULTI"),
        "discard" => Reply::error("ERR DISCARD without MULTI"),
        "quit" => return (Reply::ok(), Action::Close),
        "ping" => match args.len() {
            1 => Reply::Simple("PONG".into()),
            2 => Reply::bulk(args[1].clone()),
            _ => Reply::error("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => Reply::bulk(args[1].clone()),
        "select" => match args[1].as_slice() {
            b"0" => Reply::ok(),
            _ => Reply::error("ERR DB index is out of range"),
        },
        "client" => client(args, conn),
        "command" => command(args),
        "info" => info(args, shared),
        "role" => role_reply(backend.role()),
        "lastsave" => Reply::Integer(backend.lastsave()),
        "bgsave" => match backend.request_backup() {
            Ok(BackupRequest::Started) => Reply::Simple("Background saving started".into()),
            Ok(BackupRequest::Scheduled) => Reply::Simple("Background saving scheduled".into()),
            Err(refusal) => refusal_reply(refusal),
        },
        "save" => match backend.backup_now() {
            Ok(()) => Reply::ok(),
            Err(refusal) => refusal_reply(refusal),
        },
        "get" | "mget" | "exists" | "type" | "ttl" | "dbsize" | "scan" | "rkv.scan" => {
            match backend.reader() {
                Ok(db) => read(name, args, &db, shared, conn.id).unwrap_or_else(storage_error),
                Err(refusal) => refusal_reply(refusal),
            }
        }
        "set" | "mset" | "del" => match backend.writer() {
            Ok(db) => write(name, args, &db).unwrap_or_else(storage_error),
            Err(refusal) => refusal_reply(refusal),
        },
        _ => unreachable!("every command in the table is dispatched"),
    };
    (reply, Action::Continue)
}

/// The reply to a command sent after a refused `MULTI`: nothing runs until
/// `EXEC` (which reports the transaction discarded, as Redis does for a
/// transaction with an error) or `DISCARD`. A client that believes it sent
/// a transaction must never see half of it applied.
fn refused_transaction(name: &str, conn: &mut Connection) -> Reply {
    match name {
        "exec" => {
            conn.refused_multi = false;
            Reply::error("EXECABORT Transaction discarded because of previous errors.")
        }
        "discard" => {
            conn.refused_multi = false;
            Reply::ok()
        }
        "multi" => Reply::error("ERR MULTI calls can not be nested"),
        _ => Reply::error(
            "ERR not run: inside a MULTI that rkv refused (transactions are not supported \
             yet); EXEC or DISCARD ends it",
        ),
    }
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
        Refusal::NoBackupsHere => {
            "ERR a follower takes no backups: run BGSAVE on the master".into()
        }
        Refusal::BackupFailed(Some(e)) => format!("ERR backup failed: {e}"),
        Refusal::BackupFailed(None) => "ERR backup failed".into(),
        Refusal::ShuttingDown => "ERR the master is shutting down".into(),
    })
}

/// `ROLE`'s reply, as Redis shapes it for a master and for a replica.
fn role_reply(role: Role) -> Reply {
    match role {
        Role::Master => Reply::array(vec![
            Reply::bulk("master"),
            Reply::Integer(0),
            Reply::array(Vec::new()),
        ]),
        Role::Replica {
            master_host,
            connected,
            offset,
        } => Reply::array(vec![
            Reply::bulk("slave"),
            Reply::bulk(master_host),
            Reply::Integer(0),
            Reply::bulk(if connected { "connected" } else { "connecting" }),
            Reply::Integer(offset as i64),
        ]),
    }
}

fn storage_error(e: crate::Error) -> Reply {
    tracing::error!("{e}");
    Reply::error(format!("ERR {e}"))
}

fn auth(args: &[Vec<u8>], conn: &mut Connection, shared: &Shared) -> Reply {
    let Some(password) = &shared.config.password else {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    // AUTH password, or AUTH default password (Redis 6 ACL form).
    let given = match args.len() {
        2 => &args[1],
        3 if args[1].eq_ignore_ascii_case(b"default") => &args[2],
        3 => &Vec::new(),
        _ => return Reply::error("ERR syntax error"),
    };
    // A wrong password does not log out a connection that is logged in,
    // as in Redis.
    if constant_time_eq(given, password) {
        conn.authenticated = true;
        Reply::ok()
    } else {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Compares without returning early, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn client(args: &[Vec<u8>], conn: &mut Connection) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            conn.name = Some(args[2].clone());
            Reply::ok()
        }
        ("getname", 2) => Reply::Bulk(conn.name.clone()),
        ("id", 2) => Reply::Integer(conn.id as i64),
        ("setinfo", 4) => Reply::ok(),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
        )),
    }
}

fn command(args: &[Vec<u8>]) -> Reply {
    let describe = |spec: &Spec| {
        Reply::array(vec![
            Reply::bulk(spec.name),
            Reply::Integer(spec.arity),
            Reply::array(
                spec.flags
                    .iter()
                    .map(|f| Reply::Simple(f.to_string()))
                    .collect(),
            ),
            Reply::Integer(spec.keys.0),
            Reply::Integer(spec.keys.1),
            Reply::Integer(spec.keys.2),
        ])
    };
    let sub = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    match sub.as_deref() {
        None => Reply::array(COMMANDS.iter().map(describe).collect()),
        Some("count") => Reply::Integer(COMMANDS.len() as i64),
        // redis-cli asks for documentation to show hints; it copes with none.
        Some("docs") => Reply::array(Vec::new()),
        Some("info") => Reply::array(
            args[2..]
                .iter()
                .map(
                    |name| match lookup(&String::from_utf8_lossy(name).to_ascii_lowercase()) {
                        Some(spec) => describe(spec),
                        None => Reply::Array(None),
                    },
                )
                .collect(),
        ),
        Some(other) => Reply::error(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND HELP."
        )),
    }
}

fn info(args: &[Vec<u8>], shared: &Shared) -> Reply {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut sections = common_info(shared);
    sections.extend(shared.backend.info_sections());
    if let Ok(db) = shared.backend.reader() {
        let keys = db.estimate_num_keys().unwrap_or(0);
        sections.push((
            "keyspace",
            vec![("db0".into(), format!("keys={keys},expires=0,avg_ttl=0"))],
        ));
    }
    let mut text = String::new();
    for (name, fields) in sections {
        if !all && !wanted.iter().any(|w| w == name) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut title = name.to_string();
        title[..1].make_ascii_uppercase();
        text.push_str(&format!("# {title}\r\n"));
        for (field, value) in fields {
            text.push_str(&format!("{field}:{value}\r\n"));
        }
    }
    Reply::bulk(text)
}

fn common_info(shared: &Shared) -> Vec<(&'static str, Vec<(String, String)>)> {
    let uptime = shared.started.elapsed().as_secs();
    let stats = &shared.stats;
    let port = shared
        .config
        .listen
        .iter()
        .find_map(|a| match a {
            super::ListenAddr::Tcp(s) => Some(s.port()),
            super::ListenAddr::Unix(_) => None,
        })
        .unwrap_or(0);
    let kv = |k: &str, v: String| (k.to_string(), v);
    vec![
        (
            "server",
            vec![
                // Clients read redis_version to pick features; rkv speaks the
                // RESP2 subset of Redis 7 it implements.
                kv("redis_version", "7.0.0".into()),
                kv("rkv_version", env!("CARGO_PKG_VERSION").into()),
                kv("redis_mode", "standalone".into()),
                kv("role", shared.backend.role_name().into()),
                kv("os", std::env::consts::OS.into()),
                kv("arch_bits", (usize::BITS).to_string()),
                kv("process_id", std::process::id().to_string()),
                kv("tcp_port", port.to_string()),
                kv("uptime_in_seconds", uptime.to_string()),
                kv("uptime_in_days", (uptime / 86_400).to_string()),
            ],
        ),
        (
            "clients",
            vec![
                kv(
                    "connected_clients",
                    stats.connected_clients.load(Ordering::Relaxed).to_string(),
                ),
                kv("maxclients", shared.config.max_clients.to_string()),
                kv("blocked_clients", "0".into()),
            ],
        ),
        (
            "stats",
            vec![
                kv(
                    "total_connections_received",
                    stats.total_connections.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "total_commands_processed",
                    stats.total_commands.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "rejected_connections",
                    stats
                        .rejected_connections
                        .load(Ordering::Relaxed)
                        .to_string(),
                ),
            ],
        ),
    ]
}

fn read(
    name: &str,
    args: &[Vec<u8>],
    db: &Db,
    shared: &Shared,
    conn_id: u64,
) -> crate::Result<Reply> {
    Ok(match name {
        "get" => Reply::Bulk(db.get(&args[1])?),
        "mget" => {
            let cap = shared.config.limits.max_reply_bytes;
            let mut size = 0usize;
            let mut values = Vec::with_capacity(args.len() - 1);
            for key in &args[1..] {
                let value = db.get(key)?;
                size += value.as_ref().map_or(5, |v| v.len() + 16);
                if size > cap {
                    return Ok(Reply::error(format!(
                        "ERR reply larger than --max-reply-bytes ({cap} bytes): ask for fewer keys"
                    )));
                }
                values.push(Reply::Bulk(value));
            }
            Reply::array(values)
        }
        "exists" => {
            let mut count = 0;
            for key in &args[1..] {
                count += i64::from(db.get(key)?.is_some());
            }
            Reply::Integer(count)
        }
        "type" => Reply::Simple(
            if db.get(&args[1])?.is_some() {
                "string"
            } else {
                "none"
            }
            .into(),
        ),
        // No key expires in rkv: -1 for a key, -2 for none.
        "ttl" => Reply::Integer(if db.get(&args[1])?.is_some() { -1 } else { -2 }),
        "dbsize" => {
            let mut count = 0;
            for entry in db.iter(&ScanRange::default()) {
                entry?;
                count += 1;
            }
            Reply::Integer(count)
        }
        "scan" => scan(args, db, shared, conn_id)?,
        "rkv.scan" => range_scan(args, db, shared.config.limits.max_reply_bytes)?,
        _ => unreachable!("read commands only"),
    })
}

fn write(name: &str, args: &[Vec<u8>], db: &Db) -> crate::Result<Reply> {
    Ok(match name {
        "set" => return set(args, db),
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Ok(Reply::error(
                    "ERR wrong number of arguments for 'mset' command",
                ));
            }
            let mut batch = WriteBatch::default();
            for pair in args[1..].chunks(2) {
                batch.put(&pair[0], &pair[1]);
            }
            let _ordered = db.write_lock();
            db.write(batch)?;
            Reply::ok()
        }
        "del" => {
            // Counting needs the keys' presence and the delete to be atomic;
            // a key named twice is removed, and counted, once.
            let _ordered = db.write_lock();
            let mut batch = WriteBatch::default();
            let mut count = 0;
            let mut seen = std::collections::HashSet::new();
            for key in &args[1..] {
                if seen.insert(key.as_slice()) && db.get(key)?.is_some() {
                    count += 1;
                    batch.delete(key);
                }
            }
            if count > 0 {
                db.write(batch)?;
            }
            Reply::Integer(count)
        }
        _ => unreachable!("write commands only"),
    })
}

/// Plain `SET key value` requests of one pipeline, written as one batch.
#[derive(Default)]
pub(crate) struct SetBatch {
    batch: WriteBatch,
    count: usize,
}

impl SetBatch {
    /// Whether `args` is a plain `SET key value` (no options).
    pub(crate) fn accepts(args: &[Vec<u8>]) -> bool {
        args.len() == 3 && args[0].eq_ignore_ascii_case(b"set")
    }

    pub(crate) fn push(&mut self, args: Vec<Vec<u8>>) {
        self.batch.put(&args[1], &args[2]);
        self.count += 1;
    }

    /// Writes the batch and appends one reply per SET to `out`.
    pub(crate) fn flush(&mut self, shared: &Shared, out: &mut Vec<u8>) {
        if self.count == 0 {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let reply = match shared.backend.writer() {
            Ok(db) => {
                let _ordered = db.write_lock();
                db.write(batch).map_or_else(storage_error, |()| Reply::ok())
            }
            Err(refusal) => refusal_reply(refusal),
        };
        for _ in 0..std::mem::take(&mut self.count) {
            reply.encode(out);
        }
    }
}

/// `SET key value [NX | XX] [GET]`; expiry options are refused, since rkv
/// keys do not expire.
fn set(args: &[Vec<u8>], db: &Db) -> crate::Result<Reply> {
    let (key, value) = (&args[1], &args[2]);
    let (mut nx, mut xx, mut get) = (false, false, false);
    for option in &args[3..] {
        match String::from_utf8_lossy(option).to_ascii_uppercase().as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                return Ok(Reply::error(
                    "ERR rkv keys do not expire: SET options EX, PX, EXAT, PXAT and KEEPTTL are not supported",
                ))
            }
            _ => return Ok(Reply::error("ERR syntax error")),
        }
    }
    let _ordered = db.write_lock();
    if !(nx || xx || get) {
        db.put(key, value)?;
        return Ok(Reply::ok());
    }
    let old = db.get(key)?;
    let apply = !(nx && old.is_some() || xx && old.is_none());
    if apply {
        db.put(key, value)?;
    }
    Ok(match (get, apply) {
        (true, _) => Reply::Bulk(old),
        (false, true) => Reply::ok(),
        (false, false) => Reply::Bulk(None),
    })
}

/// Open `SCAN` cursors: cursor id → the next key to examine, owned by the
/// connection that started the scan. Each connection keeps at most
/// [`Cursors::PER_CONNECTION`], forgetting its own oldest first, so no
/// client can evict another's; a connection's cursors go when it closes
/// (any connection may use a cursor while its owner is open, as a client's
/// connection pool does). A forgotten cursor is an error, never a silent
/// restart.
#[derive(Default)]
pub(crate) struct Cursors {
    inner: Mutex<CursorTable>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct CursorTable {
    keys: HashMap<u64, Vec<u8>>,
    /// Each owner's cursors, oldest first.
    owned: HashMap<u64, VecDeque<u64>>,
}

impl Cursors {
    /// The most cursors one connection keeps at once.
    const PER_CONNECTION: usize = 128;

    fn save(&self, owner: u64, next_key: Vec<u8>) -> u64 {
        // Ids start above 0 (which means "start" and "done") and never repeat.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        table.keys.insert(id, next_key);
        let owned = table.owned.entry(owner).or_default();
        owned.push_back(id);
        let evicted = (owned.len() > Self::PER_CONNECTION).then(|| owned.pop_front());
        if let Some(Some(old)) = evicted {
            table.keys.remove(&old);
        }
        id
    }

    fn load(&self, id: u64) -> Option<Vec<u8>> {
        let table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        table.keys.get(&id).cloned()
    }

    /// Forgets the cursors of connection `owner`, which closed.
    pub(crate) fn release(&self, owner: u64) {
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = table.owned.remove(&owner) {
            for id in ids {
                table.keys.remove(&id);
            }
        }
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: keys in key
/// order; each call examines about COUNT keys.
/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`; stops early, with a
/// cursor to go on from, once the keys reach `max_bytes`.
fn scan(args: &[Vec<u8>], db: &Db, shared: &Shared, owner: u64) -> crate::Result<Reply> {
    let (cursors, max_bytes) = (&shared.cursors, shared.config.limits.max_reply_bytes);
    let cursor: u64 = match std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(c) => c,
        None => return Ok(Reply::error("ERR invalid cursor")),
    };
    let (mut pattern, mut count, mut only_strings) = (None, 10usize, true);
    let mut options = args[2..].chunks(2);
    for option in options.by_ref() {
        let [name, value] = option else {
            return Ok(Reply::error("ERR syntax error"));
        };
        match String::from_utf8_lossy(name).to_ascii_uppercase().as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => match std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                Some(n) if n >= 1 => count = n,
                Some(_) => return Ok(Reply::error("ERR syntax error")),
                None => return Ok(Reply::error("ERR value is not an integer or out of range")),
            },
            "TYPE" => only_strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Ok(Reply::error("ERR syntax error")),
        }
    }
    let prefix = pattern
        .as_deref()
        .map(glob::literal_prefix)
        .unwrap_or_default();
    let start = if cursor == 0 {
        prefix.clone()
    } else {
        match cursors.load(cursor) {
            Some(key) => key,
            None => return Ok(Reply::error("ERR invalid cursor")),
        }
    };
    let range = ScanRange {
        from: Some(start),
        to: None,
    };
    let mut keys = Vec::new();
    let mut next_cursor = 0;
    let mut size = 0;
    for (examined, entry) in db.iter(&range).enumerate() {
        let (key, _) = entry?;
        if !key.starts_with(&prefix) {
            break;
        }
        if examined == count || size >= max_bytes {
            next_cursor = cursors.save(owner, key);
            break;
        }
        if only_strings && pattern.as_deref().is_none_or(|p| glob::matches(p, &key)) {
            size += key.len() + 16;
            keys.push(Reply::bulk(key));
        }
    }
    Ok(Reply::array(vec![
        Reply::bulk(next_cursor.to_string()),
        Reply::array(keys),
    ]))
}

/// `RKV.SCAN from to count`: up to `count` entries with `from <= key < to`
/// (an empty `to` means no upper bound), keys and values interleaved, and the
/// key to continue from (nil when done). rkv's own command: ordered ranges
/// are what `rkv scan --from --to` needs and Redis's SCAN cannot express.
fn range_scan(args: &[Vec<u8>], db: &Db, max_bytes: usize) -> crate::Result<Reply> {
    let count: usize = match std::str::from_utf8(&args[3])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) if n >= 1 => n,
        _ => return Ok(Reply::error("ERR value is not an integer or out of range")),
    };
    let range = ScanRange {
        from: Some(args[1].clone()),
        to: (!args[2].is_empty()).then(|| args[2].clone()),
    };
    let mut entries = Vec::new();
    let mut next = None;
    let mut size = 0;
    for entry in db.iter(&range) {
        let (key, value) = entry?;
        // At least one entry, so a scan always moves on.
        if entries.len() == 2 * count || (size >= max_bytes && !entries.is_empty()) {
            next = Some(key);
            break;
        }
        size += key.len() + value.len() + 32;
        entries.push(Reply::bulk(key));
        entries.push(Reply::bulk(value));
    }
    Ok(Reply::array(vec![Reply::Bulk(next), Reply::array(entries)]))
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

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
