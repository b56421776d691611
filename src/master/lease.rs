//! The master's hold on its backup directory: one master per directory,
//! whichever hosts they run on.
//!
//! Two masters writing one directory delete each other's files and make
//! followers flip between two datasets. A master therefore claims the
//! directory before its first backup, in three steps:
//!
//! 1. a lock file (`flock`), which refuses a second master at once on the
//!    same host, or on a shared filesystem whose locks work across hosts;
//! 2. the heartbeat as a lease: it names the master and carries a token; a
//!    heartbeat of another master that changes while this one watches (on
//!    this host's clock, so skew does not matter) means that master is
//!    alive, and this one refuses to start;
//! 3. the lineage: a directory whose newest backup is of another database
//!    is refused unless the operator passes `--take-over`;
//! 4. promotions: `rkv promote` hands the directory over to the promoted
//!    database's master with a heartbeat in its name ([`hand_over`]), which
//!    lets that master start at once and lists the master it replaced as
//!    superseded. A superseded master is refused (its database lacks what
//!    the new one wrote) unless given `--take-over`, and every heartbeat
//!    carries the list on.
//!
//! Once running, the master checks the token before each backup and at
//! each heartbeat; finding another's, it stops backing up (it is fenced).
//!
//! The lease has a term (`--lease-term`, which every heartbeat carries): a
//! master that has not renewed it within its term (cut off from the store)
//! acknowledges no write until it renews ([`Term`]), and a promotion waits
//! out the term after it last saw the heartbeat change
//! ([`Holder::term_left`]). So a promotion never drops what a master cut
//! off from the store acknowledged after its term ran out: a master cut off
//! loses at most the writes of its last term, as a master whose host died
//! loses those after its last backup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backup::{AppMetadata, BackupInfo, BackupSink, BackupSource, Heartbeat, MasterLock};
use crate::error::{Error, Result};

/// How long a claim watches another master's heartbeat for a change: three
/// heartbeat periods, so a live master renews at least twice meanwhile.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// `--lease-term` when not given: long enough to ride out a slow store
/// (a publish of many seconds holds the heartbeat back), short enough that
/// a promotion does not wait long.
pub const DEFAULT_LEASE_TERM: Duration = Duration::from_secs(10);

/// The shortest `--lease-term`: three heartbeat periods, so one slow
/// heartbeat does not stop writes.
pub const LEASE_TERM_FLOOR: Duration = Duration::from_secs(3);

/// What a promotion waits beyond the old master's term: the writes that
/// master checked its lease for just before the term ran out, still in
/// flight, land meanwhile.
pub const TERM_MARGIN: Duration = Duration::from_secs(1);

/// The lease as the write path reads it: whether this run of the master
/// renewed its heartbeat within its term. Lock-free, since every write
/// asks.
#[derive(Debug)]
pub struct Term {
    term: Duration,
    epoch: Instant,
    /// When the newest renewal that landed was sent, in milliseconds after
    /// `epoch`; `u64::MAX` before the first.
    renewed_ms: AtomicU64,
}

impl Term {
    /// A lease of `term`, not renewed yet: writes wait for the first
    /// heartbeat that lands.
    pub fn new(term: Duration) -> Term {
        Term {
            term,
            epoch: Instant::now(),
            renewed_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The term.
    pub fn term(&self) -> Duration {
        self.term
    }

    /// A heartbeat sent at `sent` landed. Counted from when it was sent, not
    /// when its reply came: the store may have applied it at once, and a
    /// promotion measures from what it saw there.
    pub fn renewed(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.epoch).as_millis() as u64;
        let _ = self
            .renewed_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                (old == u64::MAX || ms > old).then_some(ms)
            });
    }

    /// Time since the newest renewal was sent (since the lease was made,
    /// before the first).
    pub fn since_renewal(&self) -> Duration {
        let now = self.epoch.elapsed();
        match self.renewed_ms.load(Ordering::SeqCst) {
            u64::MAX => now,
            ms => now.saturating_sub(Duration::from_millis(ms)),
        }
    }

    /// `Some(time since the newest renewal)` once that is past the term:
    /// the master must acknowledge no write.
    pub fn expired(&self) -> Option<Duration> {
        let since = self.since_renewal();
        let never = self.renewed_ms.load(Ordering::SeqCst) == u64::MAX;
        (never || since > self.term).then_some(since)
    }
}

/// Who a master is: what its backups and heartbeats say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `<host>:<db path>`.
    pub label: String,
    /// The database's identity (see [`crate::backup::AppMetadata::db_id`]).
    pub db_id: Option<String>,
}

impl Identity {
    /// The database this master serves, as backups record it.
    pub fn lineage(&self) -> &str {
        self.db_id.as_deref().unwrap_or(&self.label)
    }

