//! `rkv-master`'s flags (each also an `RKV_*` environment variable, so a
//! systemd env file needs no parser) and their validation into a
//! [`MasterConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::backup::{BackupLocation, Retention, StoreArgs};
use crate::daemon::{self, ConfigError, ServerArgs};
use crate::server::{ListenAddr, ServerConfig};

use super::lease::LEASE_TERM_FLOOR;

const AFTER_HELP: &str = "\
Every flag can also be set with the environment variable named in brackets.

Example:
  rkv-master --db /var/lib/rkv/master --backup-dir /srv/rkv-backups --interval 5s
  redis-cli -p 6380 SET user:1 Alice

  # Followers on other hosts, through an object store:
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… rkv-master --db /var/lib/rkv/master \
    --backup-dir s3://rkv-backups/prod --s3-endpoint http://10.0.0.5:9000

  # TLS beside the plain loopback listener (clients: redis-cli --tls):
  rkv-master --db /var/lib/rkv/master --backup-dir /srv/rkv-backups \
    --tls-listen 0.0.0.0:6390 --tls-cert-file /etc/rkv/tls/server.crt \
    --tls-key-file /etc/rkv/tls/server.key --password-file /etc/rkv/password

Signals: SIGTERM/SIGINT stop (a final backup is taken if anything changed; a
second signal exits at once), SIGUSR1 backs up now, SIGHUP re-reads the TLS
files.";

