//! `--metrics-listen` as a scraper sees it: the figures move with backups
//! and applies, `/healthz` turns 503 when the follower goes stale, promtool
//! lints the exposition and the alert rules, and a real Prometheus server
//! scrapes both daemons and answers PromQL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::util::{bulk, get, refused, wait_for, wait_until, Daemon, Sandbox, GENEROUS};

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
    // A bound a few heartbeats (one a second) long: met while the master
    // runs, even on a busy machine.
    let mut follower_flags = vec![
        "--poll-interval",
        "100ms",
        "--max-staleness",
        "5s",
        "--stale-reads",
        "refuse",
    ];
    follower_flags.extend(metrics);
    let follower = Daemon::follower(&s.path("backups"), &s.path("f"), &follower_flags);
    let (m, f) = (metrics_addr(&s.path("db")), metrics_addr(&s.path("f")));

    // Before any backup: the follower has no data, and says so.
    let (status, body) = http_get(&f, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("no data yet"), "{body}");
    assert_eq!(scrape(&f, "rkv_follower_healthy"), Some(0.0));

    let before = scrape(&m, "rkv_master_backups_total").unwrap();
    let timed = scrape(&m, "rkv_master_backup_duration_seconds_count").unwrap();
    let added = scrape(&m, "rkv_master_backup_added_bytes_total").unwrap();
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    assert_eq!(scrape(&m, "rkv_master_unbacked_writes"), Some(1.0));
    master.client().call(&[b"SAVE"]).unwrap();
    assert_eq!(scrape(&m, "rkv_master_backups_total"), Some(before + 1.0));
    assert_eq!(
        scrape(&m, "rkv_master_backup_duration_seconds_count"),
        Some(timed + 1.0)
    );
    assert!(scrape(&m, "rkv_master_backup_added_bytes_total").unwrap() > added);
    assert_eq!(
        scrape(&m, "rkv_master_backup_failures_total{kind=\"io\"}"),
        Some(0.0)
    );
    assert!(scrape(&m, "rkv_master_heartbeat_age_seconds").unwrap() < 10.0);
    assert_eq!(scrape(&m, "rkv_master_unbacked_writes"), Some(0.0));
    let id = scrape(&m, "rkv_master_last_backup_id").unwrap();
    assert!(id >= 1.0);
    assert!(scrape(&m, "rkv_commands_total").unwrap() >= 2.0);
    assert_eq!(
        scrape(&m, "rkv_command_calls_total{command=\"set\"}"),
        Some(1.0)
    );
    assert_eq!(
        scrape(&m, "rkv_command_calls_total{command=\"save\"}"),
        Some(1.0)
    );
    let errors = scrape(&m, "rkv_command_errors_total").unwrap();
    let _ = master.client().call(&[b"LPUSH", b"l", b"x"]);
    assert_eq!(
        scrape(&m, "rkv_command_calls_total{command=\"unknown\"}"),
        Some(1.0)
    );
    assert_eq!(scrape(&m, "rkv_command_errors_total"), Some(errors + 1.0));
    assert!(scrape(&m, "rkv_db_estimated_keys").is_some());

    wait_until(GENEROUS, "the follower applied the backup", || {
        scrape(&f, "rkv_follower_applied_backup_id") == Some(id)
    });
    wait_for(GENEROUS, "the follower healthy, fresh and serving", || {
        let seen = (
            http_get(&f, "/healthz").0,
            scrape(&f, "rkv_follower_healthy"),
            scrape(&f, "rkv_follower_staleness_seconds"),
            get(&follower, "k"),
        );
        match &seen {
            (200, Some(healthy), Some(staleness), Some(v))
                if *healthy == 1.0 && *staleness < 5.0 && *v == bulk("v") =>
            {
                Ok(())
            }
            _ => Err(seen),
        }
    });
    let applies = scrape(&f, "rkv_follower_applies_total").unwrap();
    assert!(applies >= 1.0);
    assert_eq!(
        scrape(&f, "rkv_follower_apply_duration_seconds_count"),
        Some(applies)
    );
    assert!(scrape(&f, "rkv_follower_apply_copied_bytes_total").unwrap() > 0.0);
    assert!(scrape(&f, "rkv_follower_master_heartbeat_age_seconds").unwrap() < 10.0);
    let refused_before = scrape(&f, "rkv_follower_reads_refused_stale_total").unwrap();
    promtool_lint(&http_get(&m, "/metrics").1);
    promtool_lint(&http_get(&f, "/metrics").1);

    // The master gone: past the 5 s bound the follower is unhealthy.
    master.kill();
    wait_until(GENEROUS, "healthz 503 once stale", || {
        http_get(&f, "/healthz").0 == 503
    });
    let (_, why) = http_get(&f, "/healthz");
    assert!(why.contains("stale"), "{why}");
    assert_eq!(scrape(&f, "rkv_follower_healthy"), Some(0.0));
    assert!(scrape(&f, "rkv_follower_master_heartbeat_age_seconds").unwrap() >= 4.0);
    // --stale-reads refuse: a read now is refused, and counted.
    let refused = follower.client().call(&[b"GET", b"k"]);
    assert!(format!("{refused:?}").contains("MASTERDOWN"), "{refused:?}");
    assert_eq!(
        scrape(&f, "rkv_follower_reads_refused_stale_total"),
        Some(refused_before + 1.0)
    );
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

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/prometheus");
    for args in [
        ["check", "rules", "rkv-alerts.yml"],
        ["test", "rules", "rkv-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool (scripts/test.sh installs the Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server scraping `targets` every second, on a loopback port;
/// killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[&str]) -> Prometheus {
        Prometheus::start_with(dir, targets, "")
    }

    /// [`Prometheus::start`] with more of the scrape job's settings
    /// (`scheme`, `tls_config`), each line indented for the job.
    fn start_with(dir: &Path, targets: &[&str], job: &str) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: rkv\n{job}    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            // Port 0: it binds a free port and logs which, so no port is
            // picked here and lost to a race.
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/test.sh installs the Debian package prometheus)");
        let mut prometheus = Prometheus {
            child,
            addr: String::new(),
        };
        prometheus.addr = wait_for(GENEROUS, "Prometheus to listen", || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{log}");
            }
            // `msg="Listening on" address=127.0.0.1:PORT`
            log.split("msg=\"Listening on\" address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
                .ok_or(log)
        });
        prometheus
    }

    /// The instant vector of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", query.replace(' ', "%20"));
        let Ok(mut stream) = TcpStream::connect(&self.addr) else {
            return Vec::new();
        };
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
            return Vec::new();
        };
        json["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_both_daemons_and_answers_for_the_staleness() {
    let s = Sandbox::new();
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let mut master_flags = vec!["--interval", "1s"];
    master_flags.extend(metrics);
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &master_flags);
    let mut follower_flags = vec!["--poll-interval", "100ms", "--max-staleness", "10s"];
    follower_flags.extend(metrics);
    let _follower = Daemon::follower(&s.path("backups"), &s.path("f"), &follower_flags);
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    let (m, f) = (metrics_addr(&s.path("db")), metrics_addr(&s.path("f")));
    let prometheus = Prometheus::start(s.root(), &[&m, &f]);

    // Present, for the follower alone, and within the bound once the
    // follower measured it.
    let staleness = wait_for(GENEROUS, "Prometheus has the follower's staleness", || {
        let staleness = prometheus.query("rkv_follower_staleness_seconds");
        match staleness.as_slice() {
            [(_, seconds)] if *seconds < 10.0 => Ok(staleness),
            _ => Err(staleness),
        }
    });
    assert_eq!(staleness[0].0["instance"], f.as_str());
    wait_until(GENEROUS, "both targets up", || {
        prometheus
            .query("sum(up{job=\"rkv\"})")
            .first()
            .map(|r| r.1)
            == Some(2.0)
    });
    wait_until(GENEROUS, "Prometheus has the master's backup", || {
        let backups = prometheus.query("rkv_master_backups_total");
        backups.first().is_some_and(|r| r.1 >= 1.0)
    });
}

