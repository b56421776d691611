//! Unit tests of `metrics.rs`.

use super::*;
use crate::status::{Copied, LastApply};
use std::time::Duration;

fn durations(seconds: &[f64]) -> Durations {
    let mut durations = Durations::default();
    for s in seconds {
        durations.record(Duration::from_secs_f64(*s));
    }
    durations
}

/// A snapshot of `status` with no load.
fn idle(status: DaemonStatus) -> Snapshot {
    Snapshot {
        status,
        clients: 0,
        connections: 0,
        rejected: 0,
        tls_refused: 0,
        commands: 0,
        calls: Vec::new(),
        command_errors: 0,
        freshness: Default::default(),
        db: None,
    }
}

/// Fails unless each of `lines` is a whole line of `text`.
fn assert_has_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "{line} missing from\n{text}"
        );
    }
}

fn failures(kinds: &[&str]) -> Failures {
    let mut failures = Failures::default();
    for kind in kinds {
        failures.record(kind);
    }
    failures
}

fn follower_status() -> FollowerStatus {
    FollowerStatus {
        master: "h:/db".into(),
        link_up: true,
        last_poll_ago: Some(Duration::from_millis(300)),
        applying: false,
        backup_dir: "/b".into(),
        applied_backup_id: 7,
        applied_created_ms: 0,
        applied_seq: 42,
        master_seq: Some(45),
        log: None,
        staleness: Some(Duration::from_millis(1500)),
        clock_skew_ms: None,
        newest_backup_id: 8,
        heartbeat_ago: Some(Duration::from_millis(800)),
        lineage_change: None,
        last_apply: Some(LastApply {
            duration: Duration::from_millis(20),
            bytes_copied: 4096,
            files_copied: 2,
            files_kept: 3,
        }),
        applies_done: 5,
        failures: failures(&["corrupt"]),
        durations: durations(&[0.02, 0.3, 0.3, 400.0]),
        copied: Copied {
            bytes: 4096,
            files: 2,
            files_kept: 3,
        },
        reads_refused_stale: 4,
        last_error: None,
        max_staleness: Some(Duration::from_secs(1)),
        stale_reads: "serve",
        healthy: false,
        last_save_unix: 0,
        store: Some(StoreTraffic {
            gets: 10,
            ..StoreTraffic::default()
        }),
    }
}

#[test]
fn a_follower_exposition_names_its_figures_in_base_units() {
    let text = render(&Snapshot {
        clients: 3,
        connections: 9,
        commands: 100,
        calls: vec![("get", 60), ("unknown", 2)],
        command_errors: 2,
        ..idle(DaemonStatus::Follower(follower_status()))
    });
    assert_has_lines(
        &text,
        &[
            "rkv_follower_staleness_seconds 1.5",
            "rkv_follower_healthy 0",
            "rkv_follower_applied_backup_id 7",
            "rkv_follower_newest_backup_id 8",
            "rkv_follower_applies_total 5",
            "rkv_follower_apply_failures_total{kind=\"corrupt\"} 1",
            "rkv_follower_apply_failures_total{kind=\"purged\"} 0",
            "rkv_follower_apply_copied_bytes_total 4096",
            "rkv_follower_apply_copied_files_total 2",
            "rkv_follower_apply_kept_files_total 3",
            "rkv_follower_reads_refused_stale_total 4",
            "# TYPE rkv_follower_apply_duration_seconds histogram",
            "rkv_follower_apply_duration_seconds_bucket{le=\"0.01\"} 0",
            "rkv_follower_apply_duration_seconds_bucket{le=\"0.025\"} 1",
            "rkv_follower_apply_duration_seconds_bucket{le=\"0.5\"} 3",
            "rkv_follower_apply_duration_seconds_bucket{le=\"300\"} 3",
            "rkv_follower_apply_duration_seconds_bucket{le=\"+Inf\"} 4",
            "rkv_follower_apply_duration_seconds_sum 400.62",
            "rkv_follower_apply_duration_seconds_count 4",
            "rkv_store_requests_total{kind=\"get\"} 10",
            "rkv_commands_total 100",
            "rkv_command_calls_total{command=\"get\"} 60",
            "rkv_command_calls_total{command=\"unknown\"} 2",
            "rkv_command_errors_total 2",
            "# HELP rkv_connected_clients Clients connected now",
            "# TYPE rkv_commands_total counter",
        ],
    );
}

