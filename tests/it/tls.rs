//! TLS on the daemons' listeners, with real clients: redis-cli and redis-py
//! over TLS with and without client certificates, the clients TLS must
//! refuse (plain RESP, a certificate of another CA, none where one is
//! required) refused without harming the others, and a certificate
//! reloaded on SIGHUP while connections stay open.

use std::io::{Read, Write};
use std::process::Command;

use rkv::client::{Access, Client, ClientTls};
use rkv::resp::Reply;
use rkv_testkit::tls::{Pki, Usage};
use rkv_testkit::{wait_for, wait_until, Daemon, GENEROUS};

use crate::util::{bulk, refused, rkv, Sandbox};

/// A master serving TLS on loopback with the PKI's server certificate,
/// clients checked against its CA; `--interval 0` and `extra`.
fn master(s: &Sandbox, pki: &Pki, extra: &[&str]) -> Daemon {
    let tls = pki.daemon_flags(true);
    let mut flags = vec!["--tls-listen", "127.0.0.1:0", "--interval", "0"];
    flags.extend(tls.iter().map(String::as_str));
    flags.extend(extra);
    Daemon::master(&s.path("db"), &s.path("backups"), &flags)
}

/// A TLS client trusting the PKI's CA, presenting `NAME.crt` when given.
fn tls_client(d: &Daemon, pki: &Pki, cert: Option<&str>) -> Result<Client, String> {
    let (crt, key) = cert
        .map(|name| {
            (
                pki.file(&format!("{name}.crt")),
                pki.file(&format!("{name}.key")),
            )
        })
        .unzip();
    let tls = ClientTls::new(Some(&pki.ca()), crt.as_deref().zip(key.as_deref()), None)?;
    let access = Access {
        tls: Some(tls),
        ..Access::default()
    };
    let addr = d.tls_addr.as_ref().expect("a TLS listener");
    Client::connect_with(addr, &access).map_err(|e| e.to_string())
}

fn tls_port(d: &Daemon) -> String {
    let addr = d.tls_addr.as_ref().expect("a TLS listener").to_string();
    addr.rsplit(':').next().unwrap().to_string()
}