    /// Whether a backup with `meta` is of this master's database: the same
    /// RocksDB identity, or for backups that predate it, the same label.
    pub fn made(&self, meta: &AppMetadata) -> bool {
        match (&self.db_id, &meta.db_id) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => meta.master == self.label,
        }
    }

    /// Whether `heartbeat` was written by a run of this master (or for it,
    /// by `rkv promote`).
    pub fn wrote(&self, heartbeat: &Heartbeat) -> bool {
        heartbeat.master == self.label && heartbeat.lineage() == self.lineage()
    }

    fn describe(&self) -> String {
        match &self.db_id {
            Some(id) => format!("database {id} at {}", self.label),
            None => self.label.clone(),
        }
    }
}

/// A held claim: the lock (while the filesystem has working locks) and the
/// token this run writes into its heartbeats.
#[derive(Debug)]
pub struct Claim {
    /// Held for the master's lifetime: the lock lives with it.
    _lock: MasterLock,
    /// This run's token.
    pub token: String,
    /// The lineage this master took over, when it took one over.
    pub took_over: Option<String>,
    /// The masters promotions replaced, which this one's heartbeats carry
    /// on (see [`Heartbeat::superseded`]).
    pub superseded: Vec<String>,
}

/// Claims `store` for the master `me`; `newest` is the store's newest
/// backup. `take_over` allows a directory whose newest backup is of another
/// database, and a master a promotion superseded (never one another live
/// master holds).
pub fn claim(
    store: &dyn BackupSink,
    me: &Identity,
    newest: Option<&BackupInfo>,
    take_over: bool,
) -> Result<Claim> {
    let lock = store.lock_for_master().map_err(|e| match e {
        Error::BackupDirLocked { path, .. } => Error::BackupDirLocked {
            path,
            owner: store.read_heartbeat().map(|h| h.owner()),
        },
        other => other,
    })?;

    let seen = store.read_heartbeat();
    if let Some(seen) = seen.as_ref().filter(|h| !me.wrote(h)) {
        // Another master wrote the heartbeat. Alive, it rewrites it every
        // second: watch on this host's clock, never compare timestamps.
        if let Some(now) = renewed(store, seen) {
            return Err(Error::BackupDirLeased {
                location: store.location(),
                owner: now.owner(),
            });
        }
        tracing::warn!(
            previous = %seen.owner(),
            "the backup directory's heartbeat names another master, which has not renewed it \
             for {LEASE_TIMEOUT:?}: it is not running"
        );
    }

    let mut superseded = seen
        .as_ref()
        .map(|h| h.superseded.clone())
        .unwrap_or_default();
    if let Some(by) = seen.as_ref().filter(|h| h.master != me.label) {
        if superseded.contains(&me.label) {
            if !take_over {
                return Err(Error::Superseded {
                    location: store.location(),
                    me: me.label.clone(),
                    by: by.master.clone(),
                });
            }
            tracing::warn!(
                "--take-over: this master was superseded by a promotion of {}, and becomes the \
                 source of the backup directory {} again",
                by.master,
                store.location()
            );
        }
    }
    superseded.retain(|label| *label != me.label);
    // `rkv promote` handed the store over to this master: it may follow
    // backups of another database, as with --take-over.
    let handed_over = seen.as_ref().is_some_and(|h| h.handover && me.wrote(h));

    let mut took_over = None;
    if let Some(meta) = newest.and_then(|b| b.metadata.as_ref()) {
        if !me.made(meta) {
            let theirs = match &meta.db_id {
                Some(id) => format!("database {id} at {}", meta.master),
                None => meta.master.clone(),
            };
            if !(take_over || handed_over) {
                return Err(Error::ForeignBackups {
                    location: store.location(),
                    id: newest.map_or(0, |b| b.id),
                    theirs,
                    ours: me.describe(),
                });
            }
            tracing::warn!(
                previous = %theirs,
                "{}: this master's database becomes the source of the backup directory {}; \
                 followers switch to it with its first backup",
                if handed_over { "rkv promote" } else { "--take-over" },
                store.location()
            );
            took_over = Some(theirs);
        }
    }
    Ok(Claim {
        _lock: lock,
        token: new_token("master"),
        took_over,
        superseded,
    })
}

/// The heartbeat, if another process renews it within [`LEASE_TIMEOUT`]
/// after `seen` was read: that master is alive.
fn renewed(store: &dyn BackupSource, seen: &Heartbeat) -> Option<Heartbeat> {
    let started = Instant::now();
    while started.elapsed() < LEASE_TIMEOUT {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(now) = store.read_heartbeat().filter(|h| h != seen) {
            return Some(now);
        }
    }
    None
}

