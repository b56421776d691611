//! `rkv-follower`'s flags (each also an `RKV_*` environment variable), their
//! validation, and the daemon's lifecycle: lock the data directory, serve
//! `current` at once, then watch and poll the backup directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use super::{Follower, PollOutcome};
use crate::backup::BackupDir;
use crate::daemon::{self, DaemonFile, Notifier, ServerArgs};
use crate::db::BlockCache;
use crate::server::{ListenAddr, Server, ServerConfig};

use super::generations::DataDir;

const AFTER_HELP: &str = "\
Every flag can also be set with the environment variable named in brackets.

Example:
  rkv-follower --backup-dir /srv/rkv-backups --data /var/lib/rkv/follower-eu1 --listen 127.0.0.1:6381
  redis-cli -p 6381 GET user:1
  redis-cli -p 6381 INFO replication";

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
    /// The master's backup directory (read only; it may not exist yet).
    #[arg(
        long = "backup-dir",
        visible_alias = "backup_dir",
        env = "RKV_BACKUP_DIR",
        value_name = "DIR"
    )]
    pub backup_dir: PathBuf,

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

    /// Where to listen: HOST:PORT or unix:/path; repeat for several
    /// (comma-separated in the environment variable).
    #[arg(
        long,
        env = "RKV_LISTEN",
        default_value = "127.0.0.1:6381",
        value_delimiter = ','
    )]
    pub listen: Vec<ListenAddr>,

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
    pub backup_dir: PathBuf,
    /// This follower's data directory.
    pub data: PathBuf,
    /// Poll period.
    pub poll_interval: Duration,
    /// Restore bandwidth cap in bytes per second; 0 is none.
    pub restore_rate_limit: u64,
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
    pub fn validate(self) -> Result<FollowerConfig, String> {
        let (data, backups) = (
            daemon::resolve(&self.data),
            daemon::resolve(&self.backup_dir),
        );
        if data.starts_with(&backups) || backups.starts_with(&data) {
            return Err(format!(
                "the data directory {} and the backup directory {} must not contain each other",
                data.display(),
                backups.display()
            ));
        }
        if self.poll_interval.is_zero() {
            return Err("--poll-interval must be more than 0 (e.g. 1s)".to_string());
        }
        if self.stale_reads == StaleReads::Refuse && self.max_staleness.is_none() {
            return Err("--stale-reads refuse needs --max-staleness DURATION".to_string());
        }
        let server = self.server.server_config(self.listen)?;
        Ok(FollowerConfig {
            backup_dir: self.backup_dir,
            data: self.data,
            poll_interval: self.poll_interval,
            restore_rate_limit: self.restore_rate_limit as u64,
            max_staleness: self.max_staleness,
            stale_reads: self.stale_reads,
            cache_size: self.server.cache_size,
            server,
        })
    }
}

/// `rkv-follower`'s entry point: returns the exit code (0 clean stop, 1
/// failure, 2 bad configuration).
pub fn main() -> i32 {
    let args = FollowerArgs::parse();
    let log_format = args.server.log_format;
    let umask = args.server.umask;
    daemon::daemon_main("rkv-follower", log_format, umask, args.validate(), run)
}

/// Runs the follower until SIGTERM/SIGINT.
pub fn run(config: FollowerConfig) -> anyhow::Result<()> {
    let signals = daemon::watch_signals().context("install signal handlers")?;
    let data = DataDir::lock(&config.data)?;
    let store =
        BackupDir::new(&config.backup_dir).with_restore_rate_limit(config.restore_rate_limit);
    let cache = BlockCache::new(config.cache_size);
    let follower = Follower::open(
        store,
        data,
        config.max_staleness,
        config.stale_reads,
        Some(cache),
    )
    .with_context(|| format!("open the data directory {}", config.data.display()))?;
    let follower = Arc::new(follower);
    let server = Server::start(config.server.clone(), Arc::clone(&follower) as _)
        .context("start the server")?;
    let addrs = daemon::announce(&config.data, "follower", &server);
    tracing::info!(
        "rkv-follower serving {} on {}; following {}",
        config.data.display(),
        addrs.join(", "),
        config.backup_dir.display()
    );
    // Ready before catching up: the current generation is served already.
    let notifier = Notifier::from_env();
    notifier.ready(&follower.status_line());

    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let mut watcher = MetaWatcher::new(&config.backup_dir, wake_tx);
    let worker = {
        let follower = Arc::clone(&follower);
        let poll_interval = config.poll_interval;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("rkv-apply".into())
            .spawn(move || apply_loop(&follower, poll_interval, &wake_rx, &stop_rx))
            .context("start the apply thread")?;
        (handle, stop_tx)
    };

    daemon::serve_until_terminated(
        &signals,
        &notifier,
        || tracing::info!("SIGUSR1: nothing to do on a follower"),
        || watcher.ensure(),
        || follower.status_line(),
    );

    tracing::info!("shutting down: no new clients; finishing requests in flight");
    notifier.stopping();
    server.shutdown(Duration::from_secs(10));
    let (handle, stop_tx) = worker;
    drop(stop_tx);
    watcher.wake();
    let _ = handle.join();
    DaemonFile::remove(&config.data);
    tracing::info!("stopped");
    Ok(())
}

