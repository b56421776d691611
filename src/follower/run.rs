//! The follower daemon's lifecycle: lock the data directory, serve
//! `current` at once, then apply new backups as the watch or the poll timer
//! finds them, until SIGTERM.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use super::config::{FollowerArgs, FollowerConfig};
use super::generations::DataDir;
use super::watch::{MetaWatcher, Wake};
use super::{Follower, PollOutcome};
use crate::backoff::Backoff;
use crate::backup::{BackupDir, BackupLocation, BackupSource, S3Reader};
use crate::daemon::{self, DaemonFile, Notifier};
use crate::db::BlockCache;
use crate::server::Server;
use crate::stop::Stop;

/// Where a follower of an object store keeps the backup it downloads,
/// inside its data directory.
pub const S3_CACHE: &str = "s3-cache";

/// `rkv-follower`'s entry point: returns the exit code (0 clean stop, 1
/// failure, 2 bad configuration).
pub fn main() -> std::process::ExitCode {
    let args = FollowerArgs::parse();
    let log_format = args.server.log_format;
    let umask = args.server.umask;
    daemon::daemon_main("rkv-follower", log_format, umask, args.validate(), run)
}

/// Opens the data directory with its backup store.
fn open(
    config: &FollowerConfig,
    data: DataDir,
    store: impl BackupSource + 'static,
) -> anyhow::Result<Follower> {
    let follower = Follower::open(
        store,
        data,
        config.max_staleness,
        config.stale_reads,
        Some(BlockCache::new(config.cache_size)),
    )
    .with_context(|| format!("open the data directory {}", config.data.display()))?;
    // A poll that has waited on the store for three intervals (at least a
    // few seconds) is a down link, said at once, not after the request's
    // own timeout.
    let timeout = (config.poll_interval * 3).max(Duration::from_secs(3));
    Ok(follower.with_link_timeout(timeout))
}

/// Runs the follower until SIGTERM/SIGINT.
pub fn run(config: FollowerConfig) -> anyhow::Result<()> {
    let signals = daemon::watch_signals().context("install signal handlers")?;
    let data = DataDir::lock(&config.data)?;
    let local = |path: &std::path::Path| {
        BackupDir::new(path)
            .with_restore_rate_limit(config.restore_rate_limit)
            .with_copy_threads(config.restore_threads)
    };
    let follower = match &config.backup_dir {
        BackupLocation::Dir(path) => open(&config, data, local(path))?,
        BackupLocation::S3(s3) => {
            let store = S3Reader::new((**s3).clone(), local(&config.data.join(S3_CACHE)))
                .with_context(|| format!("open the object store {}", s3.url()))?;
            open(&config, data, store)?
        }
    };
    let follower = Arc::new(follower);
    let server = Server::start(config.server.clone(), Arc::clone(&follower) as _)
        .context("start the server")?;
    let addrs = daemon::announce(&config.data, "follower", &server);
    tracing::info!(
        "rkv-follower serving {} on {}; following {}",
        config.data.display(),
        addrs.join(", "),
        config.backup_dir
    );
    // Ready before catching up: the current generation is served already.
    let notifier = Notifier::from_env();
    notifier.ready(&follower.status_line());

    let (wake_tx, wake_rx) = mpsc::channel::<Wake>();
    let stop = Stop::new();
    {
        let wake_tx = wake_tx.clone();
        stop.on_stop(move || {
            let _ = wake_tx.send(Wake::Store);
        });
    }
    let mut watcher = MetaWatcher::new(follower.watch_paths(), wake_tx);
    let apply = {
        let follower = Arc::clone(&follower);
        let poll_interval = config.poll_interval;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("rkv-apply".into())
            .spawn(move || apply_loop(&follower, poll_interval, &wake_rx, &mut watcher, &stop))
            .context("start the apply thread")?
    };

    daemon::serve_until_terminated(
        &signals,
        &notifier,
        || tracing::info!("SIGUSR1: nothing to do on a follower"),
        || daemon::reload(&server),
        || {},
        || follower.status_line(),
    );

    tracing::info!("shutting down: no new clients; finishing requests in flight");
    notifier.stopping();
    server.shutdown(Duration::from_secs(10));
    stop.stop();
    let _ = apply.join();
    DaemonFile::remove(&config.data);
    tracing::info!("stopped");
    Ok(())
}

/// Polls on every filesystem event and at least every `poll_interval`,
/// until `stop` (which wakes it through `wake`). An event that is only log
/// segments steps the log alone (see [`Follower::step_log`]), leaving the
/// heartbeat and the backups to the next poll, at most `poll_interval` on
/// (the heartbeat's own event, every second, brings one sooner): with many
/// followers on one host, each segment costs each of them a third fewer
/// system calls. After each poll the
/// `watcher` takes up the store's directories that appeared since (the
/// log's, created with the first segment, whose creation wakes it): a
/// directory found only by a timer would leave the first second of the log
/// to polling. A failed backup is
/// retried with its own backoff; a store that fails (503 SlowDown,
/// unreachable) is asked again after a
/// wait that grows with each failure in a row, up to eight intervals (at
/// most 30 s), so a struggling store is not asked harder.
fn apply_loop(
    follower: &Follower,
    poll_interval: Duration,
    wake: &mpsc::Receiver<Wake>,
    watcher: &mut MetaWatcher,
    stop: &Stop,
) {
    let cap = (poll_interval * 8).min(Duration::from_secs(30));
    let mut backoff = Backoff::new(poll_interval, cap);
    // When the next poll is due, and whether the last wake was segments
    // alone.
    let mut poll_due = Instant::now();
    let mut log_only = false;
    while !stop.is_stopped() {
        let wait = if log_only && Instant::now() < poll_due && follower.step_log() {
            poll_due.saturating_duration_since(Instant::now())
        } else {
            let wait = match follower.poll() {
                // A newer backup may have landed during the apply.
                PollOutcome::Applied(_) => {
                    backoff.succeeded();
                    continue;
                }
                // The store failing, or this host's disk: asked again later.
                PollOutcome::Failed(e) if matches!(e.kind(), "store" | "io") => backoff.failed(),
                PollOutcome::Failed(_) => {
                    backoff.succeeded();
                    poll_interval
                }
                PollOutcome::UpToDate | PollOutcome::Waiting(_) => {
                    backoff.succeeded();
                    poll_interval
                }
            };
            poll_due = Instant::now() + wait;
            watcher.ensure();
            wait
        };
        match wake.recv_timeout(wait) {
            Ok(first) => log_only = drain(wake, first),
            Err(mpsc::RecvTimeoutError::Timeout) => log_only = false,
            // The stop holds a sender: not before the stop.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        follower.release_retired();
    }
}

/// Takes the wakes queued behind `first` (events come in bursts: a backup
/// writes many files); whether all were log segments.
fn drain(wake: &mpsc::Receiver<Wake>, first: Wake) -> bool {
    let mut log_only = first == Wake::Log;
    while let Ok(next) = wake.try_recv() {
        log_only &= next == Wake::Log;
    }
    log_only
}
