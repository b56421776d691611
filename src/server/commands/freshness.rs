//! Freshness the client controls. A position is the master's RocksDB
//! sequence number: `RKV.POSITION` on the master says the one this
//! connection's last write reached; on a follower, `RKV.WAIT` blocks until
//! its data holds a position (or a timeout passes), and after
//! `RKV.READAFTER` every read on the connection does. `RKV.MAXSTALENESS`
//! bounds how old the data a connection reads may be.
//!
//! A waiting request is parked by the worker (see [`must_wait`] and
//! [`crate::server::Waiters`]): it holds no thread.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{args, refusal_reply, Ctx, COMMANDS};
use crate::resp::Reply;
use crate::server::{Connection, Refusal, Shared, Wait};

/// How long a read after `RKV.READAFTER` waits for its position unless
/// the command says.
pub(crate) const READ_AFTER_TIMEOUT: Duration = Duration::from_secs(1);

/// `RKV.POSITION`: on a master, the position this connection's last write
/// reached (the newest write's, before it wrote); on a follower, the
/// position its data holds.
pub(super) fn position(ctx: &mut Ctx<'_, '_>) -> Reply {
    let here = ctx.shared.backend.position();
    Reply::Integer(ctx.conn.last_write.unwrap_or(here) as i64)
}

/// `RKV.WAIT position timeout-ms`: the position the data holds once it is
/// at least `position`. Reached here only when the worker did not park the
/// request: the position is there, the time is up, or the request cannot
/// wait (on a master, inside `MULTI`).
pub(super) fn wait(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (position, timeout) = match wait_args(ctx.args) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let here = ctx.shared.backend.position();
    if here >= position {
        return Reply::Integer(here as i64);
    }
    if !ctx.shared.positions_move {
        return Reply::error(format!(
            "ERR position {position} is past this master's newest write ({here})"
        ));
    }
    timed_out(
        &Wait {
            position,
            deadline: None,
            timeout,
        },
        ctx.shared,
    )
}

/// `RKV.READAFTER position [timeout-ms]`: every later read on this
/// connection waits until the data holds `position` (0 stops waiting).
pub(super) fn read_after(ctx: &mut Ctx<'_, '_>) -> Reply {
    if ctx.args.len() > 3 {
        return Reply::error(args::SYNTAX);
    }
    let Some(position) = non_negative(&ctx.args[1]) else {
        return Reply::error("ERR position is not a non-negative integer");
    };
    let timeout = match ctx.args.get(2) {
        None => READ_AFTER_TIMEOUT,
        Some(arg) => match non_negative(arg) {
            Some(ms) => Duration::from_millis(ms),
            None => return Reply::error("ERR timeout is not a non-negative integer (ms)"),
        },
    };
    ctx.conn.read_after = (position > 0).then_some((position, timeout));
    Reply::ok()
}

/// `RKV.MAXSTALENESS ms|OFF`: later reads on this connection are refused
/// while the data is older than `ms` (or its age unknown).
pub(super) fn max_staleness(ctx: &mut Ctx<'_, '_>) -> Reply {
    let arg = &ctx.args[1];
    if arg.eq_ignore_ascii_case(b"off") {
        ctx.conn.max_staleness = None;
        return Reply::ok();
    }
    match non_negative(arg).filter(|&ms| ms > 0) {
        Some(ms) => {
            ctx.conn.max_staleness = Some(Duration::from_millis(ms));
            Reply::ok()
        }
        None => Reply::error("ERR the bound is a positive number of milliseconds, or OFF"),
    }
}

/// Whether the connection's staleness bound lets it read now: the refusal
/// (`MASTERDOWN`, as `--stale-reads refuse` answers) when it does not.
pub(super) fn check_bound(conn: &Connection, shared: &Shared) -> Result<(), Reply> {
    let Some(bound) = conn.max_staleness else {
        return Ok(());
    };
    let reason = match shared.backend.staleness() {
        Some(age) if age <= bound => return Ok(()),
        Some(age) => format!(
            "the data is {} old, more than this connection's RKV.MAXSTALENESS {}",
            ms(age),
            ms(bound)
        ),
        None => format!(
            "the data's age is unknown (no heartbeat of the master seen changing since this \
             follower started), so it cannot be shown within this connection's \
             RKV.MAXSTALENESS {}",
            ms(bound)
        ),
    };
    shared.stats.reads_refused_bound.fetch_add(1, Relaxed);
    Err(refusal_reply(Refusal::Stale { reason }))
}

/// What the request must wait for before it runs, if anything: `RKV.WAIT`
/// for a position the data does not hold yet, or a read on a connection
/// that reads after one. Only where the position moves by itself (on a
/// follower), and never inside `MULTI` (queued commands run at `EXEC`).
pub(crate) fn must_wait(
    request: &[Vec<u8>],
    found: Option<usize>,
    conn: &Connection,
    shared: &Shared,
) -> Option<Wait> {
    if conn.multi.is_some() || !conn.authenticated {
        return None;
    }
    let spec = &COMMANDS[found?];
    let (position, timeout) = if spec.name == "rkv.wait" {
        if request.len() != 3 {
            return None;
        }
        wait_args(request).ok()?
    } else {
        let read_after = conn.read_after?;
        if !spec.flags.contains(&"readonly") {
            return None;
        }
        read_after
    };
    if !shared.positions_move {
        return None;
    }
    if shared.backend.position() >= position {
        return None;
    }
    Some(Wait {
        position,
        // 0 waits as long as the client stays, as Redis's WAIT does.
        deadline: (!timeout.is_zero()).then(|| Instant::now() + timeout),
        timeout,
    })
}

/// The reply to a request whose wait ran out.
pub(crate) fn timed_out(wait: &Wait, shared: &Shared) -> Reply {
    shared.stats.wait_timeouts.fetch_add(1, Relaxed);
    let here = shared.backend.position();
    let age = match shared.backend.staleness() {
        Some(age) => format!("its data is {} old", ms(age)),
        None => "its data's age is unknown".to_string(),
    };
    Reply::error(format!(
        "TIMEOUT position {} not reached within {}: this follower holds position {here} ({age})",
        wait.position,
        humantime::format_duration(wait.timeout),
    ))
}

/// `RKV.WAIT`'s position and timeout.
fn wait_args(request: &[Vec<u8>]) -> Result<(u64, Duration), Reply> {
    let Some(position) = non_negative(&request[1]) else {
        return Err(Reply::error("ERR position is not a non-negative integer"));
    };
    let Some(ms) = non_negative(&request[2]) else {
        return Err(Reply::error(
            "ERR timeout is not a non-negative integer (ms)",
        ));
    };
    Ok((position, Duration::from_millis(ms)))
}

fn non_negative(arg: &[u8]) -> Option<u64> {
    args::int(arg).and_then(|n| u64::try_from(n).ok())
}

/// A duration to the millisecond, as humans read it (`3s 12ms`).
fn ms(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}