/// `redis-cli --tls` on the daemon's TLS port with `cert` (or none): its
/// exit status, and what it printed.
fn redis_cli(d: &Daemon, pki: &Pki, cert: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new("redis-cli");
    command
        .args(["-p", &tls_port(d), "--tls", "--cacert"])
        .arg(pki.ca());
    if let Some(name) = cert {
        command
            .arg("--cert")
            .arg(pki.file(&format!("{name}.crt")))
            .arg("--key")
            .arg(pki.file(&format!("{name}.key")));
    }
    let out = command.args(args).output().expect("redis-cli");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn redis_cli_over_tls_with_a_client_certificate_and_without_one_where_none_is_asked() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let master = master(&s, &pki, &["--log-interval", "10ms"]);

    let (ok, said) = redis_cli(&master, &pki, Some("client"), &["SET", "greeting", "hello"]);
    assert!(ok && said.trim() == "OK", "{said}");
    let (ok, said) = redis_cli(&master, &pki, Some("client"), &["GET", "greeting"]);
    assert!(ok && said.trim() == "hello", "{said}");
    // rkv's CLI over TLS, and refused without it.
    let connect = format!("--connect={}", master.tls_addr.as_ref().unwrap());
    let files = [
        format!("--cacert={}", pki.ca().display()),
        format!("--cert={}", pki.file("client.crt").display()),
        format!("--key={}", pki.file("client.key").display()),
    ];
    let tls: Vec<&str> = [connect.as_str(), "--tls"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    rkv(&[&tls[..], &["put", "cli", "yes"]].concat()).ok();
    assert_eq!(rkv(&[&tls[..], &["get", "cli"]].concat()).ok(), "yes\n");
    rkv(&[&connect, "get", "cli"]).fails(1, &["127.0.0.1", "add --tls"]);
    rkv(&[&connect, "--tls", "get", "cli"]).fails(1, &["127.0.0.1"]);
    // --sni: the certificate's DNS name instead of the address; a name it
    // does not carry is refused; TLS files without --tls are a usage error.
    let sni = |name: &str| rkv(&[&tls[..], &[name, "get", "cli"]].concat());
    assert_eq!(sni("--sni=localhost").ok(), "yes\n");
    sni("--sni=elsewhere.example").fails(1, &["not valid for name"]);
    rkv(&[&connect, &files[0], "get", "cli"]).fails(2, &["need --tls"]);

    // No certificate where one is required: no answer.
    let (_, said) = redis_cli(&master, &pki, None, &["GET", "greeting"]);
    assert!(!said.contains("hello"), "{said}");
    // The plain listener beside it serves as before.
    assert_eq!(
        master.client().call(&[b"GET", b"greeting"]).unwrap(),
        bulk("hello")
    );

    master.client().call(&[b"SAVE"]).unwrap();
    // A follower whose TLS asks for no client certificate: the server's
    // certificate alone, as for application hosts that check it.
    let tls = pki.daemon_flags(false);
    let mut flags = vec!["--tls-listen", "127.0.0.1:0", "--poll-interval", "100ms"];
    flags.extend(tls.iter().map(String::as_str));
    let follower = Daemon::follower(&s.path("backups"), &s.path("f"), &flags);
    wait_for(
        GENEROUS,
        "the follower to serve the write over TLS",
        || match redis_cli(&follower, &pki, None, &["GET", "greeting"]).1 {
            said if said.trim() == "hello" => Ok(()),
            said => Err(said),
        },
    );
    let (ok, said) = redis_cli(&follower, &pki, None, &["SET", "k", "v"]);
    assert!(ok && said.contains("READONLY"), "{said}");
}

#[test]
fn plaintext_untrusted_and_silent_clients_on_a_tls_port_are_refused_without_harming_others() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let rogue = Pki::new(&s.path("rogue"));
    let master = master(&s, &pki, &[]);
    let mut good = tls_client(&master, &pki, Some("client")).unwrap();
    good.call(&[b"SET", b"k", b"v"]).unwrap();
    let baseline = master.info_num("connected_clients");

    // Plain RESP on the TLS port: never answered as RESP, and closed.
    let addr = master.tls_addr.as_ref().unwrap().to_string();
    let mut plain = std::net::TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(GENEROUS)).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("PONG"),
        "{answer:?}"
    );

    // A certificate of a CA the daemon does not trust, and none at all.
    std::fs::copy(rogue.file("client.crt"), pki.file("rogue.crt")).unwrap();
    std::fs::copy(rogue.file("client.key"), pki.file("rogue.key")).unwrap();
    for cert in [Some("rogue"), None] {
        // TLS 1.3 finishes the client's side of the handshake before the
        // server has checked its certificate: the refusal shows at the
        // first call.
        let refused = tls_client(&master, &pki, cert)
            .and_then(|mut c| c.call(&[b"GET", b"k"]).map_err(|e| e.to_string()));
        assert!(refused.is_err(), "{cert:?} was served: {refused:?}");
    }

    // A client that connects and never says a word holds up nobody.
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(good.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
    let mut another = tls_client(&master, &pki, Some("client")).unwrap();
    assert_eq!(another.call(&[b"GET", b"k"]).unwrap(), bulk("v"));
    drop((silent, another));
    // The refused clients left nothing behind.
    wait_for(
        GENEROUS,
        "the refused clients to be let go",
        || match master.info_num("connected_clients") {
            n if n == baseline => Ok(()),
            n => Err(n),
        },
    );
    assert!(
        master.log().contains("closing a TLS client"),
        "{}",
        master.log()
    );
    // Counted for the operator: plain RESP, the rogue certificate, none.
    assert!(master.info_num("rkv_tls_refused") >= 3, "{}", master.log());
}

#[test]
fn a_silent_tls_client_is_cut_off_after_the_handshake_deadline() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let master = master(&s, &pki, &[]);
    let addr = master.tls_addr.as_ref().unwrap().to_string();
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent.set_read_timeout(Some(GENEROUS)).unwrap();
    // Closed by the daemon after its 10 s (perhaps with a TLS alert),
    // long before this read's timeout.
    let mut said = Vec::new();
    let read = silent.read_to_end(&mut said);
    assert!(
        match &read {
            Ok(_) => said.len() < 64,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        },
        "{read:?}: {said:?}"
    );
    wait_for(
        GENEROUS,
        "no client but INFO's own left connected",
        || match master.info_num("connected_clients") {
            1 => Ok(()),
            n => Err(n),
        },
    );
}

