//! Keyspace commands: SCAN (with the cursors it keeps per connection),
//! KEYS, DBSIZE, EXISTS, TYPE, TOUCH, RANDOMKEY, RENAME, COPY, FLUSHDB,
//! OBJECT, MEMORY, and rkv's ordered RKV.SCAN. Keys are strings, the one
//! type rkv has.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::args::{self, NOT_AN_INTEGER, SYNTAX};
use super::txn::Txn;
use super::Ctx;
use crate::db::{Entry, ScanRange};
use crate::glob;
use crate::resp::Reply;
use crate::server::Shared;

pub(super) fn dbsize(ctx: &mut Ctx<'_, '_>) -> Reply {
    ctx.read(|txn| {
        let mut count = 0;
        for entry in txn.entries(&ScanRange::default()) {
            entry?;
            count += 1;
        }
        Ok(Reply::Integer(count))
    })
}

/// `EXISTS` and `TOUCH`: a key named twice counts twice, as in Redis.
pub(super) fn exists(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    ctx.read(|txn| {
        let mut count = 0;
        for key in &args[1..] {
            count += i64::from(txn.exists(key)?);
        }
        Ok(Reply::Integer(count))
    })
}

pub(super) fn type_of(ctx: &mut Ctx<'_, '_>) -> Reply {
    let key = &ctx.args[1];
    ctx.read(|txn| {
        let kind = if txn.exists(key)? { "string" } else { "none" };
        Ok(Reply::Simple(kind.into()))
    })
}

/// `KEYS pattern`: every live key matching, refused past
/// `--max-reply-bytes` (SCAN walks a large keyspace in steps).
pub(super) fn keys(ctx: &mut Ctx<'_, '_>) -> Reply {
    let pattern = &ctx.args[1];
    let cap = ctx.shared.config.limits.max_reply_bytes;
    ctx.read(|txn| {
        let prefix = glob::literal_prefix(pattern);
        let range = ScanRange {
            from: Some(prefix.clone()),
            to: None,
        };
        let (mut keys, mut size) = (Vec::new(), 0);
        for entry in txn.entries(&range) {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            if glob::matches(pattern, &key) {
                size += key.len() + 16;
                if size > cap {
                    return Ok(Reply::error(format!(
                        "ERR reply larger than --max-reply-bytes ({cap} bytes): use SCAN"
                    )));
                }
                keys.push(Reply::bulk(key));
            }
        }
        Ok(Reply::array(keys))
    })
}

/// `RANDOMKEY`: the first live key at or after a random point of the key
/// space, wrapping around; nil when there is none. Keys after a long gap
/// in the key order are picked more often than others.
pub(super) fn randomkey(ctx: &mut Ctx<'_, '_>) -> Reply {
    ctx.read(|txn| {
        let point: [u8; 8] = rand_bytes();
        let after = ScanRange {
            from: Some(point.to_vec()),
            to: None,
        };
        if let Some(entry) = txn.entries(&after).next() {
            return Ok(Reply::bulk(entry?.0));
        }
        match txn.entries(&ScanRange::default()).next() {
            Some(entry) => Ok(Reply::bulk(entry?.0)),
            None => Ok(Reply::Bulk(None)),
        }
    })
}

/// Eight random bytes, from the standard library's randomly keyed hasher
/// (no cryptographic need: a starting point for RANDOMKEY).
fn rand_bytes() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::db::now_ms());
    hasher.finish().to_be_bytes()
}

pub(super) fn rename(ctx: &mut Ctx<'_, '_>) -> Reply {
    rename_as(ctx, false)
}

pub(super) fn renamenx(ctx: &mut Ctx<'_, '_>) -> Reply {
    rename_as(ctx, true)
}

/// Redis's `renameGenericCommand`: the value and its deadline move.
fn rename_as(ctx: &mut Ctx<'_, '_>, nx: bool) -> Reply {
    let (from, to) = (&ctx.args[1], &ctx.args[2]);
    let done = |moved: bool| match (nx, moved) {
        (true, moved) => Reply::Integer(i64::from(moved)),
        (false, _) => Reply::ok(),
    };
    ctx.write(|txn| {
        let Some(entry) = txn.get(from)? else {
            return Ok(Reply::error("ERR no such key"));
        };
        if from == to {
            return Ok(done(false));
        }
        if nx && txn.exists(to)? {
            return Ok(done(false));
        }
        txn.set(to, Some(entry))?;
        txn.set(from, None)?;
        Ok(done(true))
    })
}

/// `COPY source destination [DB 0] [REPLACE]`: rkv has one database.
pub(super) fn copy(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        match args::upper(&args[i]).as_str() {
            "REPLACE" => replace = true,
            "DB" if i + 1 < args.len() => {
                match args::int(&args[i + 1]) {
                    Some(0) => {}
                    Some(n) if i32::try_from(n).is_ok() => {
                        return Reply::error("ERR DB index is out of range")
                    }
                    _ => return Reply::error(NOT_AN_INTEGER),
                }
                i += 1;
            }
            _ => return Reply::error(SYNTAX),
        }
        i += 1;
    }
    let (from, to) = (&args[1], &args[2]);
    if from == to {
        return Reply::error("ERR source and destination objects are the same");
    }
    ctx.write(|txn| {
        let Some(entry) = txn.get(from)? else {
            return Ok(Reply::Integer(0));
        };
        if !replace && txn.exists(to)? {
            return Ok(Reply::Integer(0));
        }
        txn.set(to, Some(entry))?;
        Ok(Reply::Integer(1))
    })
}

