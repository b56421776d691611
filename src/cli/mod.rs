//! The `rkv` command line. It speaks RocksDB `ldb`'s syntax (`rkv --db=DIR put
//! K V`, `get`, `scan`, `backup --backup_dir=B`, `restore --backup_dir=B`), so
//! a script written for `ldb` works with `rkv` in its place, and adds rkv's
//! own commands (`backups`, `verify`).
//!
//! Flags are parsed and validated completely before anything is opened; each
//! subcommand's module then runs it. Errors are printed as one sentence, a
//! `Try:` line where there is an obvious next step, and an exit code from
//! [`ExitCode`].

mod args;
mod backup;
mod data;
mod progress;
mod promote;
mod remote;
mod status;
mod target;

use std::path::PathBuf;

use clap::Parser;

use crate::client::ClientError;
use crate::daemon::DaemonFile;
use crate::error::Error;
use crate::server::ListenAddr;
pub use args::{Cli, Command};

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

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> std::process::ExitCode {
        std::process::ExitCode::from(code as u8)
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
                    "pass the daemon's password with --password_file=FILE or RKV_PASSWORD, and \
                     the user with --user=NAME when it is not the default user"
                        .to_string(),
                )
            }
            CliError::Remote(ClientError::Server { message, .. })
                if message.starts_with("NOPERM") =>
            {
                Some("log in as a user the daemon's ACL file allows this (--user=NAME)".to_string())
            }
            CliError::Remote(ClientError::Protocol { .. }) => Some(
                "if the address is a --tls-listen one, add --tls (and --cacert=FILE)".to_string(),
            ),
            CliError::Remote(ClientError::Server { message, .. })
                if message.starts_with("TIMEOUT") =>
            {
                Some(
                    "the daemon has not applied that position yet: see `rkv info replication` \
                     there (rkv_lag_seq, rkv_last_error), or allow more with --read_timeout"
                        .to_string(),
                )
            }
            CliError::Remote(_) => None,
        }
    }
}

/// Runs `rkv` with the process's arguments and returns its exit code.
pub fn main() -> std::process::ExitCode {
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
                ExitCode::Usage.into()
            } else {
                ExitCode::Ok.into()
            };
        }
    };
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(()) => ExitCode::Ok.into(),
        Err(e) => {
            eprintln!("rkv: error: {}", crate::error::Report(&e));
            if let Some(hint) = e.hint() {
                eprintln!("Try: {hint}");
            }
            e.exit_code().into()
        }
    }
}

/// Runs a parsed command line, printing its output to `out`. The target is
/// chosen once: the daemon that owns `--db` (or `--connect`), else the
/// directory itself.
pub fn run(cli: &Cli, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let mut daemon = daemon_address(cli)?.map(|(addr, tls)| target::Remote::new(cli, addr, tls));
    if daemon.is_none() && (cli.read_after.is_some() || cli.max_staleness.is_some()) {
        return Err(CliError::Usage(
            "--read_after and --max_staleness are asked of a running daemon: pass \
             --connect=ADDR (a follower's)"
                .to_string(),
        ));
    }
    // The key/value commands go to the daemon, else to the directory (which
    // is opened only when the command reaches it).
    let mut local = target::Local::new(cli, cli.command.name());
    let target: &mut dyn target::Target = match daemon.as_mut() {
        Some(daemon) => daemon,
        None => &mut local,
    };
    match &cli.command {
        Command::Put { key, value } => data::put(cli, target, key, value, out),
        Command::Get { key, show_deadline } => data::get(cli, target, key, *show_deadline, out),
        Command::Delete { key } => data::delete(cli, target, key, out),
        Command::Scan {
            from,
            to,
            max_keys,
            show_deadline,
        } => {
            let scan = data::Scan {
                from: from.as_deref(),
                to: to.as_deref(),
                max_keys: *max_keys,
                show_deadline: *show_deadline,
            };
            data::scan(cli, target, &scan, out)
        }
        Command::Info { section } => match daemon.as_mut() {
            Some(daemon) => remote::info(daemon, section.as_deref(), out),
            None => Err(CliError::Usage(
                "`info` asks a running daemon: pass --connect=ADDR, or --db=DIR of a database a \
                 daemon owns"
                    .to_string(),
            )),
        },
        Command::Position => match daemon.as_mut() {
            Some(daemon) => remote::position(daemon, out),
            None => Err(CliError::Usage(
                "`position` asks a running daemon: pass --connect=ADDR, or --db=DIR of a \
                 database a daemon owns"
                    .to_string(),
            )),
        },
        Command::Backup { backup_dir } => match daemon.as_mut() {
            Some(daemon) => remote::backup(daemon, backup_dir.as_deref(), out),
            None => backup::backup(
                cli.require_db("backup")?,
                backup_dir.as_deref(),
                cli.quiet,
                out,
            ),
        },
        Command::Restore {
            backup_dir,
            store,
            backup_id,
            at,
            seq,
        } => {
            let req = backup::Restore {
                backup_dir,
                store,
                backup_id: *backup_id,
                at: *at,
                seq: *seq,
            };
            backup::restore(cli.require_db("restore")?, &req, cli.quiet, out)
        }
        Command::Backups {
            backup_dir,
            store,
            at,
            json,
        } => backup::backups(backup_dir, store, *at, *json, out),
        Command::Status {
            backup_dir,
            store,
            json,
        } => status::status(backup_dir, store, *json, out),
        Command::Verify {
            backup_dir,
            backup_id,
            store,
        } => backup::verify(backup_dir, store, *backup_id, cli.quiet, out),
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
/// Whether to speak TLS to it comes with the address: `--tls`, or a
/// daemon that listens only for TLS clients.
fn daemon_address(cli: &Cli) -> Result<Option<(ListenAddr, bool)>, CliError> {
    let routable = matches!(
        cli.command,
        Command::Put { .. }
            | Command::Get { .. }
            | Command::Delete { .. }
            | Command::Scan { .. }
            | Command::Backup { .. }
            | Command::Info { .. }
            | Command::Position
    );
    if let Some(addr) = &cli.connect {
        return if routable {
            Ok(Some((addr.clone(), cli.tls)))
        } else {
            Err(CliError::Usage(
                "--connect works with put, get, delete, scan, info, position and backup; restore, \
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
    let parsed = |addrs: &[String]| -> Vec<ListenAddr> {
        addrs.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let mut addrs = parsed(&file.listen);
    addrs.sort_by_key(|a| !a.is_unix());
    if let Some(addr) = addrs.into_iter().next() {
        return Ok(Some((addr, cli.tls)));
    }
    Ok(parsed(&file.tls_listen)
        .into_iter()
        .next()
        .map(|addr| (addr, true)))
}

/// The password for the daemon, from --password_file or RKV_PASSWORD.
fn daemon_password(cli: &Cli) -> Result<Option<Vec<u8>>, CliError> {
    crate::daemon::load_password(cli.password.as_deref(), cli.password_file.as_deref())
        .map_err(|e| CliError::Usage(e.to_string()))
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
    use crate::keys::Encoding;
    use clap::CommandFactory;
    use std::path::Path;

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
