//! String commands: the GET and SET families, counters, ranges, APPEND,
//! LCS, and DEL/UNLINK. Each runs on a [`Txn`](super::txn::Txn): reads see
//! the command's (or transaction's) own writes, and a write command holds
//! the database's write lock from its first read to its commit, so every
//! read-modify-write is atomic against every other write. Replies and
//! error texts are Redis 7's.

use super::args::{self, Deadline, NOT_AN_INTEGER, SYNTAX};
use super::Ctx;
use crate::resp::Reply;

pub(super) fn get(ctx: &mut Ctx<'_, '_>) -> Reply {
    let key = &ctx.args[1];
    ctx.read(|txn| Ok(Reply::Bulk(txn.value_alone(key)?)))
}

/// `MGET`, refused when the values add up to more than `--max-reply-bytes`.
pub(super) fn mget(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let cap = ctx.shared.config.limits.max_reply_bytes;
    ctx.read(|txn| {
        let mut size = 0usize;
        let mut values = Vec::with_capacity(args.len() - 1);
        for key in &args[1..] {
            let value = txn.value(key)?;
            size += value.as_ref().map_or(5, |v| v.len() + 16);
            if size > cap {
                return Ok(too_large(cap));
            }
            values.push(Reply::Bulk(value));
        }
        Ok(Reply::array(values))
    })
}

fn too_large(cap: usize) -> Reply {
    Reply::error(format!(
        "ERR reply larger than --max-reply-bytes ({cap} bytes): ask for fewer keys"
    ))
}

pub(super) fn strlen(ctx: &mut Ctx<'_, '_>) -> Reply {
    let key = &ctx.args[1];
    ctx.read(|txn| {
        let len = txn.get(key)?.map_or(0, |e| e.value.len());
        Ok(Reply::Integer(len as i64))
    })
}

/// `GETRANGE key start end` (and its old name `SUBSTR`): inclusive, with
/// negative offsets from the end, clamped to the string.
pub(super) fn getrange(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let (Some(start), Some(end)) = (args::int(&args[2]), args::int(&args[3])) else {
        return Reply::error(NOT_AN_INTEGER);
    };
    ctx.read(|txn| {
        let value = txn.value(&args[1])?.unwrap_or_default();
        Ok(Reply::bulk(range_of(&value, start, end)))
    })
}

/// Redis's `getrangeCommand` arithmetic.
fn range_of(value: &[u8], mut start: i64, mut end: i64) -> &[u8] {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0).min(len - 1);
    if start > end || len == 0 {
        return &[];
    }
    &value[start as usize..=end as usize]
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts |
/// KEEPTTL]`.
pub(super) fn set(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let options = match args::SetOptions::parse(&args[3..], args::Family::Set) {
        Ok(options) => options,
        Err(reply) => return reply,
    };
    let deadline = match options.deadline("set") {
        Ok(deadline) => deadline,
        Err(reply) => return reply,
    };
    let (key, value) = (&args[1], &args[2]);
    if !(options.nx || options.xx || options.get || options.keep_ttl) && deadline.is_none() {
        return ctx.write(|txn| {
            txn.set_plain(key, value.clone());
            Ok(Reply::ok())
        });
    }
    ctx.write(|txn| {
        let old = txn.get(key)?;
        let apply = !(options.nx && old.is_some() || options.xx && old.is_none());
        if apply {
            let expires_at = match deadline {
                Some(at) => Some(at),
                None if options.keep_ttl => old.as_ref().and_then(|e| e.expires_at),
                None => None,
            };
            txn.put(key, value.clone(), expires_at)?;
        }
        Ok(match (options.get, apply) {
            (true, _) => Reply::Bulk(old.map(|e| e.value)),
            (false, true) => Reply::ok(),
            (false, false) => Reply::Bulk(None),
        })
    })
}

pub(super) fn setnx(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (key, value) = (&ctx.args[1], &ctx.args[2]);
    ctx.write(|txn| {
        if txn.exists(key)? {
            return Ok(Reply::Integer(0));
        }
        txn.set_plain(key, value.clone());
        Ok(Reply::Integer(1))
    })
}