/// `FLUSHDB` and `FLUSHALL` `[ASYNC | SYNC]`: every key goes in one atomic
/// write (a range deletion), which reaches followers with the next backup.
pub(super) fn flushdb(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    match args.len() {
        1 => {}
        2 if matches!(args::upper(&args[1]).as_str(), "ASYNC" | "SYNC") => {}
        _ => return Reply::error(SYNTAX),
    }
    ctx.write(|txn| {
        txn.flush();
        Ok(Reply::ok())
    })
}

/// `OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT | HELP`.
pub(super) fn object(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let sub = args::upper(&args[1]);
    match (sub.as_str(), args.len()) {
        ("HELP", 2) => help(&[
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Not tracked by rkv: an error, as Redis without an LFU maxmemory policy.",
            "IDLETIME <key>",
            "    Not tracked by rkv: an error.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>: always 1 in rkv.",
            "HELP",
            "    Print this help.",
        ]),
        ("ENCODING" | "FREQ" | "IDLETIME" | "REFCOUNT", 3) => {
            let key = &args[2];
            ctx.read(|txn| {
                let Some(entry) = txn.get(key)? else {
                    return Ok(Reply::Bulk(None));
                };
                Ok(match sub.as_str() {
                    "ENCODING" => Reply::bulk(encoding(&entry.value)),
                    "REFCOUNT" => Reply::Integer(1),
                    "FREQ" => Reply::error(
                        "ERR An LFU maxmemory policy is not selected, access frequency not                          tracked. Please note that when switching between policies at runtime                          LRU and LFU data will take some time to adjust.",
                    ),
                    _ => Reply::error("ERR rkv does not track when a key was last read"),
                })
            })
        }
        ("ENCODING" | "FREQ" | "IDLETIME" | "REFCOUNT" | "HELP", _) => Reply::error(format!(
            "ERR wrong number of arguments for 'object|{}' command",
            sub.to_ascii_lowercase()
        )),
        _ => unknown_subcommand(&args[1], "OBJECT"),
    }
}

/// The encoding Redis would give a string with this content: `int`,
/// `embstr` (up to 44 bytes) or `raw`. Redis also answers `raw` for a
/// short string grown by APPEND or SETRANGE; rkv does not keep that
/// history.
fn encoding(value: &[u8]) -> &'static str {
    if args::int(value).is_some() {
        "int"
    } else if value.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// `MEMORY USAGE key [SAMPLES n]` (an estimate: key, value and RocksDB's
/// per-entry overhead) and `MEMORY HELP`.
pub(super) fn memory(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    match args::upper(&args[1]).as_str() {
        "USAGE" if args.len() == 3 || args.len() == 5 => {
            if args.len() == 5 {
                if args::upper(&args[3]) != "SAMPLES" {
                    return Reply::error(SYNTAX);
                }
                if args::int(&args[4]).is_none() {
                    return Reply::error(NOT_AN_INTEGER);
                }
            }
            let key = &args[2];
            ctx.read(|txn| {
                Ok(match txn.get(key)? {
                    None => Reply::Bulk(None),
                    Some(entry) => {
                        let deadline = if entry.expires_at.is_some() { 8 } else { 0 };
                        let bytes = key.len() + entry.value.len() + deadline + ENTRY_OVERHEAD;
                        Reply::Integer(bytes as i64)
                    }
                })
            })
        }
        "USAGE" => Reply::error(SYNTAX),
        "HELP" => help(&[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value: in rkv an estimate of",
            "    the bytes it takes in RocksDB.",
            "HELP",
            "    Print this help.",
        ]),
        _ => unknown_subcommand(&args[1], "MEMORY"),
    }
}

/// RocksDB's bytes per entry besides key and value: the internal key's
/// sequence number and type (8), lengths, and an index and filter share.
const ENTRY_OVERHEAD: usize = 24;

fn help(lines: &[&str]) -> Reply {
    Reply::array(lines.iter().map(|l| Reply::Simple(l.to_string())).collect())
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    let sub = String::from_utf8_lossy(&sub[..sub.len().min(128)]).into_owned();
    Reply::error(format!(
        "ERR unknown subcommand '{sub}'. Try {command} HELP."
    ))
}

pub(super) fn scan(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (args, shared, owner) = (ctx.args, ctx.shared, ctx.conn.id);
    ctx.read(|txn| scan_on(args, txn, shared, owner))
}

pub(super) fn range_scan(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (args, max_bytes) = (ctx.args, ctx.shared.config.limits.max_reply_bytes);
    ctx.read(|txn| range_scan_on(args, txn, max_bytes))
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

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`; stops early, with a
/// cursor to go on from, once the keys reach `max_bytes`.
fn scan_on(args: &[Vec<u8>], txn: &Txn<'_>, shared: &Shared, owner: u64) -> crate::Result<Reply> {
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
    for (examined, entry) in txn.entries(&range).enumerate() {
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
fn range_scan_on(args: &[Vec<u8>], txn: &Txn<'_>, max_bytes: usize) -> crate::Result<Reply> {
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
    for entry in txn.entries(&range) {
        let (key, Entry { value, .. }) = entry?;
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
