//! The backup store on an S3-compatible object store, with a real S3 server
//! (moto) started by each test: replication end to end, a new follower's
//! bootstrap, an idle follower's request count, the fence against a second
//! master, a store that ignores conditional writes, a file the store lost,
//! and the store unreachable during an upload. `netns.rs` runs the same
//! replication with each daemon in its own network namespace.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::moto::Moto;
use crate::util::{
    bulk, fill, get, refused, refused_with_env, rkv, serves, wait_for, wait_until, Daemon, Sandbox,
    GENEROUS,
};

pub const BUCKET: &str = "rkv-test";

/// The `--backup-dir` of the tests' prefix.
pub fn url(prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}")
}

/// Credentials moto accepts (it checks none) and the endpoint, as flags.
pub fn store_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "rkv-test"),
        ("AWS_SECRET_ACCESS_KEY", "rkv-test"),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// moto, started in the sandbox, with the tests' bucket.
fn store(s: &Sandbox) -> Moto {
    let moto = Moto::start(s.root());
    moto.create_bucket(BUCKET);
    moto
}

fn master(s: &Sandbox, name: &str, endpoint: &str, prefix: &str, extra: &[&str]) -> Daemon {
    let mut flags = vec!["--s3-endpoint", endpoint];
    flags.extend_from_slice(extra);
    let url = url(prefix);
    Daemon::master_with_env(
        &s.path(name),
        std::path::Path::new(&url),
        &flags,
        &store_env(),
    )
}

fn follower(s: &Sandbox, name: &str, endpoint: &str, prefix: &str) -> Daemon {
    let url = url(prefix);
    Daemon::follower_with_env(
        std::path::Path::new(&url),
        &s.path(name),
        &["--s3-endpoint", endpoint, "--poll-interval", "100ms"],
        &store_env(),
    )
}

fn set(d: &Daemon, key: &str, value: &str) {
    let reply = d
        .client()
        .call(&[b"SET", key.as_bytes(), value.as_bytes()])
        .unwrap();
    assert_eq!(reply, Reply::Simple("OK".into()));
}

fn save(d: &Daemon) {
    let reply = d.client().call(&[b"SAVE"]).unwrap();
    assert_eq!(reply, Reply::Simple("OK".into()), "{}", d.log());
}

fn replicated(f: &Daemon, key: &str, value: &str) {
    serves(f, key, value);
}

#[test]
fn writes_reach_two_followers_through_the_store_and_the_cli_reads_it() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let m = master(&s, "db", &endpoint, "prod", &["--interval", "0"]);
    let f1 = follower(&s, "f1", &endpoint, "prod");
    set(&m, "user:1", "Alice");
    save(&m);
    replicated(&f1, "user:1", "Alice");

    // A new follower bootstraps from the store alone.
    let f2 = follower(&s, "f2", &endpoint, "prod");
    replicated(&f2, "user:1", "Alice");

    // Incremental: a second write reaches both.
    set(&m, "user:2", "Bob");
    save(&m);
    replicated(&f1, "user:2", "Bob");
    replicated(&f2, "user:2", "Bob");
    assert_eq!(f1.info("rkv_apply_failures").as_deref(), Some("0"));

    // The layout: BackupEngine's, plus `latest`.
    let keys = moto.keys(BUCKET, "prod/");
    assert!(keys.iter().any(|k| k == "prod/latest"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("prod/meta/")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("prod/shared_checksum/")),
        "{keys:?}"
    );

    // The CLI lists, verifies and restores from the store.
    let env = store_env();
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(crate::util::rkv_bin());
        cmd.args(args).envs(env.iter().copied());
        cmd.output().unwrap()
    };
    let backup_dir = format!("--backup_dir={}", url("prod"));
    let endpoint_flag = format!("--s3-endpoint={endpoint}");
    // Both writes shipped in the log too (the table ends with its range).
    wait_until(GENEROUS, "the master to ship both writes", || {
        m.info_num("rkv_log_shipped_seq") >= 2
    });
    let out = cli(&["backups", &backup_dir, &endpoint_flag]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header, two backups, a blank line and the log's range:\n{table}"
    );
    assert!(
        lines[4].starts_with("log:") && lines[4].contains(" to 2 (cut "),
        "the log's range, to the second write:\n{table}"
    );
    // Point in time from the store: now is the newest backup.
    let out = cli(&[
        "backups",
        &backup_dir,
        &endpoint_flag,
        "--at",
        "0s",
        "--json",
    ]);
    let newest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(newest["id"], 2, "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["status", &backup_dir, &endpoint_flag, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        status["retained"]["count"],
        2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status["retained"]["shared_bytes"].as_u64() > Some(0),
        "{status}"
    );
    assert!(status["owner"]["master"].is_string(), "{status}");
    let out = cli(&["verify", &backup_dir, &endpoint_flag]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    let restored = s.path("restored");
    let db = format!("--db={}", restored.display());
    let out = cli(&[&db, "restore", &backup_dir, &endpoint_flag]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rkv(&[&db, "get", "user:2"]).ok().trim(), "Bob");
    assert!(
        !s.path("restored.s3-download").exists(),
        "the CLI's download is removed"
    );
}