/// `SETEX key seconds value`.
pub(super) fn setex(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_with_ttl(ctx, Deadline::In, 1000, "setex")
}

/// `PSETEX key milliseconds value`.
pub(super) fn psetex(ctx: &mut Ctx<'_, '_>) -> Reply {
    set_with_ttl(ctx, Deadline::In, 1, "psetex")
}

fn set_with_ttl(ctx: &mut Ctx<'_, '_>, kind: Deadline, unit: i64, command: &str) -> Reply {
    let args = ctx.args;
    let deadline = match args::deadline(&args[2], kind, unit, command) {
        Ok(deadline) => deadline,
        Err(reply) => return reply,
    };
    ctx.write(|txn| {
        txn.put(&args[1], args[3].clone(), Some(deadline))?;
        Ok(Reply::ok())
    })
}

/// `GETEX key [EX s | PX ms | EXAT ts | PXAT ms-ts | PERSIST]`.
pub(super) fn getex(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let options = match args::SetOptions::parse(&args[2..], args::Family::GetEx) {
        Ok(options) => options,
        Err(reply) => return reply,
    };
    let key = &args[1];
    // A write command even without options, as in Redis: a follower
    // refuses it.
    ctx.write(|txn| {
        let Some(old) = txn.get(key)? else {
            return Ok(Reply::Bulk(None));
        };
        // The deadline is checked once the key is known to exist, as Redis
        // does: a missing key answers nil whatever the deadline.
        let deadline = match options.deadline("getex") {
            Ok(deadline) => deadline,
            Err(reply) => return Ok(reply),
        };
        let expires_at = if options.persist {
            None
        } else {
            deadline.or(old.expires_at)
        };
        if expires_at != old.expires_at {
            txn.put(key, old.value.clone(), expires_at)?;
        }
        Ok(Reply::bulk(old.value))
    })
}

pub(super) fn getdel(ctx: &mut Ctx<'_, '_>) -> Reply {
    let key = &ctx.args[1];
    ctx.write(|txn| {
        let old = txn.get(key)?;
        if old.is_some() {
            txn.set(key, None)?;
        }
        Ok(Reply::Bulk(old.map(|e| e.value)))
    })
}

/// `GETSET key value`: sets without a deadline, returns the old value.
pub(super) fn getset(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (key, value) = (&ctx.args[1], &ctx.args[2]);
    ctx.write(|txn| {
        let old = txn.get(key)?;
        txn.put(key, value.clone(), None)?;
        Ok(Reply::Bulk(old.map(|e| e.value)))
    })
}

pub(super) fn mset(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    if args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'mset' command");
    }
    ctx.write(|txn| {
        for pair in args[1..].chunks(2) {
            txn.set_plain(&pair[0], pair[1].clone());
        }
        Ok(Reply::ok())
    })
}

/// `MSETNX`: all keys set, or none when any exists.
pub(super) fn msetnx(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    if args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'msetnx' command");
    }
    ctx.write(|txn| {
        for pair in args[1..].chunks(2) {
            if txn.exists(&pair[0])? {
                return Ok(Reply::Integer(0));
            }
        }
        for pair in args[1..].chunks(2) {
            txn.set_plain(&pair[0], pair[1].clone());
        }
        Ok(Reply::Integer(1))
    })
}

pub(super) fn incr(ctx: &mut Ctx<'_, '_>) -> Reply {
    add(ctx, 1)
}

pub(super) fn decr(ctx: &mut Ctx<'_, '_>) -> Reply {
    add(ctx, -1)
}

pub(super) fn incrby(ctx: &mut Ctx<'_, '_>) -> Reply {
    match args::int(&ctx.args[2]) {
        Some(by) => add(ctx, by),
        None => Reply::error(NOT_AN_INTEGER),
    }
}

pub(super) fn decrby(ctx: &mut Ctx<'_, '_>) -> Reply {
    match args::int(&ctx.args[2]) {
        Some(i64::MIN) => Reply::error("ERR decrement would overflow"),
        Some(by) => add(ctx, -by),
        None => Reply::error(NOT_AN_INTEGER),
    }
}

