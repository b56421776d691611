//! The `rkv` command line. It speaks RocksDB `ldb`'s syntax (`rkv --db=DIR put
//! K V`, `get`, `scan`, `backup --backup_dir=B`, `restore --backup_dir=B`), so
//! a script written for `ldb` works with `rkv` in its place, and adds rkv's
//! own commands (`backups`, `verify`).
//!
//! Flags are parsed and validated completely before anything is opened; each
//! subcommand's module then runs it. Errors are printed as one sentence, a
//! `Try:` line where there is an obvious next step, and an exit code from
//! [`ExitCode`].

mod backup;
mod data;
mod progress;
mod promote;
mod remote;
mod target;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::backup::StoreArgs;
use crate::client::ClientError;
use crate::daemon::DaemonFile;
use crate::error::Error;
use crate::keys::Encoding;
use crate::server::ListenAddr;

/// Exit codes of `rkv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Not found, or the operation failed.
    Failed = 1,
    /// The command line is wrong.
    Usage = 2,
}

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
        after_help = "Example:\n  rkv --db=/tmp/restored restore --backup_dir=/tmp/backups --backup_id=3"
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
        /// at or before it. TIME is RFC 3339 (`2026-11-24T10:14:00Z`) or an
        /// age (`15m`, `2h 30m`: that long ago).
        #[arg(long, value_name = "TIME", value_parser = backup::PointInTime::parse,
              conflicts_with = "backup_id")]
        at: Option<backup::PointInTime>,
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
    fn key_encoding(&self) -> Encoding {
        if self.hex || self.key_hex {
            Encoding::Hex
        } else {
            Encoding::Raw
        }
    }

    /// How values are spelled on this command line.
    fn value_encoding(&self) -> Encoding {
        if self.hex || self.value_hex {
            Encoding::Hex
        } else {
            Encoding::Raw
        }
    }

    /// The `--db` directory, which `command` needs.
    fn require_db(&self, command: &str) -> Result<&Path, CliError> {
        self.db.as_deref().ok_or_else(|| {
            CliError::Usage(format!("`{command}` needs the database: pass --db=DIR"))
        })
    }
}

/// Why a command did not succeed, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The key asked for is not in the database (exit 1).
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// A write was asked of a follower's data directory (exit 1).
    #[error("{} is an rkv-follower data directory, which is read-only", .0.display())]
    FollowerDataDir(PathBuf),
    /// The library failed (exit 1).
    #[error(transparent)]
    Lib(#[from] Error),
    /// Talking to a daemon failed (exit 1).
    #[error(transparent)]
    Remote(#[from] ClientError),
    /// A check refused the operation (exit 1).
    #[error("{what}")]
    Refused {
        /// What was found.
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// `--at` names a time before every retained backup (exit 1).
    #[error(
        "no backup was created at or before {at}: the oldest retained is backup {oldest_id}, \
         created {oldest_created}"
    )]
    NoneAtOrBefore {
        /// The time asked for, RFC 3339.
        at: String,
        /// The oldest retained backup.
        oldest_id: u32,
        /// Its creation time, RFC 3339.
        oldest_created: String,
    },
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) | CliError::Lib(Error::InvalidHex { .. }) => ExitCode::Usage,
            CliError::KeyNotFound(_)
            | CliError::NoneAtOrBefore { .. }
            | CliError::Refused { .. }
            | CliError::FollowerDataDir(_)
            | CliError::Lib(_)
            | CliError::Remote(_) => ExitCode::Failed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CliError::Usage(_) => Some("see `rkv --help`".to_string()),
            CliError::KeyNotFound(_) => None,
            CliError::Refused { hint, .. } => Some(hint.clone()),
            CliError::NoneAtOrBefore { .. } => Some(
                "retention purged older backups (--keep, --keep-within on the master); pick a \
                 later time or restore the oldest with --backup_id"
                    .to_string(),
            ),
            CliError::FollowerDataDir(_) => Some(
                "write to the master instead: rkv --connect=MASTER_ADDR put KEY VALUE".to_string(),
            ),
            CliError::Lib(e) => e.hint(),
            CliError::Remote(ClientError::Io { .. }) => Some(
                "check that the daemon is running and the address (--connect, or the daemon's \
                 --listen)"
                    .to_string(),
            ),
            CliError::Remote(ClientError::Server { message, .. })
                if message.starts_with("NOAUTH") || message.starts_with("WRONGPASS") =>
            {
                Some(
                    "pass the daemon's password with --password_file=FILE or RKV_PASSWORD"
                        .to_string(),
                )
            }
            CliError::Remote(_) => None,
        }
    }
}