#[test]
fn a_certificate_reloaded_on_sighup_serves_new_clients_and_keeps_open_connections() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let master = master(&s, &pki, &[]);
    let mut open = tls_client(&master, &pki, Some("client")).unwrap();
    open.call(&[b"SET", b"k", b"before"]).unwrap();
    let first = open.peer_certificate().unwrap();

    pki.issue("server", "rkv renewed", Usage::Server);
    master.signal(libc::SIGHUP);
    wait_for(GENEROUS, "new clients to get the new certificate", || {
        let presented = tls_client(&master, &pki, Some("client"))
            .ok()
            .and_then(|c| c.peer_certificate());
        match presented {
            Some(cert) if cert != first => Ok(()),
            other => Err(other.map(|c| c.len())),
        }
    });
    // The connection opened before the reload carries on.
    open.call(&[b"SET", b"k", b"after"]).unwrap();
    assert_eq!(open.call(&[b"GET", b"k"]).unwrap(), bulk("after"));
    assert_eq!(open.peer_certificate().unwrap(), first);

    // A reload that finds a broken key keeps the certificate in use.
    let in_use = tls_client(&master, &pki, Some("client"))
        .unwrap()
        .peer_certificate();
    std::fs::write(pki.file("server.key"), "not a key").unwrap();
    master.signal(libc::SIGHUP);
    wait_until(GENEROUS, "the failed reload to be logged", || {
        master.log().contains("the reload failed")
    });
    assert!(master.log().contains("server.key"), "{}", master.log());
    let mut after = tls_client(&master, &pki, Some("client")).unwrap();
    assert_eq!(after.peer_certificate(), in_use);
    assert_eq!(after.call(&[b"GET", b"k"]).unwrap(), bulk("after"));
    assert_eq!(open.call(&[b"PING"]).unwrap(), Reply::Simple("PONG".into()));
}

/// redis-py over TLS at its defaults otherwise (`ssl=True` with the CA,
/// and a client certificate): writes, reads, a pipeline.
const REDIS_PY_TLS: &str = r#"
import sys, redis
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
r = redis.Redis(port=port, ssl=True, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key)
assert r.ping()
assert r.set("greeting", "hello")
assert r.get("greeting") == b"hello"
p = r.pipeline(transaction=True)
p.set("x", 1).incr("x").get("x")
assert p.execute() == [True, 2, b"2"]
assert r.mset({f"k{i}": "v" * 1000 for i in range(1000)})
assert len(r.mget([f"k{i}" for i in range(1000)])) == 1000
try:
    redis.Redis(port=port, ssl=True, ssl_ca_certs=ca).ping()
    raise SystemExit("served without a client certificate")
except redis.exceptions.ConnectionError:
    pass
print(redis.__version__, "ok")
"#;

#[test]
fn redis_py_with_ssl_true() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let master = master(&s, &pki, &[]);
    let (ca, cert, key) = (pki.ca(), pki.file("client.crt"), pki.file("client.key"));
    let port = tls_port(&master);
    crate::compat::run_redis_py(
        REDIS_PY_TLS,
        &[port.as_ref(), ca.as_ref(), cert.as_ref(), key.as_ref()],
    );
}

