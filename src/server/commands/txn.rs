//! The keyspace as one command, or one `MULTI … EXEC` transaction, sees
//! it: reads see the writes made so far, writes are buffered and reach the
//! database together as one atomic batch, and the clock is read once, so
//! no key expires halfway through. A write command runs under the
//! database's write lock from its first read to its commit, which makes
//! every read-modify-write (`INCR`, `SET … NX`, `RENAME`) atomic against
//! every other write; as nothing else writes meanwhile, its reads go to
//! the database as it is, and are remembered, so the write of a key just
//! read does not look it up again. Other reads go through one view of the
//! database (a snapshot, taken at the first read), so a command reading
//! several keys sees one moment, even on a follower applying the log
//! meanwhile.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::btree_map::{self, BTreeMap};
use std::collections::HashMap;
use std::iter::Peekable;
use std::sync::MutexGuard;

use crate::db::{Db, Entry, ScanRange, View};
use crate::error::Result;

/// Pending reads and writes against one database.
pub(crate) struct Txn<'a> {
    db: &'a Db,
    /// The moment the reads see, from the first read on.
    view: std::cell::OnceCell<View<'a>>,
    /// Under the write lock: the entries read from the database so far
    /// (`None` when not under it: reads go through `view`).
    read: Option<RefCell<HashMap<Vec<u8>, Option<Entry>>>>,
    now: u64,
    /// Keys written: their entry now (`None`: deleted), and their live
    /// entry in the database before (`None` inside: absent; outer `None`:
    /// not looked up, for a plain `SET` that need not read).
    pending: BTreeMap<Vec<u8>, Pending>,
    /// `FLUSHDB` ran: nothing of the database below shows.
    flushed: bool,
    /// Keys written before a `FLUSHDB` of the transaction, for `WATCH`.
    written_before_flush: Vec<Vec<u8>>,
    /// Lookups that found a key, and that did not (INFO's keyspace hits
    /// and misses).
    hits: Cell<u64>,
    misses: Cell<u64>,
}

struct Pending {
    now: Option<Entry>,
    before: Option<Option<Entry>>,
}

