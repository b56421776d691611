//! Server commands: INFO, ROLE, LASTSAVE, BGSAVE and SAVE, from what the
//! daemon reports in its own terms.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{refusal_reply, Ctx};
use crate::resp::Reply;
use crate::server::{BackupRequest, Role, Shared};
use crate::status::DaemonStatus;

pub(super) fn role(ctx: &mut Ctx<'_, '_>) -> Reply {
    role_reply(ctx.shared.backend.role())
}

/// `CONFIG GET pattern [pattern ...]`: the few parameters tools ask for,
/// as rkv has them. rkv is configured by flags and the environment, so
/// `CONFIG SET` is an error.
pub(super) fn config(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (args, shared) = (ctx.args, ctx.shared);
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
    match sub.as_str() {
        "GET" if args.len() >= 3 => {
            let port = tcp_port(shared).to_string();
            let limits = shared.config.limits;
            let parameters = [
                ("appendonly", "no".to_string()),
                ("databases", "1".into()),
                ("maxclients", shared.config.max_clients.to_string()),
                ("maxmemory", "0".into()),
                ("maxmemory-policy", "noeviction".into()),
                ("port", port),
                ("proto-max-bulk-len", limits.max_request_bytes.to_string()),
                ("save", String::new()),
                ("timeout", "0".into()),
            ];
            let pairs = parameters
                .into_iter()
                .filter(|(name, _)| {
                    args[2..]
                        .iter()
                        .any(|p| crate::glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
                })
                .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                .collect();
            Reply::Map(pairs)
        }
        "SET" => Reply::error(
            "ERR CONFIG SET is not supported: rkv is configured by its command-line flags and \
             environment (see rkv-master --help)",
        ),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

pub(super) fn lastsave(ctx: &mut Ctx<'_, '_>) -> Reply {
    Reply::Integer(ctx.shared.backend.lastsave())
}

pub(super) fn bgsave(ctx: &mut Ctx<'_, '_>) -> Reply {
    match ctx.shared.backend.request_backup() {
        Ok(BackupRequest::Started) => Reply::Simple("Background saving started".into()),
        Ok(BackupRequest::Scheduled) => Reply::Simple("Background saving scheduled".into()),
        Err(refusal) => refusal_reply(refusal),
    }
}

pub(super) fn save(ctx: &mut Ctx<'_, '_>) -> Reply {
    match ctx.shared.backend.backup_now() {
        Ok(()) => Reply::ok(),
        Err(refusal) => refusal_reply(refusal),
    }
}

/// `ROLE`'s reply, as Redis shapes it for a master and for a replica.
fn role_reply(role: Role) -> Reply {
    match role {
        Role::Master => Reply::array(vec![
            Reply::bulk("master"),
            Reply::Integer(0),
            Reply::array(Vec::new()),
        ]),
        Role::Replica {
            master_host,
            connected,
            offset,
        } => Reply::array(vec![
            Reply::bulk("slave"),
            Reply::bulk(master_host),
            Reply::Integer(0),
            Reply::bulk(if connected { "connected" } else { "connecting" }),
            Reply::Integer(offset as i64),
        ]),
    }
}

pub(super) fn info(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (args, shared) = (ctx.args, ctx.shared);
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut sections = common_info(shared);
    sections.extend(status_sections(shared.backend.status()));
    // As in Redis, a database with no keys has no line (RocksDB's counts
    // are estimates, exact after compaction).
    let keyspace = shared.backend.served().and_then(|db| {
        let keys = db.estimate_num_keys().unwrap_or(0);
        let expires = db.estimate_expiring_keys();
        (keys > 0).then(|| {
            (
                "db0".into(),
                format!("keys={keys},expires={expires},avg_ttl=0"),
            )
        })
    });
    sections.push(("keyspace", keyspace.into_iter().collect()));
    let mut text = String::new();
    for (name, fields) in sections {
        if !all && !wanted.iter().any(|w| w == name) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut title = name.to_string();
        title[..1].make_ascii_uppercase();
        text.push_str(&format!("# {title}\r\n"));
        for (field, value) in fields {
            text.push_str(&format!("{field}:{value}\r\n"));
        }
    }
    Reply::Verbatim(text.into_bytes())
}

/// The first TCP port the server listens on (0: only Unix sockets).
fn tcp_port(shared: &Shared) -> u16 {
    shared
        .config
        .listen
        .iter()
        .find_map(|a| match a {
            crate::server::ListenAddr::Tcp(s) => Some(s.port()),
            crate::server::ListenAddr::Unix(_) => None,
        })
        .unwrap_or(0)
}

fn common_info(shared: &Shared) -> Vec<(&'static str, Vec<(String, String)>)> {
    let uptime = shared.started.elapsed().as_secs();
    let stats = &shared.stats;
    let port = tcp_port(shared);
    let kv = |k: &str, v: String| (k.to_string(), v);
    let count =
        |k: &str, n: &std::sync::atomic::AtomicU64| kv(k, n.load(Ordering::Relaxed).to_string());
    vec![
        (
            "server",
            vec![
                kv("redis_version", super::connection::REDIS_VERSION.into()),
                kv("rkv_version", env!("CARGO_PKG_VERSION").into()),
                kv("redis_mode", "standalone".into()),
                kv("role", shared.backend.role_name().into()),
                kv("os", std::env::consts::OS.into()),
                kv("arch_bits", (usize::BITS).to_string()),
                kv("process_id", std::process::id().to_string()),
                kv("tcp_port", port.to_string()),
                kv("uptime_in_seconds", uptime.to_string()),
                kv("uptime_in_days", (uptime / 86_400).to_string()),
            ],
        ),
        (
            "clients",
            vec![
                kv(
                    "connected_clients",
                    stats.connected_clients.load(Ordering::Relaxed).to_string(),
                ),
                kv("maxclients", shared.config.max_clients.to_string()),
                kv("blocked_clients", shared.waiters.parked().to_string()),
            ],
        ),
        (
            "stats",
            vec![
                count("total_connections_received", &stats.total_connections),
                count("total_commands_processed", &stats.total_commands),
                kv(
                    "instantaneous_ops_per_sec",
                    format!("{:.0}", stats.ops_per_sec()),
                ),
                count("rejected_connections", &stats.rejected_connections),
                count("rkv_tls_refused", &stats.tls_refused),
                kv("expired_keys", crate::db::expired_dropped().to_string()),
                kv("evicted_keys", "0".into()),
                count("keyspace_hits", &stats.keyspace_hits),
                count("keyspace_misses", &stats.keyspace_misses),
                count("total_error_replies", &stats.command_errors),
                count("rkv_position_waits", &stats.waits),
                count("rkv_position_wait_timeouts", &stats.wait_timeouts),
                count("rkv_reads_refused_bound", &stats.reads_refused_bound),
            ],
        ),
        ("memory", memory_fields()),
        ("cpu", cpu_fields()),
    ]
}

/// INFO memory: the process's resident memory (Redis reports its
/// allocator's count; rkv's memory is mostly RocksDB's, whose memtables
/// and block cache `rkv_…` fields and the metrics break down).
fn memory_fields() -> Vec<(String, String)> {
    let rss = resident_bytes();
    vec![
        ("used_memory".into(), rss.to_string()),
        ("used_memory_human".into(), bytes_to_human(rss)),
        ("used_memory_rss".into(), rss.to_string()),
        ("used_memory_rss_human".into(), bytes_to_human(rss)),
        ("maxmemory".into(), "0".into()),
        ("maxmemory_human".into(), "0B".into()),
        ("maxmemory_policy".into(), "noeviction".into()),
    ]
}

/// The process's resident set, from `/proc/self/statm` (0 where there is
/// none).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Redis's `bytesToHuman`: `512B`, `1.50K`, `3.25M`, `2.00G`.
fn bytes_to_human(n: u64) -> String {
    const UNITS: [(&str, f64); 5] = [
        ("P", 1125899906842624.0),
        ("T", 1099511627776.0),
        ("G", 1073741824.0),
        ("M", 1048576.0),
        ("K", 1024.0),
    ];
    let bytes = n as f64;
    match UNITS.iter().find(|(_, size)| bytes >= *size) {
        Some((unit, size)) => format!("{:.2}{unit}", bytes / size),
        None => format!("{n}B"),
    }
}

/// INFO cpu: `getrusage` of the process and of its children.
fn cpu_fields() -> Vec<(String, String)> {
    let usage = |who| {
        // SAFETY: rusage is plain data; getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage.
        unsafe { libc::getrusage(who, &mut usage) };
        let seconds = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
        (seconds(usage.ru_stime), seconds(usage.ru_utime))
    };
    let (sys, user) = usage(libc::RUSAGE_SELF);
    let (sys_children, user_children) = usage(libc::RUSAGE_CHILDREN);
    vec![
        ("used_cpu_sys".into(), sys),
        ("used_cpu_user".into(), user),
        ("used_cpu_sys_children".into(), sys_children),
        ("used_cpu_user_children".into(), user_children),
    ]
}

/// A daemon's status as Redis's `INFO persistence` and `replication`
/// fields, with rkv's own beside them (`rkv_…`).
fn status_sections(status: DaemonStatus) -> Vec<(&'static str, Vec<(String, String)>)> {
    let kv = |k: &str, v: String| (k.to_string(), v);
    let ms = |d: Option<Duration>| d.map_or(-1, |d| d.as_millis() as i64).to_string();
    let text = |t: Option<String>| t.unwrap_or_default();
    match status {
        DaemonStatus::Master(m) => {
            let last = m.last.as_ref();
            let persistence = vec![
                kv(
                    "rdb_bgsave_in_progress",
                    u8::from(m.backup_in_progress).to_string(),
                ),
                kv(
                    "rdb_changes_since_last_save",
                    m.seq.saturating_sub(m.backed_up_seq).to_string(),
                ),
                kv("rdb_last_save_time", m.last_save_unix.to_string()),
                kv(
                    "rdb_last_bgsave_status",
                    if m.last_ok { "ok" } else { "err" }.into(),
                ),
                kv(
                    "rdb_last_bgsave_time_sec",
                    last.map_or(-1, |l| l.duration.as_secs() as i64).to_string(),
                ),
                kv("rkv_backup_dir", m.backup_dir),
                kv("rkv_last_backup_id", last.map_or(0, |l| l.id).to_string()),
                kv("rkv_last_backup_seq", m.backed_up_seq.to_string()),
                kv(
                    "rkv_last_backup_created_ms",
                    last.map_or(0, |l| l.created_ms).to_string(),
                ),
                kv(
                    "rkv_last_backup_duration_ms",
                    last.map_or(0, |l| l.duration.as_millis()).to_string(),
                ),
                kv(
                    "rkv_last_backup_bytes_copied",
                    last.map_or(0, |l| l.bytes_copied).to_string(),
                ),
                kv(
                    "rkv_last_backup_files_copied",
                    last.map_or(0, |l| l.files_copied).to_string(),
                ),
                kv("rkv_backups_done", m.done.to_string()),
                kv("rkv_backups_failed", m.failed.total().to_string()),
                kv("rkv_last_backup_error", text(m.last_error)),
                kv(
                    "rkv_db_writable",
                    u8::from(m.db_error.is_none()).to_string(),
                ),
                kv("rkv_db_error", text(m.db_error)),
                kv(
                    "rkv_owns_backup_dir",
                    u8::from(m.fenced_by.is_none()).to_string(),
                ),
                kv("rkv_fenced_by", text(m.fenced_by)),
                kv("rkv_lease_held", u8::from(!m.lease_expired).to_string()),
                kv(
                    "rkv_lease_term_ms",
                    m.lease_term.map_or(0, |t| t.as_millis()).to_string(),
                ),
                kv(
                    "rkv_lease_renewed_ms_ago",
                    m.lease_renewed_ago
                        .map_or(-1, |t| t.as_millis() as i64)
                        .to_string(),
                ),
                kv("rkv_scrub_files_checked", m.scrub_files_checked.to_string()),
                kv("rkv_scrub_bytes_checked", m.scrub_bytes_checked.to_string()),
                kv("rkv_damaged_files_found", m.damaged_found.to_string()),
                kv("rkv_last_damage", text(m.last_damage)),
                kv("rkv_backups_dropped", m.backups_dropped.to_string()),
                kv("rkv_keep", m.keep.to_string()),
                kv("rkv_keep_within_sec", m.keep_within.as_secs().to_string()),
            ];
            let mut persistence = persistence;
            persistence.extend(store_fields(m.store));
            let mut replication = vec![
                kv("role", "master".into()),
                kv("connected_slaves", "0".into()),
                kv("master_repl_offset", m.seq.to_string()),
                kv("rkv_log_shipping", u8::from(m.log.is_some()).to_string()),
            ];
            if let Some(log) = m.log {
                let stats = log.stats;
                replication.extend([
                    kv("rkv_log_shipped_seq", stats.shipped.to_string()),
                    kv("rkv_log_segments", stats.segments.to_string()),
                    kv("rkv_log_batches", stats.batches.to_string()),
                    kv("rkv_log_bytes", stats.bytes.to_string()),
                    kv("rkv_log_jumps", stats.jumps.to_string()),
                    kv("rkv_log_last_ship_ms", ms(stats.last_duration)),
                    kv("rkv_log_error", text(log.error)),
                ]);
            }
            vec![("persistence", persistence), ("replication", replication)]
        }
        DaemonStatus::Follower(f) => {
            let host = f.master.split(':').next().unwrap_or_default().to_string();
            let apply = f.last_apply.as_ref();
            let replication = vec![
                kv("role", "slave".into()),
                kv("master_host", host),
                kv("master_port", "0".into()),
                kv(
                    "master_link_status",
                    if f.link_up { "up" } else { "down" }.into(),
                ),
                kv(
                    "master_last_io_seconds_ago",
                    f.last_poll_ago
                        .map_or(-1, |d| d.as_secs() as i64)
                        .to_string(),
                ),
                kv("master_sync_in_progress", u8::from(f.applying).to_string()),
                kv("slave_repl_offset", f.applied_seq.to_string()),
                // A replica's own offset, as Redis reports it there.
                kv("master_repl_offset", f.applied_seq.to_string()),
                kv("slave_read_only", "1".into()),
                kv("rkv_master", f.master),
                kv("rkv_backup_dir", f.backup_dir),
                kv("rkv_applied_backup_id", f.applied_backup_id.to_string()),
                kv("rkv_applied_created_ms", f.applied_created_ms.to_string()),
                kv("rkv_applied_seq", f.applied_seq.to_string()),
                kv(
                    "rkv_master_seq",
                    f.master_seq.map_or_else(String::new, |s| s.to_string()),
                ),
                kv(
                    "rkv_lag_seq",
                    f.master_seq
                        .map_or_else(String::new, |s| s.saturating_sub(f.applied_seq).to_string()),
                ),
                kv("rkv_log_following", u8::from(f.log.is_some()).to_string()),
                kv(
                    "rkv_log_segments_applied",
                    f.log.as_ref().map_or(0, |l| l.segments).to_string(),
                ),
                kv(
                    "rkv_log_batches_applied",
                    f.log.as_ref().map_or(0, |l| l.batches).to_string(),
                ),
                kv(
                    "rkv_log_fallbacks",
                    f.log.as_ref().map_or(0, |l| l.fallbacks).to_string(),
                ),
                kv(
                    "rkv_log_error",
                    text(f.log.as_ref().and_then(|l| l.broken.clone())),
                ),
                kv("rkv_staleness_ms", ms(f.staleness)),
                kv(
                    "rkv_master_clock_skew_ms",
                    f.clock_skew_ms.map_or_else(String::new, |s| s.to_string()),
                ),
                kv("rkv_newest_backup_id", f.newest_backup_id.to_string()),
                kv("rkv_master_heartbeat_ms_ago", ms(f.heartbeat_ago)),
                kv("rkv_lineage_change", text(f.lineage_change)),
                kv("rkv_last_poll_ms_ago", ms(f.last_poll_ago)),
                kv("rkv_last_apply_duration_ms", ms(apply.map(|a| a.duration))),
                kv(
                    "rkv_last_apply_bytes_copied",
                    apply.map_or(0, |a| a.bytes_copied).to_string(),
                ),
                kv(
                    "rkv_last_apply_files_copied",
                    apply.map_or(0, |a| a.files_copied).to_string(),
                ),
                kv(
                    "rkv_last_apply_files_kept",
                    apply.map_or(0, |a| a.files_kept).to_string(),
                ),
                kv("rkv_applies_done", f.applies_done.to_string()),
                kv("rkv_apply_failures", f.failures.total().to_string()),
                kv("rkv_last_error", text(f.last_error)),
                kv("rkv_max_staleness_ms", ms(f.max_staleness)),
                kv("rkv_stale_reads", f.stale_reads.into()),
                kv("healthy", u8::from(f.healthy).to_string()),
            ];
            let mut replication = replication;
            replication.extend(store_fields(f.store));
            let persistence = vec![
                kv("loading", "0".into()),
                kv("rdb_last_save_time", f.last_save_unix.to_string()),
            ];
            vec![("persistence", persistence), ("replication", replication)]
        }
    }
}

/// The object store's request counts, when the daemon uses one.
fn store_fields(traffic: Option<crate::status::StoreTraffic>) -> Vec<(String, String)> {
    let Some(t) = traffic else {
        return Vec::new();
    };
    [
        ("rkv_store_get_requests", t.gets),
        ("rkv_store_put_requests", t.puts),
        ("rkv_store_list_requests", t.lists),
        ("rkv_store_delete_requests", t.deletes),
        ("rkv_store_failed_requests", t.failed),
        ("rkv_store_bytes_uploaded", t.bytes_up),
        ("rkv_store_bytes_downloaded", t.bytes_down),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_as_redis_shows_them() {
        assert_eq!(bytes_to_human(512), "512B");
        assert_eq!(bytes_to_human(1536), "1.50K");
        assert_eq!(bytes_to_human(3 << 20), "3.00M");
        assert_eq!(bytes_to_human(5 << 30), "5.00G");
    }

    #[test]
    fn the_process_reports_its_memory_and_cpu() {
        assert!(resident_bytes() > 0);
        let cpu = cpu_fields();
        assert!(cpu.iter().all(|(_, v)| v.contains('.')), "{cpu:?}");
    }
}
