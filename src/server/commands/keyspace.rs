//! Keyspace commands: SCAN (with the cursors it keeps per connection),
//! DBSIZE, and rkv's ordered RKV.SCAN.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Ctx;
use crate::db::{Db, ScanRange};
use crate::glob;
use crate::resp::Reply;
use crate::server::Shared;

pub(super) fn dbsize(ctx: &mut Ctx<'_>) -> Reply {
    ctx.read(|db| {
        let mut count = 0;
        for entry in db.iter(&ScanRange::default()) {
            entry?;
            count += 1;
        }
        Ok(Reply::Integer(count))
    })
}

pub(super) fn scan(ctx: &mut Ctx<'_>) -> Reply {
    let (args, shared, owner) = (ctx.args, ctx.shared, ctx.conn.id);
    ctx.read(|db| scan_on(args, db, shared, owner))
}

pub(super) fn range_scan(ctx: &mut Ctx<'_>) -> Reply {
    let (args, max_bytes) = (ctx.args, ctx.shared.config.limits.max_reply_bytes);
    ctx.read(|db| range_scan_on(args, db, max_bytes))
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
fn scan_on(args: &[Vec<u8>], db: &Db, shared: &Shared, owner: u64) -> crate::Result<Reply> {
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
fn range_scan_on(args: &[Vec<u8>], db: &Db, max_bytes: usize) -> crate::Result<Reply> {
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
