//! Expiry commands: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (with NX, XX, GT,
//! LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME and PERSIST, as Redis 7's
//! `expire.c` has them. A deadline is stored with the key (see
//! [`crate::db`]); an expired key is invisible at once, everywhere.

use super::args::{self, NOT_AN_INTEGER};
use super::Ctx;
use crate::resp::Reply;

pub(super) fn expire(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_deadline(ctx, true, 1000, "expire")
}

pub(super) fn pexpire(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_deadline(ctx, true, 1, "pexpire")
}

pub(super) fn expireat(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_deadline(ctx, false, 1000, "expireat")
}

pub(super) fn pexpireat(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_deadline(ctx, false, 1, "pexpireat")
}

/// The NX, XX, GT and LT options of the EXPIRE family.
#[derive(Default)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Conditions {
    fn parse(options: &[Vec<u8>]) -> Result<Conditions, Reply> {
        let mut c = Conditions::default();
        for option in options {
            match args::upper(option).as_str() {
                "NX" => c.nx = true,
                "XX" => c.xx = true,
                "GT" => c.gt = true,
                "LT" => c.lt = true,
                _ => {
                    return Err(Reply::error(format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(option)
                    )))
                }
            }
        }
        if c.nx && (c.xx || c.gt || c.lt) {
            return Err(Reply::error(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        if c.gt && c.lt {
            return Err(Reply::error(
                "ERR GT and LT options at the same time are not compatible",
            ));
        }
        Ok(c)
    }

    /// Whether a key whose deadline is `current` takes the deadline `when`.
    fn allow(&self, current: Option<u64>, when: i64) -> bool {
        let current = current.map(|c| c as i64);
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.is_none_or(|c| when <= c)
            || self.lt && current.is_some_and(|c| when >= c))
    }
}

/// Redis's `expireGenericCommand`: a deadline `relative` to now or
/// absolute, in units of `unit` ms. A deadline already past deletes the
/// key; either way the answer is 1 when the key exists and the conditions
/// hold.
fn set_deadline(ctx: &mut Ctx<'_, '_>, relative: bool, unit: i64, command: &str) -> Reply {
    let args = ctx.args;
    let conditions = match Conditions::parse(&args[3..]) {
        Ok(conditions) => conditions,
        Err(reply) => return reply,
    };
    let Some(count) = args::int(&args[2]) else {
        return Reply::error(NOT_AN_INTEGER);
    };
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    let Some(ms) = count.checked_mul(unit) else {
        return invalid();
    };
    ctx.write(|txn| {
        let base = if relative { txn.now() as i64 } else { 0 };
        let Some(when) = ms.checked_add(base) else {
            return Ok(invalid());
        };
        let key = &args[1];
        let Some(entry) = txn.get(key)? else {
            return Ok(Reply::Integer(0));
        };
        if !conditions.allow(entry.expires_at, when) {
            return Ok(Reply::Integer(0));
        }
        // A deadline already past (or negative) deletes the key.
        txn.put(key, entry.value, Some(when.max(0) as u64))?;
        Ok(Reply::Integer(1))
    })
}

pub(super) fn ttl(ctx: &mut Ctx<'_, '_>) -> Reply {
    report(ctx, false, false)
}

pub(super) fn pttl(ctx: &mut Ctx<'_, '_>) -> Reply {
    report(ctx, true, false)
}

pub(super) fn expiretime(ctx: &mut Ctx<'_, '_>) -> Reply {
    report(ctx, false, true)
}

pub(super) fn pexpiretime(ctx: &mut Ctx<'_, '_>) -> Reply {
    report(ctx, true, true)
}

/// Redis's `ttlGenericCommand`: -2 for no key, -1 for no deadline, else
/// the time left (or the deadline, `absolute`), in ms or rounded seconds.
fn report(ctx: &mut Ctx<'_, '_>, ms: bool, absolute: bool) -> Reply {
    let key = &ctx.args[1];
    ctx.read(|txn| {
        let Some(entry) = txn.get(key)? else {
            return Ok(Reply::Integer(-2));
        };
        let Some(at) = entry.expires_at else {
            return Ok(Reply::Integer(-1));
        };
        let at = at as i64;
        let left = if absolute { at } else { at - txn.now() as i64 }.max(0);
        Ok(Reply::Integer(if ms { left } else { (left + 500) / 1000 }))
    })
}

pub(super) fn persist(ctx: &mut Ctx<'_, '_>) -> Reply {
    let key = &ctx.args[1];
    ctx.write(|txn| match txn.get(key)? {
        Some(entry) if entry.expires_at.is_some() => {
            txn.put(key, entry.value, None)?;
            Ok(Reply::Integer(1))
        }
        _ => Ok(Reply::Integer(0)),
    })
}