impl<'a> Txn<'a> {
    /// A view of `db` as of `now` (unix ms).
    pub fn new(db: &'a Db, now: u64) -> Txn<'a> {
        Txn {
            db,
            view: std::cell::OnceCell::new(),
            read: None,
            now,
            pending: BTreeMap::new(),
            flushed: false,
            written_before_flush: Vec::new(),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// A transaction of the writer of `db`, holding its write lock (`_held`),
    /// which every other write to `db` takes too (the master's; not a
    /// follower's, where the log is applied beside the lock): the database
    /// stays as it is until the commit, so reads need no snapshot.
    pub fn writing(db: &'a Db, now: u64, _held: &MutexGuard<'_, ()>) -> Txn<'a> {
        Txn {
            read: Some(RefCell::new(HashMap::new())),
            ..Txn::new(db, now)
        }
    }

    /// The database below.
    pub fn db(&self) -> &'a Db {
        self.db
    }

    /// The clock reading every expiry is judged against, in unix ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The live entry of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let entry = match self.pending.get(key) {
            Some(p) => p.now.clone(),
            None if self.flushed => None,
            None => self.stored(key)?,
        };
        self.count(entry.is_some());
        Ok(entry)
    }

    /// Counts a lookup that found its key, or did not.
    fn count(&self, found: bool) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.set(counter.get() + 1);
    }

    /// The entry of `key` in the database, as the transaction sees it.
    fn stored(&self, key: &[u8]) -> Result<Option<Entry>> {
        let Some(read) = &self.read else {
            return self
                .view
                .get_or_init(|| self.db.view())
                .entry(key, self.now);
        };
        if let Some(entry) = read.borrow().get(key) {
            return Ok(entry.clone());
        }
        let entry = self.db.entry(key, self.now)?;
        read.borrow_mut().insert(key.to_vec(), entry.clone());
        Ok(entry)
    }

    /// The value of `key`, for a command that reads nothing else: one
    /// lookup is one moment, so no snapshot is taken when one lookup
    /// answers (no key has ever had a deadline, so all live in one column
    /// family).
    pub fn value_alone(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let alone = |txn: &Txn<'_>| {
            txn.read.is_none() && txn.pending.is_empty() && !txn.flushed && !txn.db.may_expire()
        };
        if !alone(self) {
            return self.value(key);
        }
        let value = self.db.plain_value(key)?;
        // A key given a deadline meanwhile moved to the other column
        // family; the flag is raised before such a write, so it shows.
        if value.is_none() && self.db.may_expire() {
            return self.value(key);
        }
        self.count(value.is_some());
        Ok(value)
    }

    /// Lookups so far that found a key, and that did not.
    pub fn lookups(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// The live value of `key`.
    pub fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(key)?.map(|e| e.value))
    }

    /// Whether `key` is live.
    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `entry` (`None`: deletes it).
    pub fn set(&mut self, key: &[u8], entry: Option<Entry>) -> Result<()> {
        let before = match self.pending.get(key).map(|p| &p.before) {
            Some(Some(before)) => Some(before.clone()),
            None if self.flushed => Some(None),
            // Not read yet, or written by a plain SET that did not read it:
            // the batch must know where the key is stored to delete or move it.
            Some(None) | None => Some(self.stored(key)?),
        };
        self.pending
            .insert(key.to_vec(), Pending { now: entry, before });
        Ok(())
    }

    /// Sets `key` to `value`, expiring at `expires_at` (unix ms) or never;
    /// a deadline already past deletes the key (it would be invisible at
    /// once anyway).
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, expires_at: Option<u64>) -> Result<()> {
        match expires_at {
            Some(at) if at <= self.now => self.set(key, None),
            _ => self.set(key, Some(Entry { value, expires_at })),
        }
    }

    /// Sets `key` to `value` with no deadline, without reading it first:
    /// the plain `SET`, the most frequent write.
    pub fn set_plain(&mut self, key: &[u8], value: Vec<u8>) {
        let before = match self.pending.get(key) {
            Some(p) => p.before.clone(),
            None if self.flushed => Some(None),
            None => None,
        };
        let now = Some(Entry {
            value,
            expires_at: None,
        });
        self.pending.insert(key.to_vec(), Pending { now, before });
    }

    /// Deletes every key (`FLUSHDB`).
    pub fn flush(&mut self) {
        let written = std::mem::take(&mut self.pending).into_keys();
        self.written_before_flush.extend(written);
        self.flushed = true;
    }

    /// Whether the transaction removes every key (`FLUSHDB`).
    pub fn flushed(&self) -> bool {
        self.flushed
    }

    /// Every key the transaction writes.
    pub fn written(&self) -> impl Iterator<Item = &[u8]> {
        let before = self.written_before_flush.iter();
        before.chain(self.pending.keys()).map(Vec::as_slice)
    }

    /// The live entries with `from <= key < to`, in key order.
    pub fn entries<'s>(
        &'s self,
        range: &ScanRange,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 's {
        let stored: Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + 's> = if self.flushed {
            Box::new(std::iter::empty())
        } else {
            Box::new(self.db.entries(range, self.now))
        };
        let from = range.from.clone().unwrap_or_default();
        let pending = match &range.to {
            Some(to) if *to <= from => self.pending.range(from.clone()..from),
            Some(to) => self.pending.range(from..to.clone()),
            None => self.pending.range(from..),
        };
        Overlaid {
            stored: stored.peekable(),
            pending: pending.peekable(),
        }
    }

    /// Writes what the transaction changed as one batch. Hold the
    /// database's write lock from the first read.
    pub fn commit(self) -> Result<()> {
        if self.pending.is_empty() && !self.flushed {
            return Ok(());
        }
        let mut batch = self.db.batch();
        if self.flushed {
            self.db.delete_all(&mut batch)?;
        }
        for (key, pending) in self.pending {
            match (pending.before, pending.now) {
                // A plain SET, whose key was not read.
                (None, Some(entry)) => self.db.stage_plain(&mut batch, &key, &entry.value)?,
                (Some(before), Some(entry)) => {
                    batch.put(&key, &entry.value, entry.expires_at, before.as_ref())
                }
                (Some(Some(before)), None) => batch.delete(&key, &before),
                // Absent before, or (never: `set` reads first) unknown.
                (Some(None) | None, None) => {}
            }
        }
        self.db.write(batch)
    }
}

/// The database's entries with the pending writes laid over them.
struct Overlaid<'s, S: Iterator> {
    stored: Peekable<S>,
    pending: Peekable<btree_map::Range<'s, Vec<u8>, Pending>>,
}

impl<S: Iterator<Item = Result<(Vec<u8>, Entry)>>> Iterator for Overlaid<'_, S> {
    type Item = Result<(Vec<u8>, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.stored.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((stored, _))), Some((pending, _))) => stored.cmp(pending),
            };
            match order {
                Ordering::Less => return self.stored.next(),
                // Written since: the pending entry stands for it.
                Ordering::Equal => drop(self.stored.next()),
                Ordering::Greater => {}
            }
            let (key, pending) = self.pending.next()?;
            if let Some(entry) = &pending.now {
                return Some(Ok((key.clone(), entry.clone())));
            }
        }
    }
}