/// Adds `by` to the integer at the key (0 when absent), keeping its
/// deadline.
fn add(ctx: &mut Ctx<'_, '_>, by: i64) -> Reply {
    let key = &ctx.args[1];
    ctx.write(|txn| {
        let old = txn.get(key)?;
        let current = match &old {
            None => 0,
            Some(entry) => match args::int(&entry.value) {
                Some(n) => n,
                None => return Ok(Reply::error(NOT_AN_INTEGER)),
            },
        };
        let Some(sum) = current.checked_add(by) else {
            return Ok(Reply::error("ERR increment or decrement would overflow"));
        };
        let expires_at = old.and_then(|e| e.expires_at);
        let value = sum.to_string().into_bytes();
        txn.put(key, value, expires_at)?;
        Ok(Reply::Integer(sum))
    })
}

/// `INCRBYFLOAT`, in C's `long double` as Redis computes and prints it
/// (see [`args::add_float`]).
pub(super) fn incrbyfloat(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (key, by) = (&ctx.args[1], &ctx.args[2]);
    ctx.write(|txn| {
        let old = txn.get(key)?;
        let current = old.as_ref().map_or(&b"0"[..], |e| &e.value);
        let value = match args::add_float(current, by) {
            Ok(value) => value,
            Err(reply) => return Ok(reply),
        };
        let expires_at = old.and_then(|e| e.expires_at);
        txn.put(key, value.clone(), expires_at)?;
        Ok(Reply::bulk(value))
    })
}

pub(super) fn append(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (key, tail) = (&ctx.args[1], &ctx.args[2]);
    let max = ctx.shared.config.limits.max_request_bytes;
    ctx.write(|txn| {
        let (mut value, expires_at) = match txn.get(key)? {
            Some(entry) => (entry.value, entry.expires_at),
            None => (Vec::new(), None),
        };
        if value.len() + tail.len() > max {
            return Ok(too_long(max));
        }
        value.extend_from_slice(tail);
        let len = value.len() as i64;
        txn.put(key, value, expires_at)?;
        Ok(Reply::Integer(len))
    })
}

/// A string may grow to `--max-request-bytes`, the largest a client can
/// SET, where Redis stops at its `proto-max-bulk-len`.
fn too_long(max: usize) -> Reply {
    Reply::error(format!(
        "ERR string exceeds maximum allowed size (--max-request-bytes, {max} bytes)"
    ))
}

/// `SETRANGE key offset value`: zero-padded, keeping the deadline.
pub(super) fn setrange(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (key, patch) = (&ctx.args[1], &ctx.args[3]);
    let max = ctx.shared.config.limits.max_request_bytes;
    let offset = match args::int(&ctx.args[2]) {
        Some(n) if n < 0 => return Reply::error("ERR offset is out of range"),
        Some(n) => n as u64,
        None => return Reply::error(NOT_AN_INTEGER),
    };
    ctx.write(|txn| {
        let old = txn.get(key)?;
        let len = old.as_ref().map_or(0, |e| e.value.len());
        if patch.is_empty() {
            return Ok(Reply::Integer(len as i64));
        }
        if offset + patch.len() as u64 > max as u64 {
            return Ok(too_long(max));
        }
        let (mut value, expires_at) = old.map_or((Vec::new(), None), |e| (e.value, e.expires_at));
        let end = offset as usize + patch.len();
        if value.len() < end {
            value.resize(end, 0);
        }
        value[offset as usize..end].copy_from_slice(patch);
        let len = value.len() as i64;
        txn.put(key, value, expires_at)?;
        Ok(Reply::Integer(len))
    })
}

