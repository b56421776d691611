//! String commands: GET, MGET, SET, MSET, DEL, EXISTS, TYPE, TTL. Every
//! write holds the database's write lock, so the read-modify-writes (`SET …
//! NX|XX|GET`, `DEL`'s count) are atomic against every other write.

use rocksdb::WriteBatch;

use super::Ctx;
use crate::db::Db;
use crate::resp::Reply;

pub(super) fn get(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.read(|db| Ok(Reply::Bulk(db.get(&args[1])?)))
}

/// `MGET`, refused when the values add up to more than `--max-reply-bytes`.
pub(super) fn mget(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    let cap = ctx.shared.config.limits.max_reply_bytes;
    ctx.read(|db| {
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
        Ok(Reply::array(values))
    })
}

pub(super) fn exists(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.read(|db| {
        let mut count = 0;
        for key in &args[1..] {
            count += i64::from(db.get(key)?.is_some());
        }
        Ok(Reply::Integer(count))
    })
}

pub(super) fn type_of(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.read(|db| {
        let kind = if db.get(&args[1])?.is_some() {
            "string"
        } else {
            "none"
        };
        Ok(Reply::Simple(kind.into()))
    })
}

/// No key expires in rkv: -1 for a key, -2 for none.
pub(super) fn ttl(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.read(|db| {
        Ok(Reply::Integer(if db.get(&args[1])?.is_some() {
            -1
        } else {
            -2
        }))
    })
}

pub(super) fn mset(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    if args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'mset' command");
    }
    ctx.write(|db| {
        let mut batch = WriteBatch::default();
        for pair in args[1..].chunks(2) {
            batch.put(&pair[0], &pair[1]);
        }
        let _ordered = db.write_lock();
        db.write(batch)?;
        Ok(Reply::ok())
    })
}

/// `DEL`: counting needs the keys' presence and the delete to be atomic; a
/// key named twice is removed, and counted, once.
pub(super) fn del(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.write(|db| {
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
        Ok(Reply::Integer(count))
    })
}

pub(super) fn set(ctx: &mut Ctx<'_>) -> Reply {
    let args = ctx.args;
    ctx.write(|db| set_on(args, db))
}

/// `SET key value [NX | XX] [GET]`; expiry options are refused, since rkv
/// keys do not expire.
fn set_on(args: &[Vec<u8>], db: &Db) -> crate::Result<Reply> {
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
