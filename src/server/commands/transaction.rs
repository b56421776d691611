//! Transactions: MULTI, EXEC, DISCARD, WATCH and UNWATCH, as Redis 7's
//! `multi.c`. Commands after MULTI are checked and queued (`+QUEUED`); one
//! refused at queueing (unknown, wrong arity, a write on a follower) makes
//! EXEC answer `-EXECABORT`. EXEC runs the queue on one [`Txn`] under the
//! database's write lock and commits it as one RocksDB batch, so a backup,
//! and so a follower, holds all of the transaction or none of it. A key
//! written by anyone since it was WATCHed (or expired since) makes EXEC
//! answer a null array and run nothing.

use super::txn::Txn;
use super::{count_call, refusal_reply, run_on, Ctx, Spec};
use crate::db::now_ms;
use crate::resp::Reply;
use crate::server::watch::Watcher;
use crate::server::{Connection, Shared};

/// A connection's transaction between MULTI and EXEC.
#[derive(Default)]
pub(crate) struct Multi {
    /// Each command with its slot in the command table.
    queued: Vec<(usize, Vec<Vec<u8>>)>,
    /// Bytes of the queued arguments, capped by `--max-request-bytes`.
    bytes: usize,
    /// Whether any queued command is a write.
    writes: bool,
    /// A command was refused while queueing: EXEC aborts.
    failed: bool,
}

impl Multi {
    /// Whether `EXEC` of this transaction may run in a worker's write
    /// group: it writes, nothing was refused, and nothing is watched (a
    /// watched key may be written earlier in the same group, which only
    /// its commit would report).
    pub(crate) fn joins_group(&self, conn: &Connection) -> bool {
        self.writes && !self.failed && conn.watching.is_none()
    }
}

/// A connection's WATCH: its flag in the server's [`Watches`], and the
/// keys with the deadline each had when watched.
///
/// [`Watches`]: crate::server::watch::Watches
pub(crate) struct Watching {
    watcher: Watcher,
    keys: Vec<(Vec<u8>, Option<u64>)>,
}