#[test]
fn a_real_prometheus_scrapes_over_tls_with_a_client_certificate() {
    let s = Sandbox::new();
    let pki = rkv_testkit::tls::Pki::new(&s.path("pki"));
    let file = |name: &str| pki.file(name).display().to_string();
    let tls = pki.daemon_flags(true);
    let mut flags = vec![
        "--interval",
        "1s",
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-tls",
        "--tls-listen",
        "127.0.0.1:0",
    ];
    flags.extend(tls.iter().map(String::as_str));
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &flags);
    master.client().call(&[b"SET", b"k", b"v"]).unwrap();
    let m = metrics_addr(&s.path("db"));
    // As the README configures it: https, the CA, and the scraper's own
    // certificate.
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      \
         key_file: {}\n",
        file("ca.crt"),
        file("client.crt"),
        file("client.key")
    );
    let prometheus = Prometheus::start_with(s.root(), &[&m], &job);
    wait_until(
        GENEROUS,
        "Prometheus has the master's backup over TLS",
        || {
            let backups = prometheus.query("rkv_master_backups_total");
            backups.first().is_some_and(|r| r.1 >= 1.0)
        },
    );
    assert_eq!(
        prometheus.query("up{job=\"rkv\"}").first().map(|r| r.1),
        Some(1.0)
    );
}
