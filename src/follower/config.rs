//! `rkv-follower`'s flags (each also an `RKV_*` environment variable) and
//! their validation into a [`FollowerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::backup::{BackupLocation, StoreArgs};
use crate::daemon::{self, ConfigError, ServerArgs};
use crate::server::{ListenAddr, ServerConfig};

const AFTER_HELP: &str = "\
Every flag can also be set with the environment variable named in brackets.

Example:
  rkv-follower --backup-dir /srv/rkv-backups --data /var/lib/rkv/follower-eu1 --listen 127.0.0.1:6381
  redis-cli -p 6381 GET user:1
  redis-cli -p 6381 INFO replication

  # TLS only, for clients with a certificate signed by the private CA:
  rkv-follower --backup-dir /srv/rkv-backups --data /var/lib/rkv/follower-eu1 --listen none \
    --tls-listen 0.0.0.0:6391 --tls-cert-file /etc/rkv/tls/server.crt \
    --tls-key-file /etc/rkv/tls/server.key --tls-ca-cert-file /etc/rkv/tls/ca.crt

Signals: SIGTERM/SIGINT stop, SIGHUP re-reads the TLS files.";

/// What a follower does with reads while its data is older than
/// `--max-staleness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StaleReads {
    /// Answer from the old data (and report `healthy:0`).
    Serve,
    /// Answer `-MASTERDOWN` with the data's age and the bound.
    Refuse,
}

impl StaleReads {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleReads::Serve => "serve",
            StaleReads::Refuse => "refuse",
        }
    }
}

/// rkv-follower: a read-only replica of an rkv-master. It restores each new
/// complete backup from the backup directory incrementally into its own
/// data directory, swaps it in atomically, and serves reads over the Redis
/// protocol with a measured lag.
#[derive(Debug, Parser)]
#[command(name = "rkv-follower", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct FollowerArgs {
    /// The master's backup directory (read only; it may not exist yet), or
    /// s3://BUCKET/PREFIX on an object store: the follower then polls the
    /// store's `latest` object (one request per --poll-interval while
    /// nothing changes) and downloads into DATA/s3-cache.
    #[arg(
        long = "backup-dir",
        visible_alias = "backup_dir",
        env = "RKV_BACKUP_DIR",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub backup_dir: PathBuf,

    /// How to reach an object store.
    #[command(flatten)]
    pub store: StoreArgs,

    /// This follower's own data directory (created if missing).
    #[arg(long, env = "RKV_DATA", value_name = "DIR")]
    pub data: PathBuf,

    /// How often to look for a new backup besides filesystem events
    /// (inotify is silent on NFS: this bounds the lag there).
    #[arg(long = "poll-interval", env = "RKV_POLL_INTERVAL", default_value = "1s", value_parser = daemon::parse_duration)]
    pub poll_interval: Duration,

    /// Cap on how fast a restore copies from the backup directory, in bytes
    /// per second (suffixes KiB, MiB, GiB); 0 is no cap. Keeps a catch-up
    /// from starving readers of disk or network bandwidth.
    #[arg(long = "restore-rate-limit", env = "RKV_RESTORE_RATE_LIMIT", default_value = "0", value_parser = daemon::parse_size, value_name = "BYTES")]
    pub restore_rate_limit: usize,

    /// How many files a restore copies at once: a new follower's first
    /// restore is mostly large files, copied faster side by side.
    #[arg(long = "restore-threads", env = "RKV_RESTORE_THREADS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub restore_threads: u32,

    /// Where to listen: HOST:PORT or unix:/path; repeat for several
    /// (comma-separated in the environment variable); `none` for TLS only
    /// (--tls-listen).
    #[arg(
        long,
        env = "RKV_LISTEN",
        default_value = "127.0.0.1:6381",
        value_delimiter = ',',
        value_parser = ListenAddr::parse_or_none
    )]
    pub listen: Vec<Option<ListenAddr>>,

    /// Data older than this makes the follower unhealthy: older than the
    /// last moment the follower saw evidence (a backup or heartbeat) that it
    /// held the master's whole state, measured on this host's clock so that
    /// skewed clocks cannot hide it. Off by default.
    #[arg(long = "max-staleness", env = "RKV_MAX_STALENESS", value_parser = daemon::parse_duration, value_name = "DURATION")]
    pub max_staleness: Option<Duration>,

    /// What reads get while the data is staler than --max-staleness.
    #[arg(
        long = "stale-reads",
        env = "RKV_STALE_READS",
        value_enum,
        default_value = "serve"
    )]
    pub stale_reads: StaleReads,

    /// Access control, limits and logging.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// A validated follower configuration.