/// rkv-master: owns a RocksDB database, serves reads and writes over the
/// Redis protocol, and backs it up incrementally into a backup directory
/// that rkv-follower replicas restore from.
#[derive(Debug, Parser)]
#[command(name = "rkv-master", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct MasterArgs {
    /// The database directory (created if missing).
    #[arg(long, env = "RKV_DB", value_name = "DIR")]
    pub db: PathBuf,

    /// Where followers read backups from: a directory (not inside the
    /// database), or s3://BUCKET/PREFIX on an S3-compatible object store
    /// (backups are then staged in --staging-dir and published from there).
    #[arg(
        long = "backup-dir",
        visible_alias = "backup_dir",
        env = "RKV_BACKUP_DIR",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub backup_dir: PathBuf,

    /// With an s3:// --backup-dir: the local directory where backups are
    /// taken before they are published (it holds about what the retained
    /// backups hold). Default: DB.s3-staging beside the database directory.
    #[arg(long = "staging-dir", env = "RKV_STAGING_DIR", value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,

    /// Run on an object store that ignores conditional writes (If-None-Match,
    /// If-Match), which rkv otherwise refuses: the operator then promises
    /// that only one master ever writes to the prefix, since a second one
    /// would not be fenced off.
    #[arg(long = "accept-unfenced-store", env = "RKV_ACCEPT_UNFENCED_STORE")]
    pub accept_unfenced_store: bool,

    /// How to reach an object store.
    #[command(flatten)]
    pub store: StoreArgs,

    /// How often to back up when the database changed; 0 turns the timer
    /// off (backups then only on BGSAVE, SAVE, SIGUSR1, exit and, with the
    /// log on, --log-backup-ratio). Default: 1h with the log on, where
    /// followers follow the log and backups serve bootstrap, recovery and
    /// restore; 10s with it off, where each backup is what followers see.
    #[arg(long, env = "RKV_INTERVAL", value_parser = daemon::parse_duration)]
    pub interval: Option<Duration>,

    /// With the log on: also back up as soon as the log shipped since the
    /// newest backup holds this many times the database's size (its live
    /// table files; at least 4 MiB of log), and 10s have passed since the
    /// last backup. A new follower's catch-up (a restore, then a replay of
    /// that log) and the store's size then stay in proportion to the
    /// database whatever the write rate. 0: backups on --interval alone.
    #[arg(long = "log-backup-ratio", env = "RKV_LOG_BACKUP_RATIO", default_value_t = DEFAULT_LOG_BACKUP_RATIO, value_parser = parse_ratio)]
    pub log_backup_ratio: f64,

    /// How often to ship the write log (the writes acknowledged since the
    /// last shipment, synced to disk first) to the backup store, where
    /// followers apply it between backups: their lag is about this plus
    /// their own wake-up, not a backup interval. 0 turns the log off
    /// (followers then follow backups alone). Default: 10ms on a directory;
    /// 1s on an object store, where each shipment is a request (PUT) paid
    /// for; lower it for less lag (e.g. 100ms: at most 10 PUTs a second,
    /// and only while there are writes).
    #[arg(long = "log-interval", env = "RKV_LOG_INTERVAL", value_parser = daemon::parse_duration)]
    pub log_interval: Option<Duration>,

    /// How long the database keeps write-ahead log files a flush made
    /// obsolete, while the log ships (whole seconds, at least 1s): a
    /// shipper that stalls (the store unreachable) or a master stopped for
    /// less than this goes on from the log (a stalled shipper also keeps
    /// the last 32 MiB of writes in memory); past both the log jumps ahead
    /// and a backup, taken at once, bridges the jump. Costs the disk the
    /// writes of that long take in the write-ahead log.
    #[arg(long = "keep-log", env = "RKV_KEEP_LOG", default_value = "60s", value_parser = daemon::parse_duration)]
    pub keep_log: Duration,

    /// Keep at least this many of the newest backups (and, with the log
    /// on, the log from the oldest of them on: point-in-time restore
    /// reaches back that far; the log's last --keep-within is kept in any
    /// case, so a follower that far behind goes on from it). Default: 1
    /// with the log on (the newest, from which the log goes on; 2 keeps one
    /// more that the log brings as far, at about twice the store's size
    /// under heavy writes); 20 with it off.
    #[arg(long, env = "RKV_KEEP", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,

    /// Never purge a backup or a log segment younger than this: give the
    /// slowest follower time to finish restoring a backup, and one that
    /// far behind on the log (or stopped that long) the segments it goes
    /// on from; a follower further behind restores the newest backup. At
    /// least 10s (shorter cannot protect a restore); raise it above your
    /// slowest follower's restore time and restarts, or to the window
    /// point-in-time restore should reach back. Default: 10s with the log
    /// on (followers restore only to join it); with it off,
    /// 20 intervals and at least 10s, so the directory holds what the
    /// interval makes in a bounded time, not an hour of backups.
    #[arg(long = "keep-within", env = "RKV_KEEP_WITHIN", value_parser = daemon::parse_duration)]
    pub keep_within: Option<Duration>,

    /// How often to check the next files of the backup directory against
    /// their checksums (at most 256 MiB a time, so a large directory is
    /// covered over several intervals); damaged files are healed by
    /// copying them again. Each scrub also applies retention between
    /// backups, which the log makes rare (on an object store, it uploads
    /// again what the store lost). 0 turns the scrub off.
    #[arg(long = "scrub-interval", env = "RKV_SCRUB_INTERVAL", default_value = "1m", value_parser = daemon::parse_duration)]
    pub scrub_interval: Duration,

    /// Take over a backup directory whose newest backup is of another
    /// database, or whose heartbeat lists this master as superseded by
    /// `rkv promote`, making this database the one followers replicate.
    /// Never overrides a master that is still running there. (`rkv promote`
    /// hands the directory over; its new master needs no --take-over.)
    #[arg(long = "take-over", env = "RKV_TAKE_OVER")]
    pub take_over: bool,

    /// The lease's term: a master that could not renew its heartbeat in the
    /// backup store for this long (cut off from it) answers writes with
    /// -READONLY until it can, and `rkv promote` waits this long after the
    /// heartbeat last changed. So a promotion never drops writes a master
    /// acknowledged while cut off past its term. At least 3s; longer rides
    /// out a slower store, shorter makes promotions quicker.
    #[arg(long = "lease-term", env = "RKV_LEASE_TERM", default_value = "10s", value_parser = daemon::parse_duration)]
    pub lease_term: Duration,

    /// Where to listen: HOST:PORT or unix:/path; repeat for several
    /// (comma-separated in the environment variable); `none` for TLS only
    /// (--tls-listen).
    #[arg(
        long,
        env = "RKV_LISTEN",
        default_value = "127.0.0.1:6380",
        value_delimiter = ',',
        value_parser = ListenAddr::parse_or_none
    )]
    pub listen: Vec<Option<ListenAddr>>,

    /// fsync the write-ahead log before acknowledging each write (slower;
    /// survives power loss, not just a process crash).
    #[arg(long = "sync-writes", env = "RKV_SYNC_WRITES")]
    pub sync_writes: bool,

    /// Take a final backup at shutdown when the database changed.
    #[arg(long = "backup-on-exit", env = "RKV_BACKUP_ON_EXIT", default_value = "yes", value_parser = daemon::parse_yes_no, action = clap::ArgAction::Set, value_name = "yes|no")]
    pub backup_on_exit: bool,

    /// Access control, limits and logging.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The shortest `--keep-within`: a backup must outlive the restore of it
/// that a follower started when it appeared.
pub const KEEP_WITHIN_FLOOR: Duration = Duration::from_secs(10);

