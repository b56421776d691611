//! The backup directory: where the master's backups live and followers read
//! them from.
//!
//! [`BackupSource`] (what a follower may do: read) and [`BackupSink`] (what
//! only a master may do: write) are the interface to it, so that where
//! backups live stays behind a small contract, checked by one suite run
//! against every store (`contract.rs`). [`BackupDir`] implements both on a
//! local or NFS directory with RocksDB's BackupEngine; on an S3-compatible
//! object store (through a local directory of the same layout),
//! [`S3Reader`] is a follower's read-only view and [`S3Publisher`] the
//! master's, so a follower's store cannot write by its type. Nothing outside
//! this module knows either layout. [`BackupLocation`] is what `--backup-dir`
//! names. The policy (when to back up, what to keep) lives
//! with the callers; [`Retention`] only computes what a policy keeps.

mod dir;
mod heal;
mod location;
pub mod meta;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::error::Result;
use crate::tail::store::{LogSink, LogSource};

pub use dir::BackupDir;
pub use location::{BackupLocation, StoreArgs};
pub use s3::{S3Publisher, S3Reader};

/// The application metadata rkv stores with each backup, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMetadata {
    /// Format version; 1.
    pub v: u32,
    /// The database's latest sequence number when the backup started: the
    /// backup holds at least every write up to it.
    pub seq: u64,
    /// When the backup was created, in unix milliseconds.
    pub created_ms: u64,
    /// Who took it: `<host>:<db path>`.
    pub master: String,
    /// The database's RocksDB identity (its `IDENTITY`): what tells one
    /// database's backups from another's, even at the same path. Absent in
    /// backups taken before rkv recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
}

impl AppMetadata {
    /// The current format version.
    pub const VERSION: u32 = 1;

    /// Parses stored metadata; `None` for backups made by other tools.
    pub fn parse(bytes: &[u8]) -> Option<AppMetadata> {
        serde_json::from_slice(bytes).ok()
    }

    /// Which database the backup is of: its identity, or for backups that
    /// predate it, the master's label.
    pub fn lineage(&self) -> &str {
        self.db_id.as_deref().unwrap_or(&self.master)
    }
}

/// One complete backup in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The backup id; ids only grow.
    pub id: u32,
    /// When RocksDB recorded the backup, in unix seconds.
    pub timestamp: u64,
    /// Total size of the backup's files (shared files counted in every backup).
    pub size: u64,
    /// Number of files in the backup.
    pub files: u32,
    /// rkv's metadata; `None` for a backup made by another tool (e.g. `ldb`).
    pub metadata: Option<AppMetadata>,
}

impl BackupInfo {
    /// When the backup was created, in unix milliseconds (from rkv's
    /// metadata when present, else RocksDB's second-resolution timestamp).
    pub fn created_ms(&self) -> u64 {
        match &self.metadata {
            Some(meta) => meta.created_ms,
            None => self.timestamp * 1000,
        }
    }

    /// When the backup was created.
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_ms())
    }
}

/// What a new backup cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStats {
    /// The new backup.
    pub info: BackupInfo,
    /// Bytes written into the store (files no earlier backup shared).
    pub bytes_copied: u64,
    /// Files written into the store.
    pub files_copied: u32,
    /// How long it took.
    pub duration: Duration,
}

/// How a restore treats what the destination already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    /// Delete everything in the destination and copy every file.
    Full,
    /// Keep destination SST files that are byte-for-byte the backup's
    /// (matched by DB session id and size) and copy only the rest: the cost
    /// of the change since the destination's backup, not of the database.
    KeepMatchingFiles,
}

/// What a restore cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    /// The backup that was restored.
    pub id: u32,
    /// Bytes written into the destination.
    pub bytes_copied: u64,
    /// Files written into the destination.
    pub files_copied: u32,
    /// Files the destination already had and kept.
    pub files_kept: u32,
    /// How long it took.
    pub duration: Duration,
}

/// A file of the store that does not hold what the backups listing it
/// record (found by a scrub, or when a backup is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file, relative to the store (`shared_checksum/…`, `private/3/…`,
    /// `meta/3`).
    pub path: String,
    /// What is wrong with it.
    pub detail: String,
    /// The backups that list it.
    pub backups: Vec<u32>,
}

/// Where a rolling scrub goes on from, and what it has read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubCursor {
    /// The last file checked; the next call starts after it.
    pub after: String,
    /// Files checked since start.
    pub files_checked: u64,
    /// Bytes read since start.
    pub bytes_checked: u64,
}