#[test]
fn credentials_from_a_profile_file_an_explicit_staging_dir_and_path_style() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    // No key in the environment: the client must read the profile, or it
    // would go looking for an instance role and fail.
    let credentials = s.path("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = wrong\n\n[rkv]\naws_access_key_id = rkv-test\n\
         aws_secret_access_key = rkv-test\n",
    )
    .unwrap();
    let file = credentials.display().to_string();
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
        ("AWS_PROFILE", "rkv"),
        ("AWS_REGION", "us-east-1"),
    ];
    let staging = s.path("staging").display().to_string();
    let url = url("profile");
    let m = Daemon::master_with_env(
        &s.path("db"),
        std::path::Path::new(&url),
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
            "true",
            "--staging-dir",
            &staging,
            "--interval",
            "0",
        ],
        &env,
    );
    set(&m, "k", "v");
    save(&m);
    assert!(
        s.path("staging/meta").is_dir(),
        "backups are staged where asked"
    );
    assert!(!s.path("db.s3-staging").exists());
    let f = Daemon::follower_with_env(
        std::path::Path::new(&url),
        &s.path("f"),
        &["--s3-endpoint", &endpoint, "--poll-interval", "100ms"],
        &env,
    );
    replicated(&f, "k", "v");

    // `rkv backup` writes a directory; publishing is the master's.
    let db = format!("--db={}", s.path("db2").display());
    rkv(&[&db, "--create_if_missing", "put", "a", "b"]).ok();
    let backup_dir = format!("--backup_dir={url}");
    rkv(&[&db, "backup", &backup_dir]).fails(2, &["rkv-master publishes to an object store"]);
}

#[test]
fn an_unknown_scheme_is_an_error_not_a_directory() {
    let s = Sandbox::new();
    let err = refused(
        env!("CARGO_BIN_EXE_rkv-follower"),
        &[
            "--backup-dir",
            "gs://bucket/x",
            "--data",
            &s.path("f").display().to_string(),
        ],
        2,
    );
    assert!(err.contains("unknown scheme gs://"), "{err}");
    let err = rkv(&["backups", "--backup_dir=sftp://host/x"]).fails(2, &["unknown scheme"]);
    assert!(!err.is_empty());
    assert!(!std::path::Path::new("gs:").exists() && !std::path::Path::new("sftp:").exists());
}

#[test]
fn an_unreachable_store_is_said_so_with_its_cause_once_and_what_to_check() {
    // A loopback port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("--s3-endpoint=http://127.0.0.1:{port}");
    let rkv = crate::util::rkv_bin();
    let backup_dir = format!("--backup_dir={}", url("p"));
    let err = refused_with_env(
        rkv.to_str().unwrap(),
        &["backups", &backup_dir, &endpoint],
        &store_env(),
        1,
    );
    assert!(
        err.contains(&format!("object store {}: ", url("p"))) && err.contains(": cannot connect: "),
        "{err}"
    );
    // object_store's errors repeat their causes; rkv prints each once.
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(
        err.contains("Try: check the endpoint (--s3-endpoint"),
        "{err}"
    );
}