#[test]
fn a_master_exposition_counts_failures_by_kind_and_its_heartbeat() {
    let text = render(&idle(DaemonStatus::Master(master_status())));
    assert_has_lines(
        &text,
        &[
            "rkv_master_backup_failures_total{kind=\"store\"} 2",
            "rkv_master_backup_failures_total{kind=\"fenced\"} 1",
            "rkv_master_backup_failures_total{kind=\"io\"} 0",
            "rkv_master_purged_backups_total 3",
            "rkv_master_heartbeat_age_seconds 0.25",
            "rkv_master_backup_duration_seconds_count 1",
            "rkv_master_unbacked_writes 2",
        ],
    );
}

#[test]
fn health_says_why_not() {
    let stale = DaemonStatus::Follower(follower_status());
    let why = health(&stale).unwrap_err();
    assert!(
        why.contains("stale: data 1.5 s old, past --max-staleness 1.0 s"),
        "{why}"
    );
    let mut empty = follower_status();
    empty.applied_backup_id = 0;
    let why = health(&DaemonStatus::Follower(empty)).unwrap_err();
    assert!(why.contains("no data yet"), "{why}");
    let mut fine = follower_status();
    fine.healthy = true;
    assert_eq!(health(&DaemonStatus::Follower(fine)), Ok(()));
}

fn master_status() -> MasterStatus {
    MasterStatus {
        seq: 10,
        backed_up_seq: 8,
        backup_in_progress: false,
        last_save_unix: 1,
        last_ok: true,
        last: None,
        done: 1,
        failed: failures(&["store", "store", "fenced"]),
        durations: durations(&[0.1]),
        added: Copied::default(),
        purged: 3,
        purge_failures: 0,
        heartbeat_ago: Some(Duration::from_millis(250)),
        last_error: None,
        backup_dir: "/b".into(),
        db_error: None,
        fenced_by: None,
        lease_term: Some(Duration::from_secs(10)),
        lease_renewed_ago: Some(Duration::from_millis(400)),
        lease_expired: false,
        scrub_files_checked: 0,
        scrub_bytes_checked: 0,
        damaged_found: 0,
        last_damage: None,
        backups_dropped: 0,
        keep: 20,
        keep_within: Duration::from_secs(10),
        log: None,
        store: Some(StoreTraffic::default()),
    }
}

/// Every `rkv_…` name in `text` (PromQL in a dashboard or rule file).
fn names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("rkv_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_and_the_alert_rules_use_only_metrics_rkv_exports() {
    // Both daemons with the log on, so that its series are there.
    let master = MasterStatus {
        log: Some(crate::status::LogShipping {
            stats: Default::default(),
            error: None,
        }),
        ..master_status()
    };
    let follower = FollowerStatus {
        log: Some(crate::status::FollowedLog {
            segments: 1,
            batches: 1,
            broken: None,
            fallbacks: 0,
        }),
        ..follower_status()
    };
    let exported: String = [
        DaemonStatus::Master(master),
        DaemonStatus::Follower(follower),
    ]
    .into_iter()
    .map(|status| {
        render(&Snapshot {
            calls: vec![("get", 1)],
            db: Some(LoadFigures::default()),
            ..idle(status)
        })
    })
    .collect();
    // A histogram's series are its name with a suffix.
    let exported: Vec<String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| match l.split_once(' ') {
            Some((name, "histogram")) => ["_bucket", "_sum", "_count"]
                .map(|suffix| format!("{name}{suffix}"))
                .to_vec(),
            Some((name, _)) => vec![name.to_string()],
            None => Vec::new(),
        })
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../contrib/grafana/rkv-dashboard.json")).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10);
    let rules = include_str!("../../contrib/prometheus/rkv-alerts.yml");
    let used = exprs.iter().flat_map(|e| names_in(e)).chain(
        names_in(rules)
            .into_iter()
            // INFO fields the descriptions name, not metrics.
            .filter(|n| {
                !["rkv_last_error", "rkv_last_backup_error", "rkv_log_error"].contains(&n.as_str())
            }),
    );
    for name in used {
        assert!(
            exported.contains(&name),
            "{name} is not exported: {exported:?}"
        );
    }
}