/// Which backups to keep: the newest `keep`, plus every backup younger than
/// `keep_within` (so a follower's restore is not purged from under it), and
/// always the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How many of the newest backups to keep at least.
    pub keep: usize,
    /// Never purge a backup younger than this.
    pub keep_within: Duration,
}

impl Retention {
    /// How many of the newest backups this policy keeps out of `backups`
    /// (in any order), judged at `now`.
    pub fn keep_count(&self, backups: &[BackupInfo], now: SystemTime) -> usize {
        let young = backups
            .iter()
            .filter(|b| now.duration_since(b.created()).unwrap_or_default() < self.keep_within)
            .count();
        self.keep.max(young).max(1).min(backups.len())
    }
}

/// What a follower may do with a backup store: read it. Every method states
/// which error means what, so that callers act on meaning rather than on
/// message text. A follower holds only this, so it cannot create, purge or
/// write anything by construction.
pub trait BackupSource: Send + Sync {
    /// Where the store is, for messages and INFO (a path or a URL).
    fn location(&self) -> BackupLocation;

    /// The complete backups, oldest first. An existing but empty store gives
    /// an empty list; [`Error::BackupDirMissing`](crate::Error::BackupDirMissing)
    /// when the store does not exist.
    fn list(&self) -> Result<Vec<BackupInfo>>;

    /// The id of the newest complete backup, cheaply (without loading any
    /// backup): `None` when there is none. [`Error::BackupDirMissing`](crate::Error::BackupDirMissing)
    /// when the store does not exist. A backup named here may still be
    /// missing from [`BackupSource::list`] if RocksDB cannot load it.
    fn newest_id(&self) -> Result<Option<u32>>;

    /// Backup `id`'s facts, read from that backup alone (not from every
    /// backup, as [`BackupSource::list`] does), once it is known to be
    /// loadable: each file it lists is present with its recorded size.
    /// [`Error::BackupNotFound`](crate::Error::BackupNotFound) when there is
    /// no such complete backup, [`Error::BackupCorrupt`](crate::Error::BackupCorrupt)
    /// when it cannot be loaded.
    fn describe(&self, id: u32) -> Result<BackupInfo> {
        self.list()?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| crate::Error::BackupCorrupt {
                id,
                detail: "RocksDB cannot load it".to_string(),
            })
    }

    /// Whether backup `id` is still in the store (complete or not):
    /// `Ok(false)` once retention purged it. An error when the store could
    /// not be asked: then nothing is known either way.
    fn contains(&self, id: u32) -> Result<bool>;

    /// The files backups `ids` list, each once with its size in bytes as
    /// stored (`rkv status` adds them up into shared and private bytes).
    fn files(&self, ids: &[u32]) -> Result<std::collections::BTreeMap<String, u64>>;

    /// Checks that every file of backup `id` exists with its recorded size
    /// and crc32c, counting each file checked on `meter`.
    /// [`Error::BackupNotFound`](crate::Error::BackupNotFound) for an unknown
    /// id, [`Error::BackupCorrupt`](crate::Error::BackupCorrupt) when a file
    /// is missing or differs.
    fn verify(&self, id: u32, meter: &crate::progress::Meter) -> Result<()>;

    /// The first damaged (or missing) file of backup `id`, described;
    /// `Ok(None)` when every file is whole. An error when the store could
    /// not be read: that says nothing of the backup.
    fn find_damage(&self, id: u32) -> Result<Option<String>>;

    /// Restores backup `id` (the newest when `None`) into `dest`, a directory
    /// that need not exist, with one look at the store. [`Error::NoBackups`](crate::Error::NoBackups)
    /// when there is none, [`Error::BackupNotFound`](crate::Error::BackupNotFound)
    /// for an unknown id, [`Error::BackupCorrupt`](crate::Error::BackupCorrupt)
    /// (naming the file) when a file fails its checksum while copied.
    fn restore(&self, id: Option<u32>, dest: &Path, mode: RestoreMode) -> Result<RestoreStats>;

    /// The newest heartbeat; `None` when there is none or it is unreadable.
    fn read_heartbeat(&self) -> Option<Heartbeat>;

    /// Local directories where a file created or renamed may mean a new
    /// backup or heartbeat, for a filesystem watch; empty when the store
    /// cannot be watched (polling then finds news).
    fn watch_paths(&self) -> Vec<PathBuf>;

    /// The requests made of a remote store since start; `None` for a
    /// directory.
    fn traffic(&self) -> Option<crate::status::StoreTraffic> {
        None
    }

    /// The live tail's segments in this store; `None` when it keeps no log
    /// (followers then follow backups alone).
    fn log(&self) -> Option<&dyn LogSource> {
        None
    }
}