/// A validated master configuration.
#[derive(Debug)]
pub struct MasterConfig {
    /// The database directory.
    pub db: PathBuf,
    /// The backup store.
    pub backup_dir: BackupLocation,
    /// With an object store: where backups are staged.
    pub staging_dir: PathBuf,
    /// Run on an object store that cannot fence.
    pub accept_unfenced_store: bool,
    /// Backup timer; zero is off.
    pub interval: Duration,
    /// With the log on: back up once the log since the newest backup holds
    /// this many times the database's live size; zero is off.
    pub log_backup_ratio: f64,
    /// How often the write log ships; `None` when it is off.
    pub log_interval: Option<Duration>,
    /// How long obsolete write-ahead log files are kept while it ships.
    pub keep_log: Duration,
    /// What to keep.
    pub retention: Retention,
    /// Scrub timer; zero is off.
    pub scrub_interval: Duration,
    /// Take over a directory of another database's backups.
    pub take_over: bool,
    /// The lease's term.
    pub lease_term: Duration,
    /// fsync every write.
    pub sync_writes: bool,
    /// Final backup at exit.
    pub backup_on_exit: bool,
    /// Block cache bytes.
    pub cache_size: usize,
    /// The RESP server.
    pub server: ServerConfig,
}

/// `--log-interval` on a directory when not given: a segment costs two
/// fsyncs (the write-ahead log's and its own), and only when there were
/// writes.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_millis(10);

/// `--log-interval` on an object store when not given: a segment costs a
/// PUT request (and a follower's GET), so at most one a second.
pub const DEFAULT_OBJECT_STORE_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// `--interval` when not given and the log is off: each backup is what
/// followers see.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// `--interval` when not given and the log is on: backups serve bootstrap,
/// recovery and restore, and `--log-backup-ratio` takes one sooner when the
/// log grows large next to the database.
pub const DEFAULT_LOG_ON_INTERVAL: Duration = Duration::from_secs(3600);

/// `--log-backup-ratio` when not given: the log since the newest backup
/// stays under half the database, so a new follower replays at most that.
pub const DEFAULT_LOG_BACKUP_RATIO: f64 = 0.5;

/// `--keep` when not given, with the log off and on.
pub const DEFAULT_KEEP: u32 = 20;
/// See [`DEFAULT_KEEP`].
pub const DEFAULT_LOG_ON_KEEP: u32 = 1;

/// `--keep-within` when not given and the log is off: 20 intervals, at
/// least the floor. With the log on, the floor.
pub fn default_keep_within(interval: Duration) -> Duration {
    (interval * 20).max(KEEP_WITHIN_FLOOR)
}

/// A ratio: a finite number, not negative.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio >= 0.0 => Ok(ratio),
        _ => Err(format!(
            "`{text}` is not a ratio: give a number such as 0.5 (0 turns it off)"
        )),
    }
}

