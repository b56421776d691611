//! What each daemon reports about itself, as facts: the master's backups
//! and the follower's replication. The server words them as Redis's `INFO`
//! fields; metrics and systemd's status can read the same facts.

use std::time::Duration;

/// The last backup a master took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastBackup {
    /// Its id.
    pub id: u32,
    /// When it was created, in unix milliseconds.
    pub created_ms: u64,
    /// How long it took.
    pub duration: Duration,
    /// Bytes it wrote into the store.
    pub bytes_copied: u64,
    /// Files it wrote into the store.
    pub files_copied: u32,
}

/// What a daemon asked of an object store since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreTraffic {
    /// GET and HEAD requests.
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// LIST requests (pages).
    pub lists: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// Bytes uploaded.
    pub bytes_up: u64,
    /// Bytes downloaded.
    pub bytes_down: u64,
}

/// A master's backups, retention and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterStatus {
    /// The database's latest sequence number.
    pub seq: u64,
    /// The sequence number the newest backup holds.
    pub backed_up_seq: u64,
    /// A backup is being taken.
    pub backup_in_progress: bool,
    /// Unix seconds of the newest backup.
    pub last_save_unix: i64,
    /// Whether the last attempt succeeded.
    pub last_ok: bool,
    /// The last backup taken by this run.
    pub last: Option<LastBackup>,
    /// Backups taken and failed since start.
    pub done: u64,
    /// Backups that failed since start.
    pub failed: u64,
    /// Why the last backup failed, until one succeeds.
    pub last_error: Option<String>,
    /// The backup store's location.
    pub backup_dir: String,
    /// Why the database refuses writes, while it does.
    pub db_error: Option<String>,
    /// Who took the backup directory over, when another master did.
    pub fenced_by: Option<String>,
    /// Files and bytes the rolling scrub checked since start.
    pub scrub_files_checked: u64,
    /// Bytes the rolling scrub read since start.
    pub scrub_bytes_checked: u64,
    /// Damaged files found (and healed) since start.
    pub damaged_found: u64,
    /// The last damage found.
    pub last_damage: Option<String>,
    /// Backups dropped because they needed a damaged file.
    pub backups_dropped: u64,
    /// `--keep`.
    pub keep: usize,
    /// `--keep-within`.
    pub keep_within: Duration,
    /// Requests to the object store, when backups go to one.
    pub store: Option<StoreTraffic>,
}

/// The last apply a follower made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastApply {
    /// How long it took.
    pub duration: Duration,
    /// Bytes it copied.
    pub bytes_copied: u64,
    /// Files it copied.
    pub files_copied: u32,
    /// Files it kept from the previous generation.
    pub files_kept: u32,
}

/// A follower's replication: what it serves, how stale, how healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The master of the served backup: `<host>:<db path>`.
    pub master: String,
    /// Whether the last poll could read the backup store.
    pub link_up: bool,
    /// How long ago the store was last polled.
    pub last_poll_ago: Option<Duration>,
    /// An apply is under way.
    pub applying: bool,
    /// The backup store's location.
    pub backup_dir: String,
    /// The served backup's id (0: none).
    pub applied_backup_id: u32,
    /// The served backup's creation, in unix milliseconds (master clock).
    pub applied_created_ms: u64,
    /// The served backup's sequence number.
    pub applied_seq: u64,
    /// How old the served data is, on this host's clock; `None` unknown.
    pub staleness: Option<Duration>,
    /// The master's clock minus this host's, in ms, when measured.
    pub clock_skew_ms: Option<i64>,
    /// The newest backup id seen in the store.
    pub newest_backup_id: u32,
    /// How long ago the master's heartbeat last changed.
    pub heartbeat_ago: Option<Duration>,
    /// Why the served data is not the store's database, until re-bootstrapped.
    pub lineage_change: Option<String>,
    /// The last apply.
    pub last_apply: Option<LastApply>,
    /// Applies since start.
    pub applies_done: u64,
    /// Failed applies and skipped backups since start.
    pub failures: u64,
    /// The last error, until a success clears it.
    pub last_error: Option<String>,
    /// `--max-staleness`.
    pub max_staleness: Option<Duration>,
    /// `--stale-reads`.
    pub stale_reads: &'static str,
    /// Serving the store's database within the bound.
    pub healthy: bool,
    /// Unix seconds of the served backup.
    pub last_save_unix: i64,
    /// Requests to the object store, when backups come from one.
    pub store: Option<StoreTraffic>,
}

/// What a daemon reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonStatus {
    /// A master's.
    Master(MasterStatus),
    /// A follower's.
    Follower(FollowerStatus),
}