/// Runs `rkv` with the process's arguments and returns its exit code.
pub fn main() -> i32 {
    init_logging();
    // What the CLI creates (a database, a backup directory) is private to
    // its user, as the daemons' is; RKV_UMASK=027 lets the group read.
    let umask = std::env::var("RKV_UMASK")
        .ok()
        .and_then(|m| crate::daemon::parse_umask(&m).ok())
        .unwrap_or(0o077);
    crate::daemon::set_umask(umask);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout (exit 0) and errors to
            // stderr (exit 2).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage as i32
            } else {
                ExitCode::Ok as i32
            };
        }
    };
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(()) => ExitCode::Ok as i32,
        Err(e) => {
            eprintln!("rkv: error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("Try: {hint}");
            }
            e.exit_code() as i32
        }
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
            Command::Verify { .. } => "verify",
            Command::Promote { .. } => "promote",
        }
    }
}

/// Runs a parsed command line, printing its output to `out`. The target is
/// chosen once: the daemon that owns `--db` (or `--connect`), else the
/// directory itself.
pub fn run(cli: &Cli, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let daemon = daemon_address(cli)?.map(|addr| target::Remote::new(cli, addr));
    match &cli.command {
        Command::Put { .. }
        | Command::Get { .. }
        | Command::Delete { .. }
        | Command::Scan { .. } => match daemon {
            Some(mut daemon) => data::run(cli, &mut daemon, out),
            None => data::run(cli, &mut target::Local::new(cli, cli.command.name()), out),
        },
        Command::Info { .. } => match daemon {
            Some(mut daemon) => remote::info(cli, &mut daemon, out),
            None => Err(CliError::Usage(
                "`info` asks a running daemon: pass --connect=ADDR, or --db=DIR of a database a \
                 daemon owns"
                    .to_string(),
            )),
        },
        Command::Backup { .. } => match daemon {
            Some(mut daemon) => remote::backup(cli, &mut daemon, out),
            None => backup::run(cli, out),
        },
        Command::Restore { .. }
        | Command::Backups { .. }
        | Command::Status { .. }
        | Command::Verify { .. } => backup::run(cli, out),
        Command::Promote {
            data,
            backup_dir,
            store,
            fence_live_master,
            discard_newer_backups,
        } => promote::run(
            &promote::Request {
                data,
                db: cli.require_db("promote")?,
                backup_dir: backup_dir.as_deref(),
                store,
                fence_live_master: *fence_live_master,
                discard_newer_backups: *discard_newer_backups,
            },
            out,
        ),
    }
}

/// The daemon to send the command to, if any: `--connect`, or the daemon
/// that owns the `--db` directory (it leaves its address there).
fn daemon_address(cli: &Cli) -> Result<Option<ListenAddr>, CliError> {
    let routable = matches!(
        cli.command,
        Command::Put { .. }
            | Command::Get { .. }
            | Command::Delete { .. }
            | Command::Scan { .. }
            | Command::Backup { .. }
            | Command::Info { .. }
    );
    if let Some(addr) = &cli.connect {
        return if routable {
            Ok(Some(addr.clone()))
        } else {
            Err(CliError::Usage(
                "--connect works with put, get, delete, scan, info and backup; restore, \
                 backups, status, verify and promote work on directories"
                    .to_string(),
            ))
        };
    }
    let Some(db) = cli.db.as_deref().filter(|_| routable) else {
        return Ok(None);
    };
    let Some(file) = DaemonFile::find_running(db) else {
        return Ok(None);
    };
    // A Unix socket avoids the network stack; any address will do otherwise.
    let mut addrs: Vec<ListenAddr> = file.listen.iter().filter_map(|a| a.parse().ok()).collect();
    addrs.sort_by_key(|a| !a.is_unix());
    Ok(addrs.into_iter().next())
}

/// The password for the daemon, from --password_file or RKV_PASSWORD.
fn daemon_password(cli: &Cli) -> Result<Option<Vec<u8>>, CliError> {
    crate::daemon::load_password(cli.password.as_deref(), cli.password_file.as_deref())
        .map_err(CliError::Usage)
}

/// Logs go to stderr, warnings and up unless `RKV_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Writes a line to the command's output; a closed pipe (`rkv scan | head`)
/// is not an error worth reporting.
fn emit(out: &mut dyn std::io::Write, line: &str) -> Result<(), CliError> {
    match writeln!(out, "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("write to standard output", e).into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn both_flag_spellings_parse() {
        for args in [
            ["rkv", "--db=/d", "backup", "--backup_dir=/b"],
            ["rkv", "--db=/d", "backup", "--backup-dir=/b"],
            ["rkv", "backup", "--backup_dir=/b", "--db=/d"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(matches!(cli.command, Command::Backup { .. }));
            assert_eq!(cli.db.as_deref(), Some(Path::new("/d")));
        }
        let cli = Cli::try_parse_from(["rkv", "--db=/d", "get", "0x61", "--key-hex"]).unwrap();
        assert_eq!(cli.key_encoding(), Encoding::Hex);
        assert_eq!(cli.value_encoding(), Encoding::Raw);
    }
}