/// `DEL` and `UNLINK`: a key named twice is removed, and counted, once.
pub(super) fn del(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    ctx.write(|txn| {
        let mut count = 0;
        for key in &args[1..] {
            if txn.exists(key)? {
                txn.set(key, None)?;
                count += 1;
            }
        }
        Ok(Reply::Integer(count))
    })
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]`. Its
/// table takes 4 bytes per pair of positions, up to `--max-reply-bytes`
/// (Redis allows up to its `proto-max-bulk-len`, 512 MiB).
pub(super) fn lcs(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let cap = ctx.shared.config.limits.max_reply_bytes as u64;
    ctx.read(|txn| {
        let a = txn.value(&args[1])?.unwrap_or_default();
        let b = txn.value(&args[2])?.unwrap_or_default();
        let (mut len, mut idx, mut with_len, mut min_len) = (false, false, false, 0i64);
        let mut i = 3;
        while i < args.len() {
            match args::upper(&args[i]).as_str() {
                "IDX" => idx = true,
                "LEN" => len = true,
                "WITHMATCHLEN" => with_len = true,
                "MINMATCHLEN" if i + 1 < args.len() => {
                    match args::int(&args[i + 1]) {
                        Some(n) => min_len = n.max(0),
                        None => return Ok(Reply::error(NOT_AN_INTEGER)),
                    }
                    i += 1;
                }
                _ => return Ok(Reply::error(SYNTAX)),
            }
            i += 1;
        }
        if len && idx {
            return Ok(Reply::error(
                "ERR If you want both the length and indexes, please just use IDX.",
            ));
        }
        let table = (a.len() as u64 + 1) * (b.len() as u64 + 1) * 4;
        if table > cap {
            return Ok(Reply::error(
                "ERR Insufficient memory, transient memory for LCS exceeds --max-reply-bytes",
            ));
        }
        Ok(lcs_reply(&a, &b, len, idx, with_len, min_len))
    })
}

/// Redis's `lcsCommand`: the dynamic programming table, then a walk back
/// from its end that emits the matching ranges, last first.
fn lcs_reply(a: &[u8], b: &[u8], len: bool, idx: bool, with_len: bool, min_len: i64) -> Reply {
    let (alen, blen) = (a.len(), b.len());
    let width = blen + 1;
    let mut table = vec![0u32; (alen + 1) * width];
    for i in 1..=alen {
        for j in 1..=blen {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let total = table[alen * width + blen];
    if len && !idx {
        return Reply::Integer(i64::from(total));
    }
    let mut result = vec![0u8; total as usize];
    let mut matches = Vec::new();
    let (mut i, mut j, mut k) = (alen, blen, total as usize);
    // `a_start == alen` means no range is open.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[k - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            k -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * width + j] > table[i * width + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        let match_len = a_end as i64 - a_start as i64 + 1;
        if emit {
            if idx && (min_len == 0 || match_len >= min_len) {
                let pair = |s: usize, e: usize| {
                    Reply::array(vec![Reply::Integer(s as i64), Reply::Integer(e as i64)])
                };
                let mut one = vec![pair(a_start, a_end), pair(b_start, b_end)];
                if with_len {
                    one.push(Reply::Integer(match_len));
                }
                matches.push(Reply::array(one));
            }
            a_start = alen;
        }
    }
    if idx {
        Reply::Map(vec![
            (Reply::bulk("matches"), Reply::array(matches)),
            (Reply::bulk("len"), Reply::Integer(i64::from(total))),
        ])
    } else {
        Reply::bulk(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_clamps_as_redis_does() {
        let v = b"This is a string";
        assert_eq!(range_of(v, 0, 3), b"This");
        assert_eq!(range_of(v, -3, -1), b"ing");
        assert_eq!(range_of(v, 0, -1), v);
        assert_eq!(range_of(v, 10, 100), b"string");
        assert_eq!(range_of(v, -1, -5), b"");
        assert_eq!(range_of(b"", 0, -1), b"");
        assert_eq!(range_of(v, 5, 3), b"");
    }

    #[test]
    fn lcs_finds_the_longest_common_subsequence_and_its_ranges() {
        let reply = lcs_reply(b"ohmytext", b"mynewtext", false, false, false, 0);
        assert_eq!(reply, Reply::bulk("mytext"));
        assert_eq!(
            lcs_reply(b"ohmytext", b"mynewtext", true, false, false, 0),
            Reply::Integer(6)
        );
        let Reply::Map(fields) = lcs_reply(b"ohmytext", b"mynewtext", false, true, true, 4) else {
            panic!("IDX answers a map");
        };
        let range = |s, e| Reply::array(vec![Reply::Integer(s), Reply::Integer(e)]);
        assert_eq!(
            fields[0].1,
            Reply::array(vec![Reply::array(vec![
                range(4, 7),
                range(5, 8),
                Reply::Integer(4)
            ])])
        );
    }
}
