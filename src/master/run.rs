//! The master daemon's lifecycle: open the database, claim the backup
//! directory, listen, announce, serve and back up until SIGTERM, then shut
//! down with a final backup.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::config::{MasterArgs, MasterConfig};
use super::{Master, StepOutcome};
use crate::backup::{BackupDir, BackupLocation, BackupSink, S3Publisher};
use crate::daemon::{self, DaemonFile, Notifier};
use crate::db::BlockCache;
use crate::server::Server;
use crate::stop::Stop;

/// `rkv-master`'s entry point: returns the exit code (0 clean stop, 1 failure,
/// 2 bad configuration).
pub fn main() -> std::process::ExitCode {
    let args = MasterArgs::parse();
    let log_format = args.server.log_format;
    let umask = args.server.umask;
    daemon::daemon_main("rkv-master", log_format, umask, args.validate(), run)
}

/// Opens the database with its backup store.
fn open(
    config: &MasterConfig,
    cache: &BlockCache,
    store: impl BackupSink + 'static,
) -> anyhow::Result<Master> {
    Master::open(
        &config.db,
        store,
        config.retention,
        config.sync_writes,
        Some(cache),
        config.log_interval.map(|_| config.keep_log),
    )
    .with_context(|| format!("open the database at {}", config.db.display()))
}

/// Runs the master until SIGTERM/SIGINT.
pub fn run(config: MasterConfig) -> anyhow::Result<()> {
    let signals = daemon::watch_signals().context("install signal handlers")?;
    let cache = BlockCache::new(config.cache_size);
    let master = match &config.backup_dir {
        BackupLocation::Dir(path) => open(&config, &cache, BackupDir::new(path))?,
        BackupLocation::S3(s3) => {
            let staging = BackupDir::new(&config.staging_dir);
            let store = S3Publisher::open((**s3).clone(), staging, config.accept_unfenced_store)
                .with_context(|| format!("open the object store {}", s3.url()))?;
            open(&config, &cache, store)?
        }
    };
    master.claim(config.take_over, config.lease_term)?;
    let master = Arc::new(master);
    // Before the server: the loop decides what the start-up backup holds.
    let stop = Stop::new();
    let backup_loop = master.start_loop(config.interval, config.scrub_interval, &stop);
    let log_thread = match config.log_interval {
        Some(interval) => master
            .start_log(interval, config.log_backup_ratio, &stop)
            .context("start shipping the write log")?,
        None => {
            master
                .remove_log()
                .context("remove the store's write log")?;
            None
        }
    };
    let server = match Server::start(config.server.clone(), Arc::clone(&master) as _) {
        Ok(server) => server,
        Err(e) => {
            stop.stop();
            let _ = backup_loop.join();
            return Err(anyhow::Error::from(e).context("start the server"));
        }
    };
    let addrs = daemon::announce(&config.db, "master", &server);
    // Not joined at exit: a heartbeat stuck on a stalled filesystem must not
    // hold up the shutdown.
    let _heartbeat = master.start_heartbeat(&stop);
    tracing::info!(
        "rkv-master serving {} on {}; backups to {} every {}",
        config.db.display(),
        addrs.join(", "),
        config.backup_dir,
        if config.interval.is_zero() {
            "request only".to_string()
        } else {
            humantime::format_duration(config.interval).to_string()
        }
    );
    let notifier = Notifier::from_env();
    notifier.ready(&master.status_line());

    daemon::serve_until_terminated(
        &signals,
        &notifier,
        || {
            tracing::info!("SIGUSR1: backing up now");
            master.schedule_backup();
        },
        || daemon::reload(&server),
        || {},
        || master.status_line(),
    );

    tracing::info!("shutting down: no new clients; finishing requests in flight");
    notifier.stopping();
    server.shutdown(Duration::from_secs(10));
    stop.stop();
    let _ = backup_loop.join();
    if let Some(log_thread) = log_thread {
        let _ = log_thread.join();
    }
    let mut result = Ok(());
    if config.backup_on_exit {
        match master.backup_step() {
            StepOutcome::Unchanged => {
                tracing::info!("no changes since the last backup; no final backup")
            }
            StepOutcome::Created(stats) => tracing::info!("final backup {} taken", stats.info.id),
            StepOutcome::Failed(e) => {
                result = Err(anyhow::Error::new(e).context("the final backup failed"))
            }
        }
    }
    DaemonFile::remove(&config.db);
    tracing::info!("stopped");
    result
}
