//! What `rkv` accepts: the global flags ([`Cli`]) and the subcommands
//! ([`Command`]), with their help and examples, as clap parses them.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use super::{backup, CliError};
use crate::backup::StoreArgs;
use crate::keys::Encoding;
use crate::server::ListenAddr;

const EXAMPLES: &str = "\
Examples:
  rkv --db=/tmp/db --create_if_missing put user:1 Alice
  rkv --db=/tmp/db get user:1
  rkv --db=/tmp/db scan --from=user: --to='user;' --max_keys=10
  rkv --db=/tmp/db --hex put 0x00FF 0x0102
  rkv --db=/tmp/db backup --backup_dir=/tmp/backups
  rkv backups --backup_dir=/tmp/backups
  rkv backups --backup_dir=s3://bucket/prefix --s3-endpoint=http://127.0.0.1:9000
  rkv --db=/tmp/restored restore --backup_dir=/tmp/backups
  rkv --db=/var/lib/rkv/master promote --data=/var/lib/rkv/follower-eu1 \
      --backup_dir=/var/lib/rkv/backups          (make a stopped follower the master)
  rkv --connect=127.0.0.1:6380 put user:2 Bob      (through a running daemon)
  rkv --connect=127.0.0.1:6380 info replication
  rkv --connect=10.0.0.7:6391 --tls --cacert=ca.crt --user=app get user:1

When --db names a database a running rkv daemon owns, put, get, delete,
scan, info and backup go through that daemon instead of failing on the lock.

Exit codes: 0 success; 1 not found or the operation failed; 2 bad command line.";