/// What only a master may do with a backup store: write it. A sink is also
/// a source.
pub trait BackupSink: BackupSource {
    /// Backs up `db` (flushing it first), incrementally: files an earlier
    /// backup holds are shared, not copied. `master` names the source in the
    /// metadata. Creates the store when missing. [`Error::DamagedFile`](crate::Error::DamagedFile)
    /// when a file of the store the backup shares, or one it just wrote, is
    /// damaged.
    fn create(&self, db: &Db, master: &str) -> Result<CreateStats>;

    /// Deletes the backups `retention` does not keep, and the files only they
    /// used; returns the ids deleted, oldest first.
    fn purge(&self, retention: &Retention, now: SystemTime) -> Result<Vec<u32>>;

    /// Records the master's state at `heartbeat.ms`. Replaces the previous
    /// heartbeat atomically.
    fn write_heartbeat(&self, heartbeat: &Heartbeat) -> Result<()>;

    /// Takes the lock a master holds on the store while it runs;
    /// [`Error::BackupDirLocked`](crate::Error::BackupDirLocked) when another
    /// master holds it. Where the store has no working lock (an object
    /// store, a filesystem without `flock`), the lock holds nothing and
    /// the heartbeat's lease is what fences a second master.
    fn lock_for_master(&self) -> Result<MasterLock>;

    /// Checks the next files of the retained backups, from `cursor`, reading
    /// at most `budget` bytes; returns what is damaged.
    fn scrub(&self, cursor: &mut ScrubCursor, budget: u64) -> Vec<Damage>;

    /// Removes damaged files so the next backup copies them again.
    fn remove_damaged(&self, damage: &[Damage]) -> Result<()>;

    /// Drops backups (never the newest) that miss a file; returns their ids.
    fn drop_incomplete(&self) -> Result<Vec<u32>>;

    /// Whether, and by whom, this master was fenced off the store (see
    /// [`Fence`]). Once set, [`BackupSink::create`] and
    /// [`BackupSink::write_heartbeat`] refuse with
    /// [`Error::Fenced`](crate::Error::Fenced).
    fn fence(&self) -> &Fence;

    /// Where the master ships the live tail; `None` when this store cannot
    /// hold a log yet.
    fn log_sink(&self) -> Option<&dyn LogSink> {
        None
    }
}

/// That another master took the store over from this one: set once, by
/// whichever step found out first (the store refusing a conditional write
/// of this master's, or the master reading another's heartbeat), and read
/// without a lock by the write path, INFO, `/metrics` and `/healthz`. The
/// store owns it ([`BackupSink::fence`]), so every reader sees one answer.
#[derive(Debug, Default)]
pub struct Fence {
    by: std::sync::OnceLock<String>,
}

impl Fence {
    /// Records that `by` took the store over; `true` the first time.
    pub fn set(&self, by: &str) -> bool {
        self.by.set(by.to_string()).is_ok()
    }

    /// Who took the store over, once one did.
    pub fn by(&self) -> Option<&str> {
        self.by.get().map(String::as_str)
    }
}

/// The lock a master holds on its store while it runs, released when
/// dropped (see [`BackupSink::lock_for_master`]).
#[derive(Debug)]
pub struct MasterLock {
    /// The locked file, where the store has one.
    _file: Option<std::fs::File>,
}

impl MasterLock {
    /// A lock on `file`, or (`None`) one that holds nothing.
    fn new(file: Option<std::fs::File>) -> MasterLock {
        MasterLock { _file: file }
    }

    /// The lock of a store that has none to take.
    pub fn none() -> MasterLock {
        MasterLock::new(None)
    }
}