impl MasterArgs {
    /// Checks the flags together; the error is a sentence for the operator.
    pub fn validate(self) -> Result<MasterConfig, ConfigError> {
        let backup_dir = self
            .store
            .location(&self.backup_dir)
            .map_err(ConfigError::Location)?;
        let db = daemon::resolve(&self.db);
        let staging_dir = self.staging_dir.clone().unwrap_or_else(|| {
            let mut name = db.file_name().unwrap_or_default().to_os_string();
            name.push(".s3-staging");
            db.with_file_name(name)
        });
        let (what, local) = match &backup_dir {
            BackupLocation::Dir(path) => ("backup directory", daemon::resolve(path)),
            BackupLocation::S3(_) => ("staging directory", daemon::resolve(&staging_dir)),
        };
        if local.starts_with(&db) {
            return Err(ConfigError::Overlap(format!(
                "the {what} {} is inside the database directory {}: backups must live \
                 apart from the database (RocksDB owns every file in its directory). Choose a \
                 --{} outside it",
                local.display(),
                db.display(),
                if what == "backup directory" {
                    "backup-dir"
                } else {
                    "staging-dir"
                }
            )));
        }
        if db.starts_with(&local) {
            return Err(ConfigError::Overlap(format!(
                "the database directory {} is inside the {what} {}: the {what} \
                 holds only backups. Choose a --db outside it",
                db.display(),
                local.display()
            )));
        }
        let log_interval = match (self.log_interval, &backup_dir) {
            (Some(interval), _) => Some(interval).filter(|i| !i.is_zero()),
            (None, BackupLocation::Dir(_)) => Some(DEFAULT_LOG_INTERVAL),
            (None, BackupLocation::S3(_)) => Some(DEFAULT_OBJECT_STORE_LOG_INTERVAL),
        };
        let log_on = log_interval.is_some();
        let interval = self.interval.unwrap_or(if log_on {
            DEFAULT_LOG_ON_INTERVAL
        } else {
            DEFAULT_INTERVAL
        });
        let keep = self.keep.unwrap_or(if log_on {
            DEFAULT_LOG_ON_KEEP
        } else {
            DEFAULT_KEEP
        });
        let keep_within = self.keep_within.unwrap_or_else(|| {
            if log_on {
                KEEP_WITHIN_FLOOR
            } else {
                default_keep_within(interval)
            }
        });
        if keep_within < KEEP_WITHIN_FLOOR {
            return Err(ConfigError::Flag(format!(
                "--keep-within {} is too short to protect a follower's restore from the purge; \
                 it must be at least {} (raise it above your slowest follower's restore time)",
                humantime::format_duration(keep_within),
                humantime::format_duration(KEEP_WITHIN_FLOOR)
            )));
        }
        if self.lease_term < LEASE_TERM_FLOOR {
            return Err(ConfigError::Flag(format!(
                "--lease-term {} is too short: one slow heartbeat would stop writes; it must be \
                 at least {}",
                humantime::format_duration(self.lease_term),
                humantime::format_duration(LEASE_TERM_FLOOR)
            )));
        }
        if self.keep_log < Duration::from_secs(1) {
            return Err(ConfigError::Flag(format!(
                "--keep-log {} is too short: RocksDB keeps write-ahead log files for whole \
                 seconds; give at least 1s",
                humantime::format_duration(self.keep_log)
            )));
        }
        let server = self
            .server
            .server_config(self.listen.into_iter().flatten().collect())?;
        Ok(MasterConfig {
            log_interval,
            keep_log: self.keep_log,
            db: self.db,
            backup_dir,
            staging_dir,
            accept_unfenced_store: self.accept_unfenced_store,
            interval,
            log_backup_ratio: self.log_backup_ratio,
            scrub_interval: self.scrub_interval,
            take_over: self.take_over,
            lease_term: self.lease_term,
            retention: Retention {
                keep: keep as usize,
                keep_within,
            },
            sync_writes: self.sync_writes,
            backup_on_exit: self.backup_on_exit,
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
        MasterArgs::command().debug_assert();
    }

    fn args(extra: &[&str]) -> MasterArgs {
        let mut argv = vec![
            "rkv-master",
            "--db",
            "/tmp/x/db",
            "--backup-dir",
            "/tmp/x/backups",
        ];
        argv.extend_from_slice(extra);
        MasterArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_are_sane() {
        // The log on (a directory's default): backups are rare, and taken
        // sooner when the log outgrows half the database.
        let config = args(&[]).validate().unwrap();
        assert_eq!(config.interval, Duration::from_secs(3600));
        assert_eq!(config.log_backup_ratio, 0.5);
        assert_eq!(config.retention.keep, 1);
        assert_eq!(config.retention.keep_within, KEEP_WITHIN_FLOOR);
        assert_eq!(config.log_interval, Some(DEFAULT_LOG_INTERVAL));
        // The log off: every backup is what followers see.
        let config = args(&["--log-interval", "0"]).validate().unwrap();
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.retention.keep, 20);
        assert_eq!(config.retention.keep_within, Duration::from_secs(200));
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:6380".parse::<ListenAddr>().unwrap()]
        );
        assert!(config.backup_on_exit && !config.sync_writes);
        assert_eq!(config.lease_term, Duration::from_secs(10));
    }

    #[test]
    fn the_log_ships_on_both_stores_unless_turned_off() {
        let log = |extra: &[&str]| args(extra).validate().unwrap().log_interval;
        assert_eq!(
            log(&["--log-interval", "5ms"]),
            Some(Duration::from_millis(5))
        );
        assert_eq!(log(&["--log-interval", "0"]), None);
        assert_eq!(
            args(&[]).validate().unwrap().keep_log,
            Duration::from_secs(60)
        );
        let short = args(&["--keep-log", "500ms"]).validate().unwrap_err();
        assert!(short.to_string().contains("--keep-log"), "{short}");
        let s3 = MasterArgs::try_parse_from([
            "rkv-master",
            "--db",
            "/tmp/x/db",
            "--backup-dir",
            "s3://bucket/prefix",
        ])
        .unwrap();
        assert_eq!(
            s3.validate().unwrap().log_interval,
            Some(DEFAULT_OBJECT_STORE_LOG_INTERVAL)
        );
    }

    #[test]
    fn rejects_bad_combinations() {
        let inside = MasterArgs::try_parse_from([
            "rkv-master",
            "--db",
            "/tmp/x/db",
            "--backup-dir",
            "/tmp/x/db/backups",
        ])
        .unwrap();
        assert!(matches!(
            inside.validate(),
            Err(ConfigError::Overlap(m)) if m.contains("inside the database directory")
        ));
        let same =
            MasterArgs::try_parse_from(["rkv-master", "--db", "/tmp/x", "--backup-dir", "/tmp/x"])
                .unwrap();
        assert!(matches!(same.validate(), Err(ConfigError::Overlap(_))));
        assert!(matches!(
            args(&["--listen", "0.0.0.0:6380"]).validate(),
            Err(ConfigError::Unprotected(m)) if m.contains("protected mode")
        ));
        assert!(
            args(&["--listen", "0.0.0.0:6380", "--protected-mode", "no"])
                .validate()
                .is_ok()
        );
        assert!(args(&["--listen", "0.0.0.0:6380", "--requirepass", "pw"])
            .validate()
            .is_ok());
        // A TLS listener beyond loopback: protected by required client
        // certificates, not by optional ones.
        let dir = tempfile::tempdir().unwrap();
        let pki = rkv_testkit::tls::Pki::new(dir.path());
        let files = pki.daemon_flags(true);
        let tls = |auth: &str| {
            let mut flags = vec!["--listen", "none", "--tls-listen", "0.0.0.0:6390"];
            flags.extend(files.iter().map(String::as_str));
            flags.extend(["--tls-auth-clients", auth]);
            args(&flags).validate()
        };
        let config = tls("yes").unwrap();
        assert!(config.server.listen.is_empty());
        assert!(matches!(tls("optional"), Err(ConfigError::Unprotected(_))));
        assert!(matches!(
            args(&["--password-file", "/nonexistent/pw"]).validate(),
            Err(ConfigError::Password(m)) if m.contains("cannot read")
        ));
        assert!(MasterArgs::try_parse_from([
            "rkv-master",
            "--db",
            "d",
            "--backup-dir",
            "b",
            "--interval",
            "soon"
        ])
        .is_err());
        assert!(MasterArgs::try_parse_from([
            "rkv-master",
            "--db",
            "d",
            "--backup-dir",
            "b",
            "--keep",
            "0"
        ])
        .is_err());
        // Retention too short to protect a restore is refused, with the floor.
        let short = args(&["--keep-within", "0"]).validate().unwrap_err();
        assert!(
            matches!(&short, ConfigError::Flag(m) if m.contains("at least 10s")),
            "{short}"
        );
        assert!(args(&["--keep-within", "10s"]).validate().is_ok());
        let term = args(&["--lease-term", "1s"]).validate().unwrap_err();
        assert!(
            matches!(&term, ConfigError::Flag(m) if m.contains("at least 3s")),
            "{term}"
        );
    }

    #[test]
    fn a_ratio_is_a_number_not_below_zero() {
        assert_eq!(args(&["--log-backup-ratio", "0"]).log_backup_ratio, 0.0);
        assert_eq!(args(&["--log-backup-ratio", "2.5"]).log_backup_ratio, 2.5);
        for bad in ["-1", "NaN", "inf", "half"] {
            let flag = format!("--log-backup-ratio={bad}");
            let argv = ["rkv-master", "--db", "d", "--backup-dir", "b", &flag];
            let error = MasterArgs::try_parse_from(argv).unwrap_err().to_string();
            assert!(error.contains("is not a ratio"), "{bad}: {error}");
        }
    }

    #[test]
    fn retention_follows_the_interval_unless_given() {
        let keep_within = |extra: &[&str]| {
            let mut extra = extra.to_vec();
            extra.extend(["--log-interval", "0"]);
            args(&extra).validate().unwrap().retention.keep_within
        };
        // Short intervals keep the floor, long ones 20 intervals.
        assert_eq!(keep_within(&["--interval", "100ms"]), KEEP_WITHIN_FLOOR);
        assert_eq!(keep_within(&["--interval", "1s"]), Duration::from_secs(20));
        assert_eq!(
            keep_within(&["--interval", "1m"]),
            Duration::from_secs(1200)
        );
        // Timer off: backups only on request; the floor still protects.
        assert_eq!(keep_within(&["--interval", "0"]), KEEP_WITHIN_FLOOR);
        assert_eq!(
            keep_within(&["--interval", "100ms", "--keep-within", "1h"]),
            Duration::from_secs(3600)
        );
    }
}