#[test]
fn writes_reach_a_follower_through_the_stores_log_without_a_backup() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let m = master(
        &s,
        "db",
        &endpoint,
        "tail",
        &["--interval", "0", "--log-interval", "100ms"],
    );
    set(&m, "k", "0");
    save(&m);
    let f = follower(&s, "f", &endpoint, "tail");
    replicated(&f, "k", "0");
    let mut c = m.client();
    for i in 1..=50 {
        let i = i.to_string();
        c.call(&[b"SET", b"k", i.as_bytes()]).unwrap();
    }
    replicated(&f, "k", "50");
    // Through the log alone: no backup since the first, no new generation.
    // The counters follow the data they count.
    wait_for(
        GENEROUS,
        "the follower to count the batches it applied",
        || match f.info_num("rkv_log_batches_applied") {
            50.. => Ok(()),
            fewer => Err(fewer),
        },
    );
    assert_eq!(f.info_num("rkv_applied_backup_id"), 1, "{}", f.log());
    assert_eq!(
        f.info_num("rkv_applied_seq"),
        m.info_num("rkv_log_shipped_seq")
    );
    assert_eq!(f.info("rkv_log_error").as_deref(), Some(""));
    let keys = moto.keys(BUCKET, "tail/");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("tail/log/") && k.ends_with(".seg")),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("tail/meta/")).count(),
        1
    );
}

#[test]
fn an_idle_follower_reads_latest_and_the_next_segment_once_per_poll_and_never_lists() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let m = master(&s, "db", &endpoint, "idle", &["--interval", "0"]);
    set(&m, "k", "v");
    save(&m);
    assert_eq!(m.stop(), Some(0));
    let url = url("idle");
    let f = Daemon::follower_with_env(
        std::path::Path::new(&url),
        &s.path("f"),
        &["--s3-endpoint", &endpoint, "--poll-interval", "1s"],
        &store_env(),
    );
    replicated(&f, "k", "v");
    std::thread::sleep(Duration::from_millis(1500));
    // Ten polls, counted as they come: they cannot come faster than one a
    // second (a busy machine only spaces them out), so they take at least
    // the nine seconds between them.
    let latest = format!("/{BUCKET}/idle/latest");
    let segment = format!("/{BUCKET}/idle/log/");
    let (before, started) = (moto.requests().len(), Instant::now());
    let requests = wait_for(GENEROUS, "ten polls of the idle follower", || {
        let requests = moto.requests().split_off(before);
        match requests.iter().filter(|r| r.path == latest).count() {
            10.. => Ok(requests),
            _ => Err(requests),
        }
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "ten polls in {took:?}: more than one GET of latest a second: {requests:?}"
    );
    // Each poll: latest, unchanged, and the segment after the data, which
    // is not there; never a listing.
    assert!(
        requests.iter().all(|r| r.method == "GET"
            && ((r.path == latest && r.status == 304)
                || (r.path.starts_with(&segment) && r.status == 404))),
        "nothing but unchanged reads of latest and of the next segment (no LIST): {requests:?}"
    );
    let segment_reads = requests
        .iter()
        .filter(|r| r.path.starts_with(&segment))
        .count();
    assert!(
        (9..=11).contains(&segment_reads),
        "one read of the next segment per poll, {segment_reads} in ten polls: {requests:?}"
    );
}

