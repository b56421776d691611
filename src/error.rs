//! The library's typed errors: each variant names a situation a caller can
//! act on ("no backup yet", "backup corrupt", "db locked"), and carries a
//! sentence that says what to do about it.

use std::path::PathBuf;

use crate::backup::BackupLocation;

/// A `Result` whose error is the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library, by meaning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database directory holds no database and creating one was not asked for.
    #[error("no database at {path}")]
    DbNotFound {
        /// The directory that was expected to hold a database.
        path: PathBuf,
    },

    /// Another process holds the database's lock.
    #[error("the database at {path} is in use by another process")]
    DbLocked {
        /// The locked database directory.
        path: PathBuf,
    },

    /// The backup store does not exist (a directory that is missing or not
    /// a BackupEngine directory).
    #[error("no backup directory at {location}")]
    BackupDirMissing {
        /// The backup location that was given.
        location: BackupLocation,
    },

    /// The backup store exists but holds no complete backup.
    #[error("the backup directory {location} holds no backups")]
    NoBackups {
        /// The backup store.
        location: BackupLocation,
    },

    /// The requested backup id is not in the backup store.
    #[error("backup {id} does not exist in {location}")]
    BackupNotFound {
        /// The requested backup id.
        id: u32,
        /// The backup store.
        location: BackupLocation,
    },

    /// A backup's files do not match what its meta file records.
    #[error("backup {id} is corrupt: {detail}")]
    BackupCorrupt {
        /// The corrupt backup.
        id: u32,
        /// Which file is wrong and how.
        detail: String,
    },

    /// A file in the backup store is damaged (truncated, or its bytes differ
    /// from what the backups listing it record).
    #[error("the backup store's file {path} is damaged: {detail}")]
    DamagedFile {
        /// The file, relative to the store.
        path: String,
        /// What is wrong with it.
        detail: String,
    },

    /// Backup `id` was purged while it was being restored.
    #[error(
        "backup {id} was purged by the master before its restore could finish (the restore \
         ran {ran:?}{keep})",
        keep = keep_within.map(|k| format!("; the master keeps backups for --keep-within {}", humantime::format_duration(k))).unwrap_or_default()
    )]
    BackupPurged {
        /// The backup.
        id: u32,
        /// How long the restore ran before it failed.
        ran: std::time::Duration,
        /// The master's `--keep-within`, when its heartbeat says.
        keep_within: Option<std::time::Duration>,
    },

    /// Another master took over the backup directory: this one is fenced.
    #[error("this master no longer owns the backup directory: {by} took it over")]
    Fenced {
        /// The master that holds it now.
        by: String,
    },

    /// Another master process holds the backup directory's lock.
    #[error("another rkv-master is using the backup directory {path}{owner}", owner = owner.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    BackupDirLocked {
        /// The backup directory.
        path: PathBuf,
        /// Who, as its heartbeat names it.
        owner: Option<String>,
    },

    /// Another master renews its lease on the backup directory.
    #[error("another rkv-master ({owner}) holds the backup directory {location}: it keeps renewing its heartbeat there")]
    BackupDirLeased {
        /// The backup store.
        location: BackupLocation,
        /// The other master: `<host>:<db path>` and pid.
        owner: String,
    },

    /// The backup directory's newest backup is of another database.
    #[error(
        "the newest backup in {location} (backup {id}) is of another database ({theirs}), not \
         of this master's database ({ours})"
    )]
    ForeignBackups {
        /// The backup store.
        location: BackupLocation,
        /// The newest backup.
        id: u32,
        /// Its database: identity and master label.
        theirs: String,
        /// This master's database.
        ours: String,
    },

    /// A promotion replaced this master: its database lacks what the new
    /// master wrote.
    #[error(
        "this master ({me}) was superseded by a promotion: the backup directory {location} now \
         follows {by}"
    )]
    Superseded {
        /// The backup store.
        location: BackupLocation,
        /// This master.
        me: String,
        /// The master the directory follows now.
        by: String,
    },

    /// A restore was asked into a directory whose database a process has open.
    #[error("cannot restore into {path}: the database there is in use by another process")]
    RestoreTargetInUse {
        /// The restore destination.
        path: PathBuf,
    },

    /// The write-ahead log no longer holds the writes asked for (its files
    /// were removed): only a backup bridges the gap.
    #[error(
        "the write-ahead log no longer starts at sequence {wanted}{found}",
        found = found.map(|f| format!(" (its next write is {f})")).unwrap_or_default()
    )]
    LogGap {
        /// The first sequence number wanted.
        wanted: u64,
        /// Where the log went on instead, if anywhere.
        found: Option<u64>,
    },

    /// A follower was given a write batch that does not continue its data
    /// (or its data moved on by other than the batch): never applied.
    #[error("a write batch at sequence {batch} does not follow the data, which stands at {at}")]
    NotNext {
        /// The sequence number the data holds.
        at: u64,
        /// The batch's first sequence number.
        batch: u64,
    },

    /// Another master already shipped a different segment under the same
    /// name: this one no longer owns the log.
    #[error("log segment {name} was shipped by another master")]
    SegmentExists {
        /// The segment's name in the store.
        name: String,
    },

    /// The master's history parted from the follower's data: a master of
    /// the same database that recovered, or was promoted, at an earlier
    /// point than the writes the follower applied.
    #[error("the master's log parted from the served data at sequence {at}: {detail}")]
    Diverged {
        /// The sequence number the data stands at.
        at: u64,
        /// What showed it.
        detail: String,
    },

    /// A log segment in the store fails its checks: never applied.
    #[error("log segment {name}: {source}")]
    BadSegment {
        /// The segment's name in the store.
        name: String,
        /// What is wrong with it.
        #[source]
        source: crate::tail::SegmentError,
    },

    /// A key or value given in hex could not be decoded.
    #[error("invalid hex string {input:?}: {reason}")]
    InvalidHex {
        /// The text as the user gave it.
        input: String,
        /// Why it is not valid hex.
        reason: String,
    },

    /// The object store failed a request (unreachable, refused, or an
    /// answer rkv cannot use). The store's or the client's own error is the
    /// source, printed by [`Report`].
    #[error("object store {location}: {context}: {failure}")]
    Store {
        /// The store.
        location: BackupLocation,
        /// What was being done, in lowercase ("read latest").
        context: String,
        /// What went wrong, as rkv acts on it.
        failure: StoreFailure,
        /// The error behind it, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The object store does not honour conditional writes, which fence a
    /// second master off.
    #[error("object store {location} cannot fence a second master: {behaviour}")]
    StoreNotConditional {
        /// The store.
        location: BackupLocation,
        /// What the store did.
        behaviour: String,
    },

    /// An error from RocksDB that has no more specific meaning here.
    #[error("{context}: {source}")]
    RocksDb {
        /// What was being done, in lowercase ("open the database at /x").
        context: String,
        /// RocksDB's own error.
        #[source]
        source: rocksdb::Error,
    },

    /// An I/O error outside RocksDB.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, in lowercase ("read /x/meta/3").
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// What kind of failure this is, as metrics count failures: one of
    /// [`FAILURE_KINDS`](crate::status::FAILURE_KINDS).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BackupCorrupt { .. } | Error::DamagedFile { .. } | Error::BadSegment { .. } => {
                "corrupt"
            }
            Error::BackupPurged { .. } => "purged",
            Error::DbNotFound { .. }
            | Error::BackupDirMissing { .. }
            | Error::NoBackups { .. }
            | Error::BackupNotFound { .. }
            | Error::LogGap { .. } => "missing",
            Error::NotNext { .. } => "gap",
            Error::Diverged { .. } => "diverged",
            Error::Store { .. } | Error::StoreNotConditional { .. } => "store",
            Error::Io { .. } => "io",
            Error::RocksDb { .. } => "rocksdb",
            Error::Fenced { .. }
            | Error::BackupDirLocked { .. }
            | Error::BackupDirLeased { .. }
            | Error::ForeignBackups { .. }
            | Error::Superseded { .. }
            | Error::SegmentExists { .. } => "fenced",
            Error::DbLocked { .. }
            | Error::RestoreTargetInUse { .. }
            | Error::InvalidHex { .. } => "other",
        }
    }

    /// Whether a local file operation failed for want of space: this
    /// host's disk, never the object store (which says so in HTTP).
    pub fn is_local_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            Error::RocksDb { source, .. } => is_no_space(source.as_ref()),
            _ => false,
        }
    }

    /// The obvious next step for the user, if there is one, as a sentence.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::DbNotFound { .. } => Some(
                "pass --create_if_missing to create a new database, or check the --db path"
                    .to_string(),
            ),
            Error::DbLocked { .. } => Some(
                "stop the process that has it open, or run the command against that \
                 process (rkv --connect ADDR …)"
                    .to_string(),
            ),
            Error::BackupDirMissing { .. } => Some(
                "check the --backup_dir path; `rkv --db=DIR backup --backup_dir=B` creates one"
                    .to_string(),
            ),
            Error::NoBackups { .. } => {
                Some("create one with `rkv --db=DIR backup --backup_dir=B`".to_string())
            }
            Error::BackupNotFound { location, .. } => Some(format!(
                "list the backups with `rkv backups --backup_dir={location}`"
            )),
            Error::BackupCorrupt { .. } => Some(
                "restore an older backup (see `rkv backups`), and take a new backup from the \
                 database"
                    .to_string(),
            ),
            Error::DamagedFile { .. } => Some(
                "the master heals this by itself: it drops the file, and the backups that \
                 need it, and copies it again in a new backup"
                    .to_string(),
            ),
            Error::BackupPurged { .. } => {
                Some("raise --keep-within on the master above the time a restore takes".to_string())
            }
            Error::BackupDirLocked { .. }
            | Error::BackupDirLeased { .. }
            | Error::Fenced { .. }
            | Error::SegmentExists { .. } => Some(
                "one master per backup directory: stop the other master, or give this one its \
                 own --backup-dir"
                    .to_string(),
            ),
            Error::ForeignBackups { .. } => Some(
                "give this master its own --backup-dir; or, to make this database the source \
                 followers replicate (a promotion), stop the old master and pass --take-over"
                    .to_string(),
            ),
            Error::Superseded { by, .. } => Some(format!(
                "leave this database stopped: {by} is the master now (writes this one took after \
                 the promotion's copy never reached the followers). To make it the source again, \
                 stop {by} and pass --take-over"
            )),
            Error::RestoreTargetInUse { .. } => Some(
                "stop the process that has that database open, or restore into another directory"
                    .to_string(),
            ),
            Error::InvalidHex { .. } => Some(
                "with --hex, --key_hex or --value_hex, write keys and values as 0x followed by \
                 an even number of hex digits, e.g. 0x6B6579"
                    .to_string(),
            ),
            Error::RocksDb { source, .. } if is_no_space(source.as_ref()) => {
                Some("free disk space and try again".to_string())
            }
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Some("free disk space and try again".to_string())
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Some("check the permissions of the path, and which user rkv runs as".to_string())
            }
            Error::Store { failure, .. } => failure.hint().map(str::to_string),
            Error::StoreNotConditional { .. } => Some(
                "use a store that supports If-None-Match and If-Match on PUT (AWS S3, MinIO \
                 and Cloudflare R2 do), or pass --accept-unfenced-store and make sure \
                 only one master ever writes to this prefix"
                    .to_string(),
            ),
            Error::LogGap { .. } => Some(
                "take a backup (rkv backup, or BGSAVE on the master): the log resumes from it"
                    .to_string(),
            ),
            Error::Diverged { .. } => Some(
                "nothing is needed: the follower restores the master's newest backup; the \
                 writes it held past the master's were lost with the old master's disk (or \
                 left behind by the promotion)"
                    .to_string(),
            ),
            Error::NotNext { .. } | Error::BadSegment { .. } => Some(
                "nothing is needed: a follower restores the newest backup and follows the log \
                 from there"
                    .to_string(),
            ),
            Error::RocksDb { .. } | Error::Io { .. } => None,
        }
    }

    /// Wraps a RocksDB error with what was being done.
    pub fn rocksdb(context: impl Into<String>, source: rocksdb::Error) -> Self {
        Error::RocksDb {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a failed request to the object store means to rkv: the hint it
/// gets, and whether waiting can mend it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// No connection could be made: the endpoint, its name, TLS, or the
    /// network.
    Unreachable,
    /// The request was sent and no answer came in time.
    TimedOut,
    /// The connection broke during the request.
    Broken,
    /// The store refused the credentials, or what they may do.
    Denied,
    /// The store answered with an error (a 5xx, SlowDown, …), retries
    /// included.
    Failed,
    /// An object rkv needs is not there.
    Missing,
    /// The store does not offer a request rkv needs.
    Unsupported,
    /// An answer rkv cannot use: not what rkv writes there, or cut short.
    Unreadable,
    /// `latest` changed between this master's own writes (a reply it did
    /// not get); the next attempt writes it again.
    Raced,
    /// The client could not be set up from the settings given.
    Misconfigured,
}

impl StoreFailure {
    /// The next step for the operator, if any.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            StoreFailure::Unreachable => Some(
                "check the endpoint (--s3-endpoint, AWS_ENDPOINT_URL) and the network between \
                 this host and the store",
            ),
            StoreFailure::TimedOut | StoreFailure::Broken | StoreFailure::Failed => Some(
                "the store or the network is failing; the daemons retry with a growing wait \
                 (see rkv_store_failed_requests in /metrics)",
            ),
            StoreFailure::Denied => Some(
                "check the credentials (AWS_ACCESS_KEY_ID, ~/.aws/credentials, AWS_PROFILE) \
                 and what they may do on the bucket",
            ),
            StoreFailure::Missing | StoreFailure::Unreadable => Some(
                "give rkv a prefix of its own: something other than rkv changed objects \
                 under it",
            ),
            StoreFailure::Unsupported => Some(
                "use an S3-compatible store with conditional PUTs and batch deletes (AWS S3, \
                 MinIO, Cloudflare R2)",
            ),
            StoreFailure::Misconfigured => {
                Some("check --s3-endpoint, AWS_REGION and the credentials' settings")
            }
            StoreFailure::Raced => None,
        }
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreFailure::Unreachable => "cannot connect",
            StoreFailure::TimedOut => "no answer in time",
            StoreFailure::Broken => "the connection broke",
            StoreFailure::Denied => "access denied",
            StoreFailure::Failed => "the store failed the request",
            StoreFailure::Missing => "not found",
            StoreFailure::Unsupported => "the store does not support the request",
            StoreFailure::Unreadable => "an answer rkv cannot use",
            StoreFailure::Raced => "it changed between this master's own writes; will try again",
            StoreFailure::Misconfigured => "the client cannot be set up",
        })
    }
}

/// An error and its causes on one line (`error: cause: cause`), leaving
/// out a cause whose text the error before it already holds: many errors
/// (`object_store`'s, and [`Error::Io`]) print their source inside their
/// own text. What the CLI and the daemons print and log.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !said.contains(&text) {
                write!(f, ": {text}")?;
            }
            said = text;
            next = cause.source();
        }
        Ok(())
    }
}

impl Error {
    /// This error with its causes, for a log line or a message to a person.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// Whether a RocksDB error reports a full disk. RocksDB's C API gives the
/// kind (an I/O error) but not the sub-code that says "no space", so the
/// message it is built from decides.
fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device")
}