/// The master's word that its database held no writes beyond sequence
/// number `seq` at time `ms`, rewritten every second while it runs.
///
/// Backups alone cannot tell an idle master from a dead one: with the
/// heartbeat, a follower serving the backup of `seq` knows its data is
/// current, and its staleness bound holds while the master is idle. Each new
/// heartbeat is also a reading of the master's clock, which lets a follower
/// measure staleness on its own clock whatever the skew between hosts. And
/// it is the master's lease on the directory: `token` names the one master
/// that may write there, and a master that finds another's token stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Format version; 1.
    pub v: u32,
    /// The master's latest sequence number at `ms`.
    pub seq: u64,
    /// When, in unix milliseconds on the master's clock.
    pub ms: u64,
    /// The master: `<host>:<db path>`.
    pub master: String,
    /// The master database's identity (see [`AppMetadata::db_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
    /// The lease: unique to one run of one master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The master's process id, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The master's `--keep-within`, in milliseconds: a follower whose
    /// restores keep losing the race to the purge says what to raise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_ms: Option<u64>,
    /// The master's `--lease-term`, in milliseconds: cut off from the store
    /// for that long, it acknowledges no write, and a promotion waits that
    /// long after it last saw the heartbeat change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_term_ms: Option<u64>,
    /// The master's `--log-interval`, in milliseconds, while it ships the
    /// write log: followers look for segments only then (no request for a
    /// log that no master ships).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_interval_ms: Option<u64>,
    /// Masters (`<host>:<db path>`) that a promotion replaced: each refuses
    /// to start on this store (their databases lack what the new master
    /// wrote), unless given `--take-over`. Every heartbeat carries the list
    /// on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
    /// Written by `rkv promote` on behalf of `master`, which has not started
    /// yet: no process renews it, and that master may start at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
}

impl Heartbeat {
    /// Who wrote it, for the operator: `<host>:<db path>, pid N`.
    pub fn owner(&self) -> String {
        match self.pid {
            Some(pid) => format!("{}, pid {pid}", self.master),
            None => self.master.clone(),
        }
    }

    /// Which database the master serves (see [`AppMetadata::lineage`]).
    pub fn lineage(&self) -> &str {
        self.db_id.as_deref().unwrap_or(&self.master)
    }
}

/// What the name of a file in `shared_checksum/` records: BackupEngine
/// names a table or blob file `<number>_s<session>_<size>.<ext>`
/// (session-id naming) or `<number>_<crc32c>_<size>.<ext>` (legacy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedName<'a> {
    /// The file's number in the database (`000009.sst` is 9).
    pub number: u64,
    /// Its size in bytes.
    pub size: u64,
    /// `sst` or `blob`.
    pub ext: &'a str,
}

impl<'a> SharedName<'a> {
    /// Parses the name of a file in `shared_checksum/`
    /// (`000009_s…_1476.sst`); `None` for any other name.
    pub fn parse(name: &'a str) -> Option<SharedName<'a>> {
        let (stem, ext) = name.rsplit_once('.')?;
        if ext != "sst" && ext != "blob" {
            return None;
        }
        let parts: Vec<&str> = stem.split('_').collect();
        // The size is always last; the number always first.
        if parts.len() < 3 {
            return None;
        }
        Some(SharedName {
            number: parts[0].parse().ok()?,
            size: parts[parts.len() - 1].parse().ok()?,
            ext,
        })
    }
}

/// The size the name of the store's file at `path` records, if it is a
/// shared table or blob file.
fn shared_size(path: &str) -> Option<u64> {
    in_shared_dir(path)
        .and_then(SharedName::parse)
        .map(|n| n.size)
}

/// `path` (in the store) without its `shared_checksum/`, if it is there.
fn in_shared_dir(path: &str) -> Option<&str> {
    path.strip_prefix(dir::SHARED_DIR)?.strip_prefix('/')
}

/// The name a file of the store gets in a restored database:
/// `shared_checksum/000009_sP2XNP78RDOUC7UDOMCJC_1476.sst` becomes
/// `000009.sst`; private files keep theirs (`private/3/MANIFEST-000017`).
pub fn restored_name(store_path: &str) -> String {
    let name = store_path.rsplit('/').next().unwrap_or(store_path);
    match in_shared_dir(store_path).and_then(SharedName::parse) {
        Some(shared) => {
            let digits = name.split('_').next().unwrap_or_default();
            format!("{digits}.{}", shared.ext)
        }
        None => name.to_string(),
    }
}

/// How a backup names its source: `<host>:<absolute db path>`.
pub fn master_label(db_path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
    format!("{}:{}", hostname(), path.display())
}

/// This machine's host name, or `localhost` when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "localhost".to_string(),
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The current time in unix milliseconds.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod contract;

#[cfg(test)]
mod tests;
