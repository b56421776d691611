//! Server commands: INFO, ROLE, LASTSAVE, BGSAVE and SAVE, from what the
//! daemon reports in its own terms.

use std::sync::atomic::Ordering;

use super::{refusal_reply, Ctx};
use crate::resp::Reply;
use crate::server::{BackupRequest, Role, Shared};

pub(super) fn role(ctx: &mut Ctx<'_>) -> Reply {
    role_reply(ctx.shared.backend.role())
}

pub(super) fn lastsave(ctx: &mut Ctx<'_>) -> Reply {
    Reply::Integer(ctx.shared.backend.lastsave())
}

pub(super) fn bgsave(ctx: &mut Ctx<'_>) -> Reply {
    match ctx.shared.backend.request_backup() {
        Ok(BackupRequest::Started) => Reply::Simple("Background saving started".into()),
        Ok(BackupRequest::Scheduled) => Reply::Simple("Background saving scheduled".into()),
        Err(refusal) => refusal_reply(refusal),
    }
}

pub(super) fn save(ctx: &mut Ctx<'_>) -> Reply {
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

pub(super) fn info(ctx: &mut Ctx<'_>) -> Reply {
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
    sections.extend(shared.backend.info_sections());
    if let Ok(db) = shared.backend.reader() {
        let keys = db.estimate_num_keys().unwrap_or(0);
        sections.push((
            "keyspace",
            vec![("db0".into(), format!("keys={keys},expires=0,avg_ttl=0"))],
        ));
    }
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
    Reply::bulk(text)
}

fn common_info(shared: &Shared) -> Vec<(&'static str, Vec<(String, String)>)> {
    let uptime = shared.started.elapsed().as_secs();
    let stats = &shared.stats;
    let port = shared
        .config
        .listen
        .iter()
        .find_map(|a| match a {
            crate::server::ListenAddr::Tcp(s) => Some(s.port()),
            crate::server::ListenAddr::Unix(_) => None,
        })
        .unwrap_or(0);
    let kv = |k: &str, v: String| (k.to_string(), v);
    vec![
        (
            "server",
            vec![
                // Clients read redis_version to pick features; rkv speaks the
                // RESP2 subset of Redis 7 it implements.
                kv("redis_version", "7.0.0".into()),
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
                kv("blocked_clients", "0".into()),
            ],
        ),
        (
            "stats",
            vec![
                kv(
                    "total_connections_received",
                    stats.total_connections.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "total_commands_processed",
                    stats.total_commands.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "rejected_connections",
                    stats
                        .rejected_connections
                        .load(Ordering::Relaxed)
                        .to_string(),
                ),
            ],
        ),
    ]
}