#[derive(Debug)]
pub struct FollowerConfig {
    /// The master's backup store.
    pub backup_dir: BackupLocation,
    /// This follower's data directory.
    pub data: PathBuf,
    /// Poll period.
    pub poll_interval: Duration,
    /// Restore bandwidth cap in bytes per second; 0 is none.
    pub restore_rate_limit: u64,
    /// Files a restore copies at once.
    pub restore_threads: u32,
    /// Staleness bound.
    pub max_staleness: Option<Duration>,
    /// Stale read policy.
    pub stale_reads: StaleReads,
    /// Block cache bytes.
    pub cache_size: usize,
    /// The RESP server.
    pub server: ServerConfig,
}

impl FollowerArgs {
    /// Checks the flags together; the error is a sentence for the operator.
    pub fn validate(self) -> Result<FollowerConfig, ConfigError> {
        let backup_dir = self
            .store
            .location(&self.backup_dir)
            .map_err(ConfigError::Location)?;
        let data = daemon::resolve(&self.data);
        let backups = match &backup_dir {
            BackupLocation::Dir(path) => Some(daemon::resolve(path)),
            BackupLocation::S3(_) => None,
        };
        if let Some(backups) = backups.filter(|b| data.starts_with(b) || b.starts_with(&data)) {
            return Err(ConfigError::Overlap(format!(
                "the data directory {} and the backup directory {} must not contain each other",
                data.display(),
                backups.display()
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::Flag(
                "--poll-interval must be more than 0 (e.g. 1s)".into(),
            ));
        }
        if self.stale_reads == StaleReads::Refuse && self.max_staleness.is_none() {
            return Err(ConfigError::Flag(
                "--stale-reads refuse needs --max-staleness DURATION".into(),
            ));
        }
        let server = self
            .server
            .server_config(self.listen.into_iter().flatten().collect())?;
        Ok(FollowerConfig {
            backup_dir,
            data: self.data,
            poll_interval: self.poll_interval,
            restore_rate_limit: self.restore_rate_limit as u64,
            restore_threads: self.restore_threads,
            max_staleness: self.max_staleness,
            stale_reads: self.stale_reads,
            cache_size: self.server.cache_size,
            server,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        FollowerArgs::command().debug_assert();
    }

    fn parse(extra: &[&str]) -> Result<FollowerConfig, ConfigError> {
        let mut argv = vec![
            "rkv-follower",
            "--backup-dir",
            "/tmp/x/backups",
            "--data",
            "/tmp/x/f1",
        ];
        argv.extend_from_slice(extra);
        FollowerArgs::try_parse_from(argv).unwrap().validate()
    }

    #[test]
    fn defaults_and_bad_combinations() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.stale_reads, StaleReads::Serve);
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:6381".parse::<ListenAddr>().unwrap()]
        );
        assert!(matches!(
            parse(&["--stale-reads", "refuse"]),
            Err(ConfigError::Flag(m)) if m.contains("--max-staleness")
        ));
        assert!(parse(&["--stale-reads", "refuse", "--max-staleness", "30s"]).is_ok());
        assert!(matches!(
            parse(&["--listen", "0.0.0.0:6381"]),
            Err(ConfigError::Unprotected(m)) if m.contains("protected mode")
        ));
        assert!(matches!(
            parse(&["--poll-interval", "0"]),
            Err(ConfigError::Flag(_))
        ));
    }

    #[test]
    fn restore_threads_default_and_range() {
        assert_eq!(parse(&[]).unwrap().restore_threads, 4);
        assert_eq!(
            parse(&["--restore-threads", "1"]).unwrap().restore_threads,
            1
        );
        for bad in ["0", "65", "many"] {
            let argv = [
                "rkv-follower",
                "--backup-dir",
                "b",
                "--data",
                "d",
                "--restore-threads",
                bad,
            ];
            let error = FollowerArgs::try_parse_from(argv).unwrap_err().to_string();
            assert!(error.contains("--restore-threads"), "{bad}: {error}");
        }
    }
}
