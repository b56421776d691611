//! What each daemon reports about itself, as facts: the master's backups
//! and the follower's replication. The server words them as Redis's `INFO`
//! fields; metrics and systemd's status can read the same facts.

use std::time::Duration;

/// The upper bounds, in seconds, of the buckets that [`Durations`] counts
/// events in: from a small backup of an idle database to a first restore
/// of a large one.
pub const DURATION_BOUNDS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How long events took (backups, applies), counted in the buckets of
/// [`DURATION_BOUNDS`]: what a Prometheus histogram reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations {
    /// Events per bucket (not cumulative); the last counts those past
    /// every bound.
    pub counts: [u64; DURATION_BOUNDS.len() + 1],
    /// The events' total duration.
    pub sum: Duration,
}

impl Durations {
    /// Counts one event that took `took`.
    pub fn record(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BOUNDS.len());
        self.counts[bucket] += 1;
        self.sum += took;
    }

    /// Events counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The kinds of failure counted apart, a label set small and fixed so
/// that every kind is reported, at 0 until it happens. What each covers is
/// [`Error::kind`](crate::Error::kind)'s to say, and `skipped`'s: a newest
/// backup a follower cannot load.
pub const FAILURE_KINDS: [&str; 9] = [
    "corrupt", "purged", "skipped", "missing", "store", "io", "rocksdb", "fenced", "other",
];

/// Failures since start, by kind (see [`FAILURE_KINDS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures([u64; FAILURE_KINDS.len()]);

impl Failures {
    /// Counts one failure of `kind`, one of [`FAILURE_KINDS`] (else `other`).
    pub fn record(&mut self, kind: &str) {
        let slot = FAILURE_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(FAILURE_KINDS.len() - 1);
        self.0[slot] += 1;
    }

    /// Failures of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each kind with its count, zeros included.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURE_KINDS.iter().copied().zip(self.0.iter().copied())
    }
}

/// Bytes and files an event (a backup, an apply) wrote, summed since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Bytes written.
    pub bytes: u64,
    /// Files written.
    pub files: u64,
    /// Files a follower's apply kept from the previous generation rather
    /// than copying (0 on a master).
    pub files_kept: u64,
}

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
    /// Requests that failed (no answer, 5xx, 429); each was retried or
    /// reported.
    pub failed: u64,
    /// Time since the store last answered anything; `None` before the
    /// first answer.
    pub since_answer: Option<Duration>,
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
    /// Backups taken since start.
    pub done: u64,
    /// Backups that failed since start, by kind.
    pub failed: Failures,
    /// How long each backup took, publishing included.
    pub durations: Durations,
    /// What the backups since start added to the store.
    pub added: Copied,
    /// Backups retention removed since start.
    pub purged: u64,
    /// Retention passes that failed since start.
    pub purge_failures: u64,
    /// How long ago the heartbeat was last written; `None` before the first.
    pub heartbeat_ago: Option<Duration>,
    /// Why the last backup failed, until one succeeds.
    pub last_error: Option<String>,
    /// The backup store's location.
    pub backup_dir: String,
    /// Why the database refuses writes, while it does.
    pub db_error: Option<String>,
    /// Who took the backup directory over, when another master did.
    pub fenced_by: Option<String>,
    /// The lease's term (`--lease-term`), once the store is claimed.
    pub lease_term: Option<Duration>,
    /// Time since the lease was last renewed (since the claim, before the
    /// first renewal).
    pub lease_renewed_ago: Option<Duration>,
    /// Not renewed within its term: writes are refused until it is.
    pub lease_expired: bool,
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
    /// The live tail, when it ships.
    pub log: Option<LogShipping>,
}

/// The master's live tail: what it shipped, and whether it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogShipping {
    /// What the shipper did since start.
    pub stats: crate::tail::ship::ShipStats,
    /// Why shipping fails, while it does.
    pub error: Option<String>,
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
    /// The served data's sequence number: the backup's, and every batch of
    /// the log applied since.
    pub applied_seq: u64,
    /// The master's sequence number, as its latest heartbeat said.
    pub master_seq: Option<u64>,
    /// The live tail, when the store keeps a log.
    pub log: Option<FollowedLog>,
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
    /// Failed applies and skipped backups since start, by kind.
    pub failures: Failures,
    /// How long each apply took.
    pub durations: Durations,
    /// What the applies since start copied and kept.
    pub copied: Copied,
    /// Reads refused because the data was stale past `--max-staleness`
    /// (with `--stale-reads refuse`).
    pub reads_refused_stale: u64,
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

/// A follower's live tail: what it applied, and whether it can go on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowedLog {
    /// Segments read since start.
    pub segments: u64,
    /// Write batches applied since start.
    pub batches: u64,
    /// Why the log cannot be followed from the served data, until a backup
    /// brings the follower past it.
    pub broken: Option<String>,
    /// Backups restored because the log could not bring the data on.
    pub fallbacks: u64,
}

/// What a daemon reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonStatus {
    /// A master's.
    Master(MasterStatus),
    /// A follower's.
    Follower(FollowerStatus),
}