/// Polls on every filesystem event and at least every `poll_interval`,
/// until `stop` closes. A failed backup is retried with its own backoff.
fn apply_loop(
    follower: &Follower,
    poll_interval: Duration,
    wake: &mpsc::Receiver<()>,
    stop: &mpsc::Receiver<()>,
) {
    loop {
        if !matches!(stop.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            return;
        }
        if let PollOutcome::Applied(_) = follower.poll() {
            // A newer backup may have landed during the apply.
            continue;
        }
        let deadline = Instant::now() + poll_interval;
        // Events come in bursts (a backup writes many files): drain them.
        match wake.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => while wake.try_recv().is_ok() {},
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(poll_interval),
        }
        follower.release_retired();
    }
}

/// A filesystem watch on the backup directory's `meta/`, where a complete
/// backup appears as a renamed file, and on the directory itself, where the
/// master's heartbeat is renamed into place every second. Set up once
/// `meta/` exists.
struct MetaWatcher {
    backup_dir: PathBuf,
    wake: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
}

/// Whether a filesystem event can mean a new backup or heartbeat: a file
/// created or renamed. Opens and reads are not: the follower's own listing
/// of `meta/` is one, and waking on it would make an idle follower poll
/// itself in a loop.
fn is_news(event: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    )
}

impl MetaWatcher {
    fn new(backup_dir: &Path, wake: mpsc::Sender<()>) -> MetaWatcher {
        let mut watcher = MetaWatcher {
            backup_dir: backup_dir.to_path_buf(),
            wake,
            watcher: None,
        };
        watcher.ensure();
        watcher
    }

    /// Starts watching if `meta/` exists and no watch is on yet.
    fn ensure(&mut self) {
        use notify::Watcher;
        let meta = self.backup_dir.join("meta");
        if self.watcher.is_some() || !meta.is_dir() {
            return;
        }
        let wake = self.wake.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| is_news(&e)) {
                let _ = wake.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, "no filesystem watcher; relying on polling");
                return;
            }
        };
        for dir in [&meta, &self.backup_dir] {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, "cannot watch {}; relying on polling", dir.display());
                return;
            }
        }
        tracing::debug!("watching {}", meta.display());
        self.watcher = Some(watcher);
    }

    fn wake(&self) {
        let _ = self.wake.send(());
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

    #[test]
    fn only_creates_and_renames_wake_the_follower() {
        use notify::event::{AccessKind, CreateKind, EventKind, ModifyKind, RenameMode};
        let event = |kind| notify::Event::new(kind);
        assert!(is_news(&event(EventKind::Create(CreateKind::File))));
        assert!(is_news(&event(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        // The follower's own listing of meta/ must not wake it.
        assert!(!is_news(&event(EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        )))));
        assert!(!is_news(&event(EventKind::Access(AccessKind::Close(
            notify::event::AccessMode::Read
        )))));
    }

    fn parse(extra: &[&str]) -> Result<FollowerConfig, String> {
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
        assert!(parse(&["--stale-reads", "refuse"])
            .unwrap_err()
            .contains("--max-staleness"));
        assert!(parse(&["--stale-reads", "refuse", "--max-staleness", "30s"]).is_ok());
        assert!(parse(&["--listen", "0.0.0.0:6381"])
            .unwrap_err()
            .contains("protected mode"));
        assert!(parse(&["--poll-interval", "0"]).is_err());
    }
}