/// Queues `args` (its command checked: its slot and spec, or the reply
/// refusing it) in the connection's transaction, or refuses it, which
/// dooms the transaction.
pub(super) fn queue(
    args: &[Vec<u8>],
    spec: Result<(usize, &'static Spec), Reply>,
    conn: &mut Connection,
    shared: &Shared,
) -> Reply {
    let multi = conn.multi.as_mut().expect("queueing inside MULTI");
    let refused = |multi: &mut Multi, reply: Reply| {
        multi.failed = true;
        reply
    };
    let (slot, spec) = match spec {
        Ok(checked) => checked,
        Err(reply) => return refused(multi, reply),
    };
    let write = spec.flags.contains(&"write");
    if write {
        if let Err(refusal) = shared.backend.writer() {
            return refused(multi, refusal_reply(refusal));
        }
    }
    let size: usize = args.iter().map(|a| a.len() + 16).sum();
    let cap = shared.config.limits.max_request_bytes;
    if multi.bytes + size > cap {
        return refused(
            multi,
            Reply::error(format!(
                "ERR transaction larger than --max-request-bytes ({cap} bytes)"
            )),
        );
    }
    multi.bytes += size;
    multi.writes |= write;
    multi.queued.push((slot, args.to_vec()));
    Reply::Simple("QUEUED".into())
}

pub(super) fn multi(ctx: &mut Ctx<'_, '_>) -> Reply {
    if ctx.conn.multi.is_some() {
        return Reply::error("ERR MULTI calls can not be nested");
    }
    ctx.conn.multi = Some(Multi::default());
    Reply::ok()
}

pub(super) fn discard(ctx: &mut Ctx<'_, '_>) -> Reply {
    if ctx.conn.multi.take().is_none() {
        return Reply::error("ERR DISCARD without MULTI");
    }
    unwatch(ctx.conn, ctx.shared);
    Reply::ok()
}

pub(super) fn watch(ctx: &mut Ctx<'_, '_>) -> Reply {
    if ctx.conn.multi.is_some() {
        return Reply::error("ERR WATCH inside MULTI is not allowed");
    }
    let (args, shared) = (ctx.args, ctx.shared);
    let id = ctx.conn.id;
    // The deadlines the keys have now: one passing before EXEC spoils it.
    let deadlines = ctx.view(|txn| {
        args[1..]
            .iter()
            .map(|key| Ok(txn.get(key)?.and_then(|e| e.expires_at)))
            .collect::<crate::Result<Vec<_>>>()
    });
    let deadlines = match deadlines {
        Ok(deadlines) => deadlines,
        Err(reply) => return reply,
    };
    let watching = ctx.conn.watching.get_or_insert_with(|| Watching {
        watcher: Watcher::new(id),
        keys: Vec::new(),
    });
    for (key, deadline) in args[1..].iter().zip(deadlines) {
        shared.watches.watch(key, &watching.watcher);
        watching.keys.push((key.clone(), deadline));
    }
    Reply::ok()
}

pub(super) fn unwatch_command(ctx: &mut Ctx<'_, '_>) -> Reply {
    unwatch(ctx.conn, ctx.shared);
    Reply::ok()
}

/// Forgets the connection's watched keys (EXEC, DISCARD, UNWATCH, close);
/// returns what was watched.
pub(crate) fn unwatch(conn: &mut Connection, shared: &Shared) -> Option<Watching> {
    let watching = conn.watching.take()?;
    let keys = watching.keys.iter().map(|(k, _)| k.as_slice());
    shared.watches.unwatch(keys, &watching.watcher);
    Some(watching)
}

/// `EXEC`: the queued commands' replies, or `-EXECABORT` when one was
/// refused, or a null array when a watched key changed.
pub(super) fn exec(ctx: &mut Ctx<'_, '_>) -> Reply {
    let Some(multi) = ctx.conn.multi.take() else {
        return Reply::error("ERR EXEC without MULTI");
    };
    let watching = unwatch(ctx.conn, ctx.shared);
    if multi.failed {
        return Reply::error("EXECABORT Transaction discarded because of previous errors.");
    }
    if let Some(txn) = ctx.txn.as_deref_mut() {
        // In a worker's write group (see `Multi::joins_group`): the queue
        // runs on the group's transaction, after the writes before it.
        let replies: Vec<Reply> = multi
            .queued
            .iter()
            .map(|(slot, args)| {
                let reply = run_on(txn, args, *slot, ctx.conn, ctx.shared);
                count_call(ctx.shared, *slot, &reply);
                reply
            })
            .collect();
        return Reply::array(replies);
    }
    let backend = &ctx.shared.backend;
    let writes = multi.writes;
    let db = match if writes {
        backend.writer()
    } else {
        backend.reader()
    } {
        Ok(db) => db,
        Err(refusal) => return refusal_reply(refusal),
    };
    // Held from the watch check to the commit: nothing writes in between,
    // and the reads see one state, as in Redis's single thread.
    let ordered = db.write_lock();
    let now = now_ms();
    if let Some(watching) = &watching {
        let expired = watching
            .keys
            .iter()
            .any(|(_, deadline)| deadline.is_some_and(|d| d <= now));
        if watching.watcher.spoiled() || expired {
            return Reply::Array(None);
        }
    }
    let mut txn = if writes {
        Txn::writing(&db, now, &ordered)
    } else {
        // A follower applies the log beside the lock: a snapshot it is.
        Txn::new(&db, now)
    };
    let replies: Vec<Reply> = multi
        .queued
        .iter()
        .map(|(slot, args)| {
            let reply = run_on(&mut txn, args, *slot, ctx.conn, ctx.shared);
            count_call(ctx.shared, *slot, &reply);
            reply
        })
        .collect();
    let committed = super::commit(txn, ctx.shared);
    ctx.conn.last_write = Some(db.latest_sequence_number());
    match committed {
        Ok(()) => Reply::array(replies),
        Err(e) => super::storage_error(e),
    }
}
