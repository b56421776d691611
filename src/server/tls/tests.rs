use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkv_testkit::tls::{Pki, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::*;

fn files(pki: &Pki, auth_clients: AuthClients) -> TlsFiles {
    TlsFiles {
        cert: pki.file("server.crt"),
        key: pki.file("server.key"),
        ca: Some(pki.ca()),
        auth_clients,
    }
}

/// A client that trusts `pki`'s CA, presenting `NAME.crt` when given.
fn client_config(pki: &Pki, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
    pki.client_config(cert)
}

/// Drives the server side until `done` says so, as a worker would (read
/// and write until `WouldBlock`), and returns what it read.
fn serve(
    server: &mut TlsStream<UnixStream>,
    reply: &[u8],
    done: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut got, mut written, mut chunk) = (Vec::new(), 0, [0u8; 4096]);
    loop {
        match server.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if done(&got) {
            while written < reply.len() || server.pending() {
                match server.write(&reply[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                assert!(
                    Instant::now() < deadline,
                    "wrote {written} of {}",
                    reply.len()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            return Ok(got);
        }
        assert!(Instant::now() < deadline, "read {} bytes", got.len());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pair(tls: &Tls) -> (TlsStream<UnixStream>, UnixStream) {
    let (server, client) = UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    (TlsStream::new(server, tls.session().unwrap()), client)
}

/// Connects a client with `config` on `socket` in a thread: it sends
/// `request` and reads `expect` bytes back; with the certificate the
/// server presented.
fn client(
    config: Arc<rustls::ClientConfig>,
    socket: UnixStream,
    request: Vec<u8>,
    expect: usize,
) -> std::thread::JoinHandle<std::io::Result<(Vec<u8>, Vec<u8>)>> {
    std::thread::spawn(move || {
        let name = ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config, name).unwrap();
        let mut stream = rustls::StreamOwned::new(session, socket);
        stream.write_all(&request)?;
        let mut reply = vec![0u8; expect];
        stream.read_exact(&mut reply)?;
        let presented = stream.conn.peer_certificates().expect("a certificate")[0].to_vec();
        Ok((reply, presented))
    })
}

#[test]
fn a_session_carries_requests_and_replies_larger_than_its_buffers_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let tls = Tls::load(files(&pki, AuthClients::Yes)).unwrap();
    let (mut server, socket) = pair(&tls);
    // Four times the send buffer, and more than a socket holds.
    let request: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let reply: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let client = client(
        client_config(&pki, Some("client")),
        socket,
        request.clone(),
        reply.len(),
    );
    let got = serve(&mut server, &reply, |got| got.len() >= request.len()).unwrap();
    assert!(got == request, "the request arrived changed");
    assert!(
        client.join().unwrap().unwrap().0 == reply,
        "the reply arrived changed"
    );
    assert!(!server.handshaking());
}

#[test]
fn clients_without_the_cas_certificate_or_without_tls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let rogue = Pki::new(&dir.path().join("rogue"));
    let tls = Tls::load(files(&pki, AuthClients::Yes)).unwrap();
    assert!(tls.requires_client_certs());

    // No certificate, and one a CA the server does not know signed.
    for config in [client_config(&pki, None), {
        // Trusts the server, presents the rogue CA's client certificate.
        std::fs::copy(rogue.file("client.crt"), pki.file("rogue.crt")).unwrap();
        std::fs::copy(rogue.file("client.key"), pki.file("rogue.key")).unwrap();
        client_config(&pki, Some("rogue"))
    }] {
        let (mut server, socket) = pair(&tls);
        let client = client(config, socket, b"PING\r\n".to_vec(), 7);
        let error = serve(&mut server, b"+PONG\r\n", |got| !got.is_empty()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
        drop(server);
        assert!(client.join().unwrap().is_err());
    }

    // Plain RESP on the TLS socket.
    let (mut server, mut socket) = pair(&tls);
    socket.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let error = serve(&mut server, b"", |got| !got.is_empty()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");

    // With client certificates optional, no certificate is fine.
    let optional = Tls::load(files(&pki, AuthClients::Optional)).unwrap();
    assert!(!optional.requires_client_certs());
    let (mut server, socket) = pair(&optional);
    let client = client(client_config(&pki, None), socket, b"PING\r\n".to_vec(), 7);
    serve(&mut server, b"+PONG\r\n", |got| got.len() >= 6).unwrap();
    assert_eq!(client.join().unwrap().unwrap().0, b"+PONG\r\n");
}

#[test]
fn a_reload_serves_new_sessions_the_new_certificate_and_keeps_the_old_on_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let tls = Tls::load(files(&pki, AuthClients::No)).unwrap();
    let presented = |tls: &Tls| {
        let (mut server, socket) = pair(tls);
        let client = client(client_config(&pki, None), socket, b"x".to_vec(), 1);
        serve(&mut server, b"y", |got| !got.is_empty()).unwrap();
        client.join().unwrap().unwrap().1
    };
    let on_disk = || {
        CertificateDer::from_pem_file(pki.file("server.crt"))
            .unwrap()
            .to_vec()
    };
    let first = on_disk();
    assert!(presented(&tls) == first);

    // A new certificate: new sessions get it once reloaded.
    pki.issue("server", "rkv renewed", Usage::Server);
    let renewed = on_disk();
    assert!(renewed != first);
    assert!(presented(&tls) == first, "taken before the reload");
    tls.reload().unwrap();
    assert!(presented(&tls) == renewed, "not taken on reload");

    // A broken key: the reload fails, saying which file, and the
    // certificate in use stays.
    std::fs::write(pki.file("server.key"), "not a key").unwrap();
    let error = tls.reload().unwrap_err().to_string();
    assert!(error.contains("server.key"), "{error}");
    assert!(presented(&tls) == renewed);
}

#[test]
fn unusable_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let other = Pki::new(&dir.path().join("other"));
    let mut mismatched = files(&pki, AuthClients::No);
    mismatched.key = other.file("server.key");
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        ..files(&pki, AuthClients::No)
    };
    let no_ca = TlsFiles {
        ca: None,
        ..files(&pki, AuthClients::Yes)
    };
    let key_as_cert = TlsFiles {
        cert: pki.file("server.key"),
        ..files(&pki, AuthClients::No)
    };
    for (files, expected) in [
        (mismatched, "server.key"),
        (missing, "nope.crt"),
        (no_ca, "--tls-ca-cert-file"),
        (key_as_cert, "holds no PEM certificate"),
    ] {
        let error = Tls::load(files).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
}
