//! `--metrics-listen` as a scraper sees it: the figures move with backups
//! and applies, and `/healthz` turns 503 when the follower goes stale.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::util::{bulk, get, refused, wait_until, Daemon, Sandbox};

const GENEROUS: Duration = Duration::from_secs(60);

/// The metrics address a daemon announced in its daemon file.
fn metrics_addr(dir: &Path) -> String {
    let file = rkv::daemon::DaemonFile::find_running(dir).expect("a running daemon");
    file.metrics.expect("the daemon serves metrics")
}

/// GET `path`: the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The value of the sample `name` (with its labels, if any) in an exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn scrape(addr: &str, name: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    sample(&body, name)
}

/// Lints an exposition with `promtool check metrics` (Debian package
/// `prometheus`, which the test command installs).
fn promtool_lint(exposition: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs the Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_move_with_backups_and_applies_and_healthz_reports_staleness() {
    let s = Sandbox::new();
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let mut master_flags = vec!["--interval", "0"];
    master_flags.extend(metrics);
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &master_flags);
    let mut follower_flags = vec!["--poll-interval", "100ms", "--max-staleness", "1s"];
    follower_flags.extend(metrics);
    let follower = Daemon::follower(&s.path("backups"), &s.path("f"), &follower_flags);
    let (m, f) = (metrics_addr(&s.path("db")), metrics_addr(&s.path("f")));

    // Before any backup: the follower has no data, and says so.
    let (status, body) = http_get(&f, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("no data yet"), "{body}");
    assert_eq!(scrape(&f, "rkv_follower_healthy"), Some(0.0));

    let before = scrape(&m, "rkv_master_backups_total").unwrap();
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    assert_eq!(scrape(&m, "rkv_master_unbacked_writes"), Some(1.0));
    master.client().call(&[b"SAVE"]).unwrap();
    assert_eq!(scrape(&m, "rkv_master_backups_total"), Some(before + 1.0));
    assert_eq!(scrape(&m, "rkv_master_unbacked_writes"), Some(0.0));
    let id = scrape(&m, "rkv_master_last_backup_id").unwrap();
    assert!(id >= 1.0);
    assert!(scrape(&m, "rkv_commands_total").unwrap() >= 2.0);
    assert!(scrape(&m, "rkv_db_estimated_keys").is_some());

    wait_until(GENEROUS, "the follower applied the backup", || {
        scrape(&f, "rkv_follower_applied_backup_id") == Some(id)
    });
    assert_eq!(get(&follower, "k"), Some(bulk("v")));
    wait_until(GENEROUS, "the follower healthy", || {
        http_get(&f, "/healthz").0 == 200
    });
    let staleness = scrape(&f, "rkv_follower_staleness_seconds").unwrap();
    assert!(staleness < 1.0, "staleness {staleness}");
    assert_eq!(scrape(&f, "rkv_follower_healthy"), Some(1.0));
    assert!(scrape(&f, "rkv_follower_applies_total").unwrap() >= 1.0);
    promtool_lint(&http_get(&m, "/metrics").1);
    promtool_lint(&http_get(&f, "/metrics").1);

    // The master gone: past the 1 s bound the follower is unhealthy.
    master.kill();
    wait_until(GENEROUS, "healthz 503 once stale", || {
        http_get(&f, "/healthz").0 == 503
    });
    let (_, why) = http_get(&f, "/healthz");
    assert!(why.contains("stale"), "{why}");
    assert_eq!(scrape(&f, "rkv_follower_healthy"), Some(0.0));
    assert_eq!(http_get(&f, "/nothing").0, 404);
}

#[test]
fn metrics_beyond_loopback_need_protected_mode_off() {
    let s = Sandbox::new();
    let err = refused(
        env!("CARGO_BIN_EXE_rkv-follower"),
        &[
            "--backup-dir",
            &s.path("b").display().to_string(),
            "--data",
            &s.path("f").display().to_string(),
            "--metrics-listen",
            "0.0.0.0:0",
        ],
        2,
    );
    assert!(
        err.contains("refusing to serve metrics on 0.0.0.0:0"),
        "{err}"
    );
}