/// Who holds a store now, as [`check_free`] found it.
#[derive(Debug)]
pub struct Holder {
    /// The newest heartbeat, if any.
    pub heartbeat: Option<Heartbeat>,
    /// Whether a master renewed it while watched: it is running.
    pub live: bool,
    /// When the check first read the heartbeat: the master renewed it last
    /// before then.
    pub read_at: Instant,
}

impl Holder {
    /// How long a promotion must still wait for the master's term to run
    /// out (plus [`TERM_MARGIN`]), counted from when the heartbeat was
    /// first read: from then on, a master cut off from the store
    /// acknowledges no write. Zero for a heartbeat without a term (a master
    /// from before terms, or a hand-over) or a live master.
    pub fn term_left(&self) -> Duration {
        match self.heartbeat.as_ref().and_then(|h| h.lease_term_ms) {
            Some(ms) if !self.live => {
                (Duration::from_millis(ms) + TERM_MARGIN).saturating_sub(self.read_at.elapsed())
            }
            _ => Duration::ZERO,
        }
    }
}

/// Watches the store's heartbeat for [`LEASE_TIMEOUT`]: whether a master
/// holds the store, for a promotion to check before it copies anything.
pub fn check_free(store: &dyn BackupSource) -> Holder {
    let read_at = Instant::now();
    let heartbeat = store.read_heartbeat();
    match heartbeat.as_ref().and_then(|seen| renewed(store, seen)) {
        Some(now) => Holder {
            heartbeat: Some(now),
            live: true,
            read_at,
        },
        None => Holder {
            heartbeat,
            live: false,
            read_at,
        },
    }
}

/// Hands `store` over to the master `successor`, whose database holds
/// everything up to sequence number `seq`: writes a heartbeat in its name
/// that marks the store's previous master superseded (see
/// [`Heartbeat::superseded`]) and carries a new token, so a previous
/// master still running stops at its next heartbeat (it is fenced).
/// `previous` is the heartbeat [`check_free`] saw; if another was written
/// since, a master came to life, and the hand-over is refused unless
/// `fence` says to fence it.
pub fn hand_over(
    store: &dyn BackupSink,
    successor: &Identity,
    seq: u64,
    previous: Option<&Heartbeat>,
    fence: bool,
) -> Result<Heartbeat> {
    let now = store.read_heartbeat();
    if let Some(now) = now
        .as_ref()
        .filter(|h| Some(*h) != previous && !successor.wrote(h))
    {
        if !fence {
            return Err(Error::BackupDirLeased {
                location: store.location(),
                owner: now.owner(),
            });
        }
    }
    let last = now.as_ref().or(previous);
    let mut superseded = last.map(|h| h.superseded.clone()).unwrap_or_default();
    if let Some(h) = last.filter(|h| h.master != successor.label) {
        if !superseded.contains(&h.master) {
            superseded.push(h.master.clone());
        }
    }
    superseded.retain(|label| *label != successor.label);
    let heartbeat = Heartbeat {
        v: 1,
        seq,
        ms: crate::backup::now_ms(),
        master: successor.label.clone(),
        db_id: successor.db_id.clone(),
        token: Some(new_token("promote")),
        pid: None,
        keep_within_ms: last.and_then(|h| h.keep_within_ms),
        lease_term_ms: None,
        log_interval_ms: None,
        superseded,
        handover: true,
    };
    // A running master reads the heartbeat before it rewrites its own, and
    // stops when it finds another token; a write that lands between its
    // read and its write is lost (in a directory), or refused (an object
    // store's conditional write), so write until the hand-over stays.
    for _ in 0..5 {
        match store.write_heartbeat(&heartbeat) {
            Ok(()) if last.is_none_or(|h| !fence || h.token.is_none()) => return Ok(heartbeat),
            Ok(()) => {}
            Err(Error::Fenced { .. }) if fence => {}
            Err(Error::Fenced { by }) => {
                return Err(Error::BackupDirLeased {
                    location: store.location(),
                    owner: by,
                })
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(2_500));
        if store.read_heartbeat().as_ref() == Some(&heartbeat) {
            return Ok(heartbeat);
        }
    }
    Err(Error::BackupDirLeased {
        location: store.location(),
        owner: last.map_or_else(|| "another master".to_string(), Heartbeat::owner),
    })
}

/// A token unique to this run of `who`: host, pid, and the start time in
/// nanoseconds.
fn new_token(who: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{who}-{}-{}-{nanos:x}",
        crate::backup::master_label(std::path::Path::new("/")),
        std::process::id()
    )
}

#[cfg(test)]
mod tests;
