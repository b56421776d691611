//! The commands: each request is checked against the command table (name,
//! arity, flags), authenticated, and handed to its handler. A command is one
//! table entry and one function, in the file of its family:
//! [`connection`] (AUTH, PING, CLIENT, COMMAND, MULTI…), [`server`] (INFO,
//! ROLE, SAVE…), [`strings`] (GET, SET, MSET, DEL…) and [`keyspace`] (SCAN,
//! DBSIZE, RKV.SCAN). Replies and errors are worded as Redis words them.

mod connection;
mod keyspace;
mod server;
mod strings;

use rocksdb::WriteBatch;

use super::{Connection, Refusal, Shared};
use crate::db::Db;
use crate::resp::Reply;

pub(crate) use keyspace::Cursors;

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
pub(super) struct Ctx<'a> {
    /// The request's arguments, the command name first.
    pub args: &'a [Vec<u8>],
    /// The connection it came on.
    pub conn: &'a mut Connection,
    /// The server's shared state and the daemon behind it.
    pub shared: &'a Shared,
    /// Set by `QUIT`: close once the reply is out.
    pub close: bool,
}

impl Ctx<'_> {
    /// Runs `read` on the daemon's readable database, or words its refusal.
    fn read(&self, read: impl FnOnce(&Db) -> crate::Result<Reply>) -> Reply {
        match self.shared.backend.reader() {
            Ok(db) => read(&db).unwrap_or_else(storage_error),
            Err(refusal) => refusal_reply(refusal),
        }
    }

    /// Runs `write` on the daemon's writable database, or words its refusal.
    fn write(&self, write: impl FnOnce(&Db) -> crate::Result<Reply>) -> Reply {
        match self.shared.backend.writer() {
            Ok(db) => write(&db).unwrap_or_else(storage_error),
            Err(refusal) => refusal_reply(refusal),
        }
    }
}