#[test]
fn tls_flags_that_cannot_work_are_refused_with_the_reason() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let (db, backups) = (
        format!("--db={}", s.path("db").display()),
        format!("--backup-dir={}", s.path("backups").display()),
    );
    let cert = pki.file("server.crt").display().to_string();
    let key = pki.file("server.key").display().to_string();
    let ca = pki.ca().display().to_string();
    let base = [db.as_str(), backups.as_str()];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-listen", "127.0.0.1:0"],
            "--tls-cert-file and --tls-key-file",
        ),
        (
            vec![
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                "/nonexistent/k",
            ],
            "/nonexistent/k",
        ),
        (
            vec![
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                &key,
                "--tls-key-file",
                &key,
            ],
            "holds no PEM certificate",
        ),
        (
            vec!["--tls-cert-file", &cert, "--tls-key-file", &key],
            "give --tls-listen",
        ),
        (vec!["--listen", "none"], "nothing to listen on"),
        (vec!["--tls-auth-clients", "yes"], "need --tls-listen"),
        (
            vec!["--metrics-listen", "127.0.0.1:0", "--metrics-tls"],
            "--metrics-tls needs",
        ),
        (
            vec![
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-auth-clients",
                "yes",
            ],
            "no --tls-ca-cert-file",
        ),
        // Beyond loopback with neither a password nor client certificates.
        (
            vec![
                "--tls-listen",
                "0.0.0.0:0",
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
            ],
            "protected mode",
        ),
        (
            vec![
                "--tls-listen",
                "0.0.0.0:0",
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "optional",
            ],
            "protected mode",
        ),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = base.iter().copied().chain(flags.iter().copied()).collect();
        let said = refused(env!("CARGO_BIN_EXE_rkv-master"), &args, 2);
        assert!(said.contains(expected), "{flags:?}: {said}");
    }
}

/// `GET path` over TLS (HTTP/1.1), trusting the PKI's CA and presenting
/// `NAME.crt` when given: the response, head and body.
fn https_get(addr: &str, pki: &Pki, cert: Option<&str>, path: &str) -> std::io::Result<String> {
    let config = pki.client_config(cert);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(config, name).unwrap();
    let socket = std::net::TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(GENEROUS))?;
    let mut stream = rustls::StreamOwned::new(session, socket);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: rkv\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn metrics_are_served_over_tls_with_the_same_certificate() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let master = master(
        &s,
        &pki,
        &["--metrics-listen", "127.0.0.1:0", "--metrics-tls"],
    );
    let file = rkv::daemon::DaemonFile::read(&s.path("db")).unwrap();
    let addr = file.metrics.expect("a metrics address");

    let response = https_get(&addr, &pki, Some("client"), "/metrics").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("rkv_connected_clients"), "{response}");
    let health = https_get(&addr, &pki, Some("client"), "/healthz").unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Client certificates are required here as on the RESP listener.
    let refused = https_get(&addr, &pki, None, "/metrics");
    assert!(
        refused.as_ref().is_err() || !refused.as_ref().unwrap().contains("200"),
        "{refused:?}"
    );
    // Plain HTTP gets no metrics.
    let mut plain = std::net::TcpStream::connect(&addr).unwrap();
    plain.set_read_timeout(Some(GENEROUS)).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: rkv\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("rkv_"),
        "{answer:?}"
    );
    drop(master);
}

/// Kills the daemon it holds when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rkv_with_db_finds_a_daemon_that_listens_only_for_tls() {
    let s = Sandbox::new();
    let pki = Pki::new(&s.path("pki"));
    let db = s.path("db");
    // Not the test kit's launcher: it adds a plain listener.
    let child = Command::new(env!("CARGO_BIN_EXE_rkv-master"))
        .arg("--db")
        .arg(&db)
        .arg("--backup-dir")
        .arg(s.path("backups"))
        .args([
            "--interval",
            "0",
            "--listen",
            "none",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .args(pki.daemon_flags(true))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let master = Killed(child);
    let file = rkv::daemon::DaemonFile::wait_for(&db, master.0.id(), GENEROUS)
        .expect("the master to announce itself");
    assert!(
        file.listen.is_empty() && file.tls_listen.len() == 1,
        "{file:?}"
    );

    let db_flag = format!("--db={}", db.display());
    let creds = [
        format!("--cacert={}", pki.ca().display()),
        format!("--cert={}", pki.file("client.crt").display()),
        format!("--key={}", pki.file("client.key").display()),
    ];
    let with = |more: &[&str]| {
        let mut args = vec![db_flag.as_str()];
        args.extend(creds.iter().map(String::as_str));
        args.extend(more);
        rkv(&args)
    };
    with(&["put", "k", "v"]).ok();
    assert_eq!(with(&["get", "k"]).ok(), "v\n");
    // Without the CA it is refused by TLS, not routed around the lock.
    rkv(&[&db_flag, "get", "k"]).fails(1, &["invalid peer certificate"]);
}