/// rkv: RocksDB with read replicas. This CLI works on a database directory
/// directly, with the syntax of RocksDB's `ldb`.
#[derive(Debug, Parser)]
#[command(name = "rkv", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    /// The database directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub db: Option<PathBuf>,

    /// Create the database if the directory holds none (writes only).
    #[arg(
        long = "create_if_missing",
        visible_alias = "create-if-missing",
        global = true
    )]
    pub create_if_missing: bool,

    /// Keys and values are written and printed in hex: 0x followed by hex digits.
    #[arg(long, global = true)]
    pub hex: bool,

    /// Keys are written and printed in hex.
    #[arg(long = "key_hex", visible_alias = "key-hex", global = true)]
    pub key_hex: bool,

    /// Values are written and printed in hex.
    #[arg(long = "value_hex", visible_alias = "value-hex", global = true)]
    pub value_hex: bool,

    /// Talk to a running rkv daemon at ADDR (HOST:PORT or unix:/path)
    /// instead of opening a database directory.
    #[arg(long, global = true, env = "RKV_CONNECT", value_name = "ADDR")]
    pub connect: Option<ListenAddr>,

    /// Through a daemon: reads wait until its data holds POSITION (a
    /// master's `rkv position` after a write), so they see that write; an
    /// error after --read_timeout if the daemon does not get there.
    #[arg(
        long = "read_after",
        visible_alias = "read-after",
        global = true,
        env = "RKV_READ_AFTER",
        value_name = "POSITION"
    )]
    pub read_after: Option<u64>,

    /// How long a read waits for --read_after's position.
    #[arg(
        long = "read_timeout",
        visible_alias = "read-timeout",
        global = true,
        env = "RKV_READ_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub read_timeout: std::time::Duration,

    /// Through a follower: refuse to read data older than DURATION (an
    /// error instead of stale data), whatever the follower's own
    /// --max-staleness.
    #[arg(
        long = "max_staleness",
        visible_alias = "max-staleness",
        global = true,
        env = "RKV_MAX_STALENESS",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub max_staleness: Option<std::time::Duration>,

    /// File whose first line is the daemon's password (or set RKV_PASSWORD).
    #[arg(
        long = "password_file",
        visible_alias = "password-file",
        global = true,
        env = "RKV_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// The daemon's password; prefer --password_file (flags are visible to
    /// other users).
    #[arg(
        long,
        global = true,
        env = "RKV_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    pub password: Option<String>,

    /// Through a daemon: log in as USER (`AUTH USER PASSWORD`) with the
    /// password of --password_file or RKV_PASSWORD, instead of as the
    /// default user.
    #[arg(long, global = true, env = "RKV_USER", value_name = "USER")]
    pub user: Option<String>,

    /// Through a daemon: speak TLS (to its --tls-listen address), checking
    /// its certificate against --cacert or the system's CAs.
    #[arg(long, global = true, env = "RKV_TLS")]
    pub tls: bool,

    /// With --tls: the CA certificates (PEM) the daemon's certificate must
    /// chain to; the system's CAs when not given.
    #[arg(long, global = true, env = "RKV_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// With --tls: the client certificate (PEM) to present, for a daemon
    /// that asks for one (--tls-ca-cert-file); needs --key.
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        env = "RKV_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,

    /// With --tls: the client certificate's private key (PEM).
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "RKV_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,

    /// With --tls: the name the daemon's certificate must carry, when not
    /// the address connected to (e.g. the host name of a DNS SAN).
    #[arg(long, global = true, env = "RKV_SNI", value_name = "NAME")]
    pub sni: Option<String>,

    /// Draw no progress bars (restore, verify and backup draw them on
    /// standard error while it is a terminal).
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store VALUE under KEY; prints OK.
    #[command(after_help = "Example:\n  rkv --db=/tmp/db --create_if_missing put user:1 Alice")]
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value stored under KEY; exit code 1 when there is none (or
    /// it expired).
    #[command(after_help = "Example:\n  rkv --db=/tmp/db get user:1 --show_deadline")]
    Get {
        /// The key.
        key: String,
        /// Also print when the key expires (`value : 2026-11-24T10:14:00.000Z`,
        /// or `never`).
        #[arg(long = "show_deadline", visible_alias = "show-deadline")]
        show_deadline: bool,
    },
    /// Remove KEY; prints OK (also when the key was absent).
    #[command(after_help = "Example:\n  rkv --db=/tmp/db delete user:1")]
    Delete {
        /// The key.
        key: String,
    },
    /// Print `key : value` lines in key order; expired keys are left out.
    #[command(
        after_help = "Example:\n  rkv --db=/tmp/db scan --from=user: --to='user;' --max_keys=100"
    )]
    Scan {
        /// First key to print (inclusive).
        #[arg(long, value_name = "KEY")]
        from: Option<String>,
        /// Stop before this key (exclusive).
        #[arg(long, value_name = "KEY")]
        to: Option<String>,
        /// Print at most N entries.
        #[arg(long = "max_keys", visible_alias = "max-keys", value_name = "N")]
        max_keys: Option<usize>,
        /// Also print when each key expires (`key : value : deadline`, the
        /// deadline in RFC 3339 UTC or `never`).
        #[arg(long = "show_deadline", visible_alias = "show-deadline")]
        show_deadline: bool,
    },
    /// Back the database up into a backup directory, incrementally: files an
    /// earlier backup holds are shared, not copied.
    #[command(after_help = "Example:\n  rkv --db=/tmp/db backup --backup_dir=/tmp/backups")]
    Backup {
        /// The backup directory (created when missing). Through a daemon,
        /// the daemon's own backup directory is used.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: Option<PathBuf>,
    },
    /// Restore a backup into the --db directory, replacing what it holds (as
    /// `ldb restore` does). Restores the newest backup unless --backup_id is given.
    #[command(
        after_help = "Examples:\n  rkv --db=/tmp/restored restore --backup_dir=/tmp/backups --backup_id=3\n  \
                      rkv --db=/tmp/restored restore --backup_dir=/tmp/backups --at=2026-11-24T10:14:00Z\n  \
                      rkv --db=/tmp/restored restore --backup_dir=/tmp/backups --seq=1200345"
    )]
    Restore {
        /// The backup directory, or s3://BUCKET/PREFIX.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: PathBuf,
        /// How to reach an object store.
        #[command(flatten)]
        store: StoreArgs,
        /// The backup to restore; default: the newest.
        #[arg(long = "backup_id", visible_alias = "backup-id", value_name = "ID")]
        backup_id: Option<u32>,
        /// Restore the database as it was at TIME: the newest backup created
        /// at or before it, then the write log the master shipped up to
        /// TIME (to the segment: within --log-interval of it). TIME is RFC
        /// 3339 (`2026-11-24T10:14:00Z`) or an age (`15m`, `2h 30m`: that
        /// long ago).
        #[arg(long, value_name = "TIME", value_parser = backup::PointInTime::parse,
              conflicts_with = "backup_id")]
        at: Option<backup::PointInTime>,
        /// Restore the database as it was at sequence number N (see `rkv
        /// backups` and the master's `INFO`): the newest backup at or before
        /// it, then the write log up to N, in whole write batches (a
        /// transaction is never cut: N inside one stops before it).
        #[arg(long, value_name = "N", conflicts_with_all = ["backup_id", "at"])]
        seq: Option<u64>,
    },
    /// List the backups in a backup directory: id, creation time (UTC) and
    /// age, size, file count, and the sequence number each holds.
    #[command(
        after_help = "Examples:\n  rkv backups --backup_dir=/tmp/backups\n  rkv backups \
                      --backup_dir=/tmp/backups --at=15m --json"
    )]
    Backups {
        /// The backup directory, or s3://BUCKET/PREFIX.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: PathBuf,
        /// How to reach an object store.
        #[command(flatten)]
        store: StoreArgs,
        /// Show only the backup `restore --at TIME` would pick (RFC 3339, or
        /// an age such as `15m`).
        #[arg(long, value_name = "TIME", value_parser = backup::PointInTime::parse)]
        at: Option<backup::PointInTime>,
        /// Print JSON (an array of objects; one object with --at) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Describe a backup directory at a glance: its owning master and the
    /// age of its heartbeat (its lease), the newest backup, the retained
    /// range with its size (shared and private bytes), and any backup that
    /// fails to load.
    #[command(after_help = "Example:\n  rkv status --backup_dir=/var/lib/rkv/backups --json")]
    Status {
        /// The backup directory, or s3://BUCKET/PREFIX.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: PathBuf,
        /// How to reach an object store.
        #[command(flatten)]
        store: StoreArgs,
        /// Print one JSON object for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make a stopped follower's data the database of a new master (a
    /// failover). Checks that the follower is stopped and, with
    /// --backup_dir, that the old master is not running and no backup is
    /// newer than the follower's; copies the follower's current generation
    /// into the --db directory (hard links for SST files), checks it opens
    /// read-write, and hands the backup directory over to the new master:
    /// it may start there at once, and the old master is refused there if
    /// it comes back. Prints the command that starts the new master.
    #[command(after_help = "Example:\n  rkv --db=/var/lib/rkv/master promote \
                            --data=/var/lib/rkv/follower-eu1 --backup_dir=/var/lib/rkv/backups")]
    Promote {
        /// The stopped follower's data directory (its --data).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The backup directory (or s3://BUCKET/PREFIX) the old master
        /// wrote and the new one will, if it survived. Without it nothing is
        /// checked or recorded there, and the new master needs a new one.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: Option<PathBuf>,
        /// How to reach an object store.
        #[command(flatten)]
        store: StoreArgs,
        /// Hand the backup directory over even though its master is running
        /// (renewing its lease). That master then stops backing up and
        /// answers writes with -READONLY; the writes it took after the
        /// follower's backup are lost.
        #[arg(long = "fence-live-master", visible_alias = "fence_live_master")]
        fence_live_master: bool,
        /// Promote even though the backup directory holds a backup newer
        /// than the follower's: the writes only newer backups hold are lost.
        #[arg(
            long = "discard-newer-backups",
            visible_alias = "discard_newer_backups"
        )]
        discard_newer_backups: bool,
    },
    /// Print a running daemon's INFO (all sections, or one: server,
    /// clients, stats, persistence, replication, keyspace).
    #[command(after_help = "Example:\n  rkv --connect=127.0.0.1:6381 info replication")]
    Info {
        /// The section to print.
        section: Option<String>,
    },
    /// Print the position a running daemon's data holds: on a master, its
    /// newest write (every write acknowledged before is at or below it); on
    /// a follower, how far it has applied. Pass it to --read_after.
    #[command(
        after_help = "Example (read your write on a follower):\n  rkv --connect=127.0.0.1:6380 put user:1 Alice\n  rkv --connect=127.0.0.1:6381 --read_after=$(rkv --connect=127.0.0.1:6380 position) get user:1"
    )]
    Position,
    /// Check a backup's files against the sizes and crc32c checksums its meta
    /// file records. Checks the newest backup unless --backup_id is given.
    #[command(after_help = "Example:\n  rkv verify --backup_dir=/tmp/backups --backup_id=3")]
    Verify {
        /// The backup directory, or s3://BUCKET/PREFIX.
        #[arg(long = "backup_dir", visible_alias = "backup-dir", value_name = "DIR")]
        backup_dir: PathBuf,
        /// How to reach an object store.
        #[command(flatten)]
        store: StoreArgs,
        /// The backup to check; default: the newest.
        #[arg(long = "backup_id", visible_alias = "backup-id", value_name = "ID")]
        backup_id: Option<u32>,
    },
}

impl Cli {
    /// How keys are spelled on this command line.
    pub(super) fn key_encoding(&self) -> Encoding {
        if self.hex || self.key_hex {
            Encoding::Hex
        } else {
            Encoding::Raw
        }
    }

    /// How values are spelled on this command line.
    pub(super) fn value_encoding(&self) -> Encoding {
        if self.hex || self.value_hex {
            Encoding::Hex
        } else {
            Encoding::Raw
        }
    }

    /// The `--db` directory, which `command` needs.
    pub(super) fn require_db(&self, command: &str) -> Result<&Path, CliError> {
        self.db.as_deref().ok_or_else(|| {
            CliError::Usage(format!("`{command}` needs the database: pass --db=DIR"))
        })
    }
}

impl Command {
    /// The command's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Get { .. } => "get",
            Command::Delete { .. } => "delete",
            Command::Scan { .. } => "scan",
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Backups { .. } => "backups",
            Command::Status { .. } => "status",
            Command::Info { .. } => "info",
            Command::Position => "position",
            Command::Verify { .. } => "verify",
            Command::Promote { .. } => "promote",
        }
    }
}