/// A command's handler.
type Handler = fn(&mut Ctx<'_>) -> Reply;

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

const WRITE: &[&str] = &["write"];
const READ: &[&str] = &["readonly", "fast"];
const ADMIN: &[&str] = &["admin"];
const FAST: &[&str] = &["fast"];
const AUTH_FREE: &[&str] = &["noauth", "fast"];

/// The command table, sorted by name: each command's arity, flags and key
/// positions (what `COMMAND` reports) and the function that runs it.
pub(super) const COMMANDS: &[Spec] = &[
    Spec {
        name: "auth",
        arity: -2,
        flags: AUTH_FREE,
        keys: (0, 0, 0),
        handler: connection::auth,
    },
    Spec {
        name: "bgsave",
        arity: -1,
        flags: ADMIN,
        keys: (0, 0, 0),
        handler: server::bgsave,
    },
    Spec {
        name: "client",
        arity: -2,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::client,
    },
    Spec {
        name: "command",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::command,
    },
    Spec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly"],
        keys: (0, 0, 0),
        handler: keyspace::dbsize,
    },
    Spec {
        name: "del",
        arity: -2,
        flags: WRITE,
        keys: (1, -1, 1),
        handler: strings::del,
    },
    Spec {
        name: "discard",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::discard,
    },
    Spec {
        name: "echo",
        arity: 2,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::echo,
    },
    Spec {
        name: "exec",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::exec,
    },
    Spec {
        name: "exists",
        arity: -2,
        flags: READ,
        keys: (1, -1, 1),
        handler: strings::exists,
    },
    Spec {
        name: "get",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
        handler: strings::get,
    },
    Spec {
        name: "info",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: server::info,
    },
    Spec {
        name: "lastsave",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: server::lastsave,
    },
    Spec {
        name: "mget",
        arity: -2,
        flags: READ,
        keys: (1, -1, 1),
        handler: strings::mget,
    },
    Spec {
        name: "mset",
        arity: -3,
        flags: WRITE,
        keys: (1, -1, 2),
        handler: strings::mset,
    },
    Spec {
        name: "multi",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::multi,
    },
    Spec {
        name: "ping",
        arity: -1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::ping,
    },
    Spec {
        name: "quit",
        arity: -1,
        flags: AUTH_FREE,
        keys: (0, 0, 0),
        handler: connection::quit,
    },
    Spec {
        name: "rkv.scan",
        arity: 4,
        flags: &["readonly"],
        keys: (0, 0, 0),
        handler: keyspace::range_scan,
    },
    Spec {
        name: "role",
        arity: 1,
        flags: FAST,
        keys: (0, 0, 0),
        handler: server::role,
    },
    Spec {
        name: "save",
        arity: 1,
        flags: ADMIN,
        keys: (0, 0, 0),
        handler: server::save,
    },
    Spec {
        name: "scan",
        arity: -2,
        flags: &["readonly"],
        keys: (0, 0, 0),
        handler: keyspace::scan,
    },
    Spec {
        name: "select",
        arity: 2,
        flags: FAST,
        keys: (0, 0, 0),
        handler: connection::select,
    },
    Spec {
        name: "set",
        arity: -3,
        flags: WRITE,
        keys: (1, 1, 1),
        handler: strings::set,
    },
    Spec {
        name: "ttl",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
        handler: strings::ttl,
    },
    Spec {
        name: "type",
        arity: 2,
        flags: READ,
        keys: (1, 1, 1),
        handler: strings::type_of,
    },
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
fn count(shared: &Shared, slot: usize, reply: &Reply) {
    shared.stats.calls[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if matches!(reply, Reply::Error(_)) {
        shared
            .stats
            .command_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Executes one request, and counts it by command name.
pub(crate) fn execute(args: &[Vec<u8>], conn: &mut Connection, shared: &Shared) -> (Reply, Action) {
    let (reply, action, slot) = run(args, conn, shared);
    count(shared, slot, &reply);
    (reply, action)
}

/// Executes one request; also returns the command's slot in the counts.
fn run(args: &[Vec<u8>], conn: &mut Connection, shared: &Shared) -> (Reply, Action, usize) {
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
    let found = position(name);
    let slot = found.unwrap_or(COMMANDS.len());
    if conn.refused_multi {
        return (refused_transaction(name, conn), Action::Continue, slot);
    }
    let Some(spec) = found.map(|i| &COMMANDS[i]) else {
        return (unknown_command(args), Action::Continue, slot);
    };
    let argc = args.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return (
            Reply::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            Action::Continue,
            slot,
        );
    }
    if !conn.authenticated && !spec.flags.contains(&"noauth") {
        return (
            Reply::error("NOAUTH Authentication required."),
            Action::Continue,
            slot,
        );
    }
    let mut ctx = Ctx {
        args,
        conn,
        shared,
        close: false,
    };
    let reply = (spec.handler)(&mut ctx);
    let action = if ctx.close {
        Action::Close
    } else {
        Action::Continue
    };
    (reply, action, slot)
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

fn storage_error(e: crate::Error) -> Reply {
    tracing::error!("{e}");
    Reply::error(format!("ERR {e}"))
}

/// Plain `SET key value` requests of one pipeline, written as one batch.
#[derive(Default)]
pub(crate) struct SetBatch {
    batch: WriteBatch,
    count: usize,
}

impl SetBatch {
    /// Whether `args`, from `conn`, may join the batch: a plain `SET key
    /// value` (no options) that [`execute`] would run as it is: the
    /// connection is authenticated and not inside a refused `MULTI`.
    pub(crate) fn accepts(args: &[Vec<u8>], conn: &Connection) -> bool {
        conn.authenticated
            && !conn.refused_multi
            && args.len() == 3
            && args[0].eq_ignore_ascii_case(b"set")
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
        let set = position("set").expect("SET is in the command table");
        for _ in 0..std::mem::take(&mut self.count) {
            count(shared, set, &reply);
            reply.encode(out);
        }
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