#[test]
fn a_second_master_on_the_prefix_is_refused_and_a_paused_one_is_fenced() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let a = master(&s, "a", &endpoint, "shared", &["--interval", "0"]);
    set(&a, "owner", "a");
    save(&a);
    let f = follower(&s, "f", &endpoint, "shared");
    replicated(&f, "owner", "a");

    // A second master while the first renews its heartbeat: refused.
    let url = url("shared");
    let b_db = s.path("b").display().to_string();
    let err = refused_with_env(
        env!("CARGO_BIN_EXE_rkv-master"),
        &[
            "--db",
            &b_db,
            "--backup-dir",
            &url,
            "--s3-endpoint",
            &endpoint,
            "--listen",
            "127.0.0.1:0",
            "--take-over",
        ],
        &store_env(),
        1,
    );
    assert!(err.contains("holds the backup directory"), "{err}");

    // The first one paused past its lease: the second takes over, and the
    // first, resumed, loses the race on `latest` and stops.
    a.signal(libc::SIGSTOP);
    let b = master(
        &s,
        "b",
        &endpoint,
        "shared",
        &["--interval", "0", "--take-over"],
    );
    set(&b, "owner", "b");
    save(&b);
    replicated(&f, "owner", "b");
    a.signal(libc::SIGCONT);
    wait_until(GENEROUS, "the resumed master reports it is fenced", || {
        a.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let refused_write = a.client().call(&[b"SET", b"owner", b"a-again"]);
    assert!(
        refused_write
            .as_ref()
            .is_err_and(|e| e.to_string().contains("READONLY")),
        "{refused_write:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(&f, "owner"), Some(bulk("b")));
}

/// The proxy of `scripts/lib/s3-proxy.py` in front of `moto`.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(moto: &Moto, port: u16, extra: &[&str]) -> Proxy {
        Proxy::start_to(moto, port, extra, Stdio::inherit())
    }

    /// With its stderr (what it says of each request it fails) into `log`.
    fn start_logged(moto: &Moto, port: u16, extra: &[&str], log: &std::path::Path) -> Proxy {
        let file = std::fs::File::create(log).unwrap();
        Proxy::start_to(moto, port, extra, Stdio::from(file))
    }

    fn start_to(moto: &Moto, port: u16, extra: &[&str], stderr: Stdio) -> Proxy {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/s3-proxy.py");
        let mut child = Command::new("python3")
            .args([
                script,
                "--port",
                &port.to_string(),
                "--upstream",
                &moto.addr,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        Proxy { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused_unless_accepted() {
    let s = Sandbox::new();
    let moto = store(&s);
    let proxy = Proxy::start(&moto, 0, &["--drop-conditions"]);
    let endpoint = proxy.endpoint();
    let url = url("gateway");
    let db = s.path("db").display().to_string();
    let args = [
        "--db",
        &db,
        "--backup-dir",
        &url,
        "--s3-endpoint",
        &endpoint,
        "--listen",
        "127.0.0.1:0",
    ];
    let err = refused_with_env(env!("CARGO_BIN_EXE_rkv-master"), &args, &store_env(), 1);
    assert!(err.contains("cannot fence a second master"), "{err}");
    assert!(err.contains("ignores If-None-Match"), "{err}");
    assert!(err.contains("--accept-unfenced-store"), "{err}");

    let m = master(
        &s,
        "db",
        &endpoint,
        "gateway",
        &["--interval", "0", "--accept-unfenced-store"],
    );
    assert!(m.log().contains("not fenced off"), "{}", m.log());
    set(&m, "k", "v");
    save(&m);
    let f = follower(&s, "f", &endpoint, "gateway");
    replicated(&f, "k", "v");
}

#[test]
fn a_file_the_store_lost_is_never_applied_and_the_master_uploads_it_again() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let m = master(
        &s,
        "db",
        &endpoint,
        "lost",
        &["--interval", "0", "--keep-within", "10s"],
    );
    fill(&m, "big", 4);
    save(&m);
    // Delete a shared file of the newest backup, as a careless operator or
    // a lifecycle rule would.
    let shared: Vec<String> = moto
        .keys(BUCKET, "lost/shared_checksum/")
        .into_iter()
        .filter(|k| k.ends_with(".sst"))
        .collect();
    assert!(!shared.is_empty());
    for key in &shared {
        moto.delete(&format!("{BUCKET}/{key}"));
    }
    let f = follower(&s, "f", &endpoint, "lost");
    wait_until(GENEROUS, "the follower reports the missing file", || {
        f.log().contains("missing from the store")
    });
    assert!(
        matches!(get(&f, "big:000000:00"), Some(Reply::Error(e)) if e.starts_with("MASTERDOWN")),
        "nothing partial is served"
    );
    // The master's next purge lists the store and uploads what it lost.
    set(&m, "after", "1");
    std::thread::sleep(Duration::from_secs(10));
    save(&m);
    replicated(&f, "after", "1");
    assert!(get(&f, "big:000000:00").is_some_and(|r| matches!(r, Reply::Bulk(_))));
}

#[test]
fn files_the_store_lost_are_uploaded_again_between_backups() {
    // With the log on backups are rare: the scrub's step lists the store
    // and uploads what it lost, without waiting for the next backup.
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let m = master(
        &s,
        "db",
        &endpoint,
        "lost-between",
        &[
            "--interval",
            "0",
            "--keep-within",
            "10s",
            "--scrub-interval",
            "1s",
        ],
    );
    fill(&m, "big", 1);
    save(&m);
    let shared: Vec<String> = moto
        .keys(BUCKET, "lost-between/shared_checksum/")
        .into_iter()
        .filter(|k| k.ends_with(".sst"))
        .collect();
    assert!(!shared.is_empty());
    for key in &shared {
        moto.delete(&format!("{BUCKET}/{key}"));
    }
    let f = follower(&s, "f", &endpoint, "lost-between");
    let value = get(&m, "big:000000:00");
    assert!(matches!(value, Some(Reply::Bulk(Some(_)))), "{value:?}");
    wait_until(GENEROUS, "the follower serves the lost files' data", || {
        get(&f, "big:000000:00") == value
    });
    assert_eq!(m.info_num("rkv_backups_done"), 1, "no backup was taken");
}

#[test]
fn the_store_cut_off_during_an_upload_delays_replication_and_loses_nothing() {
    let s = Sandbox::new();
    let moto = store(&s);
    let proxy = Proxy::start(&moto, 0, &[]);
    let port = proxy.port;
    // A term long enough that the cut-off master takes the write below
    // however slow the machine: the lease is another test's subject.
    let m = master(
        &s,
        "db",
        &proxy.endpoint(),
        "cut",
        &["--interval", "1s", "--lease-term", "10m"],
    );
    let f = follower(&s, "f", &moto.endpoint(), "cut");
    set(&m, "before", "1");
    replicated(&f, "before", "1");

    // Cut the store off while a large backup uploads.
    fill(&m, "big", 16);
    m.client().call(&[b"BGSAVE"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(proxy);
    set(&m, "during", "1");
    wait_until(GENEROUS, "the master reports the failed publish", || {
        m.info_num("rkv_backups_failed") > 0
    });
    // Followers keep serving what they had; nothing half-uploaded is seen.
    assert_eq!(get(&f, "before"), Some(bulk("1")));
    let _back = Proxy::start(&moto, port, &[]);
    replicated(&f, "during", "1");
    assert!(get(&f, "big:000000:00").is_some_and(|r| matches!(r, Reply::Bulk(_))));
    assert_eq!(
        f.info("rkv_apply_failures").as_deref(),
        Some("0"),
        "{}",
        f.log()
    );
}

#[test]
fn a_lost_reply_to_a_conditional_write_of_latest_does_not_fence_the_master() {
    let s = Sandbox::new();
    let moto = store(&s);
    // The store applies the first three conditional writes of `latest`,
    // and their replies are lost: each retried write finds the master's
    // own version, not another master's.
    let proxy = Proxy::start(&moto, 0, &["--lose-replies", "3"]);
    let m = master(
        &s,
        "db",
        &proxy.endpoint(),
        "lost",
        &["--interval", "200ms"],
    );
    let f = follower(&s, "f", &moto.endpoint(), "lost");
    for i in 0..5 {
        set(&m, "k", &i.to_string());
        serves(&f, "k", &i.to_string());
    }
    let latest = format!("/{BUCKET}/lost/latest");
    let refused = moto
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path == latest && r.status == 412)
        .count();
    assert!(
        refused >= 1,
        "no conditional write was refused: {:?}",
        moto.requests()
    );
    assert_eq!(m.info("rkv_owns_backup_dir").as_deref(), Some("1"));
    assert_eq!(m.info("rkv_fenced_by").as_deref(), Some(""));
    assert!(
        !m.log().contains("another master writes there"),
        "{}",
        m.log()
    );
}

#[test]
fn a_master_cut_off_past_its_lease_term_acknowledges_nothing_a_promotion_drops() {
    let s = Sandbox::new();
    let moto = store(&s);
    let proxy = Proxy::start(&moto, 0, &[]);
    let port = proxy.port;
    let old = master(
        &s,
        "old",
        &proxy.endpoint(),
        "prod",
        &["--interval", "0", "--lease-term", "3s"],
    );
    let chosen = follower(&s, "chosen", &moto.endpoint(), "prod");
    set(&old, "k", "v1");
    save(&old);
    replicated(&chosen, "k", "v1");
    chosen.stop();

    // The old master is cut off from the store: once its term has passed
    // since the last renewal, it refuses writes, and says so.
    drop(proxy);
    let mut client = old.client();
    let refusal = wait_for(
        GENEROUS,
        "the cut-off master refuses writes",
        || match client.call_raw(&[b"SET", b"during", b"1"]) {
            Ok(Reply::Error(e)) => Ok(e),
            other => Err(other),
        },
    );
    assert!(
        refusal.starts_with("READONLY") && refusal.contains("lease"),
        "{refusal}"
    );
    assert_eq!(old.info("rkv_lease_held").as_deref(), Some("0"));
    assert_eq!(old.info("rkv_lease_term_ms").as_deref(), Some("3000"));
    assert!(old.log().contains("acknowledges no write"), "{}", old.log());

    // A promotion waits the term out and says what the new master lacks;
    // the old master acknowledges nothing meanwhile.
    let promoting = {
        let (db, data) = (s.path("new"), s.path("chosen"));
        let endpoint = moto.endpoint();
        std::thread::spawn(move || {
            Command::new(crate::util::rkv_bin())
                .args([
                    format!("--db={}", db.display()),
                    "promote".into(),
                    format!("--data={}", data.display()),
                    format!("--backup_dir={}", url("prod")),
                    format!("--s3-endpoint={endpoint}"),
                ])
                .envs(store_env())
                .output()
                .unwrap()
        })
    };
    let mut tries = 0;
    while !promoting.is_finished() {
        let reply = client.call_raw(&[b"SET", b"during", b"2"]).unwrap();
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("READONLY")),
            "the cut-off master acknowledged a write during the promotion: {reply:?}"
        );
        tries += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = promoting.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lease term") && stdout.contains("not in the promoted database"),
        "{stdout}"
    );
    assert!(tries > 0);

    // Back in touch, the old master finds the store handed over: fenced.
    let _back = Proxy::start(&moto, port, &[]);
    wait_until(GENEROUS, "the old master finds itself fenced", || {
        old.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let new = master(&s, "new", &moto.endpoint(), "prod", &["--interval", "0"]);
    assert_eq!(get(&new, "k"), Some(bulk("v1")));
    assert_eq!(get(&new, "during"), Some(Reply::Bulk(None)));
}

#[test]
fn every_request_to_a_store_answering_slow_down_is_counted_retries_included() {
    let s = Sandbox::new();
    let moto = store(&s);
    let m = master(&s, "db", &moto.endpoint(), "busy", &["--interval", "0"]);
    set(&m, "k", "v");
    save(&m);
    // The follower reaches the store only through a proxy that answers
    // every request 503 SlowDown; the client retries each on its own.
    let log = s.path("proxy.log");
    let proxy = Proxy::start_logged(&moto, 0, &["--slow-down"], &log);
    let f = follower(&s, "f", &proxy.endpoint(), "busy");
    let answered = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("s3-proxy: 503"))
            .count() as i64
    };
    wait_until(GENEROUS, "the proxy has failed 20 requests", || {
        answered() >= 20
    });
    // Counted when sent, so between what the proxy had answered before the
    // look at INFO and what it answered after (plus the one in flight).
    let before = answered();
    let sent: i64 = ["get", "put", "list", "delete"]
        .iter()
        .map(|kind| f.info_num(&format!("rkv_store_{kind}_requests")))
        .sum();
    let failed = f.info_num("rkv_store_failed_requests");
    let after = answered();
    assert!(
        sent >= before && sent <= after + 1,
        "the follower counted {sent} requests; the proxy answered {before}..{after}"
    );
    assert!(
        failed + 1 >= before && failed <= after,
        "the follower counted {failed} failures; the proxy answered {before}..{after}"
    );
    assert_eq!(f.info("master_link_status").as_deref(), Some("down"));
}

#[test]
fn a_backup_waiting_on_a_store_that_stopped_answering_is_reported_failing() {
    let s = Sandbox::new();
    let moto = store(&s);
    let proxy = Proxy::start(&moto, 0, &[]);
    let port = proxy.port;
    let m = master(&s, "db", &proxy.endpoint(), "hung", &["--interval", "0"]);
    set(&m, "k", "v");
    save(&m);
    // Every request hangs from now on; a backup starts and waits on it.
    drop(proxy);
    let _hung = Proxy::start(&moto, port, &["--hang"]);
    set(&m, "k", "w");
    m.client().call(&[b"BGSAVE"]).unwrap();
    // Reported while the requests still hang, not when they time out.
    wait_until(GENEROUS, "the stalled backup reported", || {
        m.info("rdb_last_bgsave_status").as_deref() == Some("err")
            && m.info("rkv_last_backup_error")
                .is_some_and(|e| e.contains("stalled") && e.contains("has not answered"))
    });
    assert_eq!(m.info("rdb_bgsave_in_progress").as_deref(), Some("1"));
}

#[test]
fn files_that_arrived_whole_are_not_downloaded_again_when_another_failed() {
    let s = Sandbox::new();
    let moto = store(&s);
    let m = master(&s, "db", &moto.endpoint(), "retry", &["--interval", "0"]);
    // Two flushes: at least two SST files in the backup.
    fill(&m, "a", 2);
    save(&m);
    fill(&m, "b", 2);
    save(&m);
    // The store fails one SST eight times (two downloads' worth, with the
    // client's retries); the others arrive whole the first time.
    let proxy = Proxy::start(&moto, 0, &["--fail-get", ".sst", "8"]);
    let f = follower(&s, "f", &proxy.endpoint(), "retry");
    wait_until(GENEROUS, "the follower serves the backup", || {
        matches!(get(&f, "b:000000:00"), Some(Reply::Bulk(Some(_))))
    });
    let mut gets: std::collections::BTreeMap<String, usize> = Default::default();
    for r in moto.requests() {
        if r.method == "GET" && r.path.ends_with(".sst") {
            *gets.entry(r.path).or_default() += 1;
        }
    }
    assert!(gets.len() >= 2, "one SST file only: {gets:?}");
    assert!(
        gets.values().all(|&n| n == 1),
        "SST files downloaded more than once: {gets:?}"
    );
}

#[test]
fn a_lost_reply_to_the_start_up_probe_is_not_taken_for_a_broken_store() {
    let s = Sandbox::new();
    let moto = store(&s);
    // The probe's first create-if-absent lands and its reply is lost: the
    // client's retry is refused, by the master's own object.
    let proxy = Proxy::start(&moto, 0, &["--lose-replies", "1", "--lose-on", "rkv-probe"]);
    let m = master(&s, "db", &proxy.endpoint(), "probe", &["--interval", "0"]);
    set(&m, "k", "v");
    save(&m);
    let f = follower(&s, "f", &moto.endpoint(), "probe");
    replicated(&f, "k", "v");
}

#[test]
fn the_purge_deletes_in_batches() {
    let s = Sandbox::new();
    let moto = store(&s);
    let m = master(
        &s,
        "db",
        &moto.endpoint(),
        "batch",
        &["--interval", "0", "--keep", "1", "--keep-within", "10s"],
    );
    for i in 0..4 {
        set(&m, "k", &i.to_string());
        save(&m);
    }
    // Past --keep-within, the next backup purges the four before it.
    std::thread::sleep(Duration::from_secs(11));
    set(&m, "k", "last");
    save(&m);
    wait_until(GENEROUS, "the old backups gone from the store", || {
        !moto
            .keys(BUCKET, "batch/meta/")
            .iter()
            .any(|k| k == "batch/meta/1")
    });
    let requests = moto.requests();
    let single = requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/batch/"))
        .count();
    let batches = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("delete"))
        .count();
    assert!(
        single == 0 && batches >= 1,
        "{single} single deletes, {batches} batches: {requests:?}"
    );
}

/// `rkv --db=new promote --data=chosen --backup_dir=s3://…/prod EXTRA…`.
fn promote_chosen(s: &Sandbox, endpoint: &str, extra: &[&str]) -> std::process::Output {
    Command::new(crate::util::rkv_bin())
        .args([
            format!("--db={}", s.path("new").display()),
            "promote".into(),
            format!("--data={}", s.path("chosen").display()),
            format!("--backup_dir={}", url("prod")),
            format!("--s3-endpoint={endpoint}"),
        ])
        .args(extra)
        .envs(store_env())
        .output()
        .unwrap()
}

/// A master on `prod` holding k=v1, and the follower `chosen`, which
/// applied it, stopped; `other` is a follower that keeps running.
fn before_a_promotion(s: &Sandbox, endpoint: &str) -> (Daemon, Daemon) {
    let old = master(s, "old", endpoint, "prod", &["--interval", "0"]);
    let chosen = follower(s, "chosen", endpoint, "prod");
    let other = follower(s, "other", endpoint, "prod");
    set(&old, "k", "v1");
    save(&old);
    replicated(&chosen, "k", "v1");
    replicated(&other, "k", "v1");
    chosen.stop();
    (old, other)
}

#[test]
fn promote_hands_an_object_store_prefix_to_the_new_master() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let (old, other) = before_a_promotion(&s, &endpoint);
    old.kill();

    let out = promote_chosen(&s, &endpoint, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("handed over"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No --take-over: the store was handed over.
    let new = master(&s, "new", &endpoint, "prod", &["--interval", "0"]);
    assert_eq!(get(&new, "k"), Some(bulk("v1")));
    set(&new, "k", "v2");
    save(&new);
    replicated(&other, "k", "v2");
}

#[test]
fn promote_fences_a_live_master_on_an_object_store_when_told_to() {
    let s = Sandbox::new();
    let moto = store(&s);
    let endpoint = moto.endpoint();
    let (old, _other) = before_a_promotion(&s, &endpoint);

    let out = promote_chosen(&s, &endpoint, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--fence-live-master"), "{stderr}");
    let out = promote_chosen(&s, &endpoint, &["--fence-live-master"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old master loses the race on `latest` and stops taking writes.
    wait_until(GENEROUS, "the old master fenced", || {
        old.info("rkv_owns_backup_dir").as_deref() == Some("0")
    });
    let refused_write = old.client().call(&[b"SET", b"k", b"lost"]);
    assert!(
        refused_write.is_err()
            || matches!(&refused_write, Ok(Reply::Error(e)) if e.starts_with("READONLY")),
        "{refused_write:?}"
    );
    // On an object store no lock holds the new master back.
    let new = master(&s, "new", &endpoint, "prod", &["--interval", "0"]);
    assert_eq!(get(&new, "k"), Some(bulk("v1")));
}
