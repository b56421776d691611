//! TLS on the Redis-protocol listeners and the metrics endpoint: the
//! certificate, key and client CA read from PEM files (Redis's
//! `tls-cert-file`, `tls-key-file`, `tls-ca-cert-file`, `tls-auth-clients`),
//! swapped in whole on reload (SIGHUP) so new connections get the new files
//! and open ones keep theirs, and [`TlsStream`]: a non-blocking TLS session
//! over a socket that a worker reads and writes like the socket itself.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Plaintext a TLS session buffers for sending before its socket takes it:
/// the bound on what a client that does not read costs beyond its replies.
const SEND_BUFFER: usize = 64 * 1024;

/// Whether TLS clients must present a certificate the CA signed (Redis's
/// `tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthClients {
    /// A certificate signed by the CA is required.
    Yes,
    /// No certificate is asked for.
    No,
    /// A certificate is asked for and checked, but may be left out.
    Optional,
}

/// Where the TLS files are, and what is asked of clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates (PEM) that client certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Whether clients must present a certificate.
    pub auth_clients: AuthClients,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read or holds no usable PEM.
    #[error("{what} {}: {detail}", path.display())]
    File {
        /// What the file is for.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Client certificates are asked for, and no CA says which to trust.
    #[error(
        "client certificates are asked for (--tls-auth-clients) but no --tls-ca-cert-file says \
         which CA signs them"
    )]
    NoCa,
    /// The files do not go together (a key of another certificate).
    #[error("the TLS certificate {} and key {}: {detail}", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        detail: String,
    },
}

/// The server side of TLS: the configuration new sessions start from,
/// replaced whole by [`Tls::reload`].
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; the error names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = build(&files)?;
        Ok(Tls {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again: sessions started from now on use them, open
    /// ones keep the certificate they began with. On an error the files in
    /// use stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Whether every client must present a certificate the CA signed: a
    /// listener that strangers cannot use (protected mode counts it so).
    pub fn requires_client_certs(&self) -> bool {
        self.files.auth_clients == AuthClients::Yes
    }

    /// The configuration a new session starts from.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// A new server session for an accepted client.
    pub fn session(&self) -> io::Result<rustls::ServerConnection> {
        let mut session = rustls::ServerConnection::new(self.config()).map_err(io::Error::other)?;
        session.set_buffer_limit(Some(SEND_BUFFER));
        Ok(session)
    }
}

fn build(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let file_error = |what, path: &Path, detail: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let certs = read_certs("the TLS certificate", &files.cert)?;
    let key = read_key("the TLS key", &files.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions");
    let builder = match (&files.ca, files.auth_clients) {
        (None, AuthClients::No) => builder.with_no_client_auth(),
        (None, _) => return Err(TlsError::NoCa),
        (Some(_), AuthClients::No) => builder.with_no_client_auth(),
        (Some(ca), auth) => {
            let roots = read_roots("the TLS CA certificate file", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                AuthClients::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_error("the TLS CA certificate file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            detail: e.to_string(),
        })
}

/// The PEM certificates in `path` (`what` it is, for the error), at least
/// one.
pub(crate) fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |detail| TlsError::File {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(pem_error(e, "PEM certificates")))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(certs)
}

/// The PEM private key in `path`.
pub(crate) fn read_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        detail: pem_error(e, "a PEM private key"),
    })
}

/// The CA certificates in `path`, as the roots a peer's certificate must
/// chain to.
pub(crate) fn read_roots(
    what: &'static str,
    path: &Path,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error, expected: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => format!("holds no {expected}"),
        other => format!("is not {expected}: {other}"),
    }
}

/// A TLS session over a non-blocking socket, read and written as the
/// socket is: `WouldBlock` when the socket has nothing (or takes nothing)
/// more, `Ok(0)` from a read at the end of the client's input. Handshake
/// bytes go out as the reads bring them about.
pub struct TlsStream<S> {
    socket: S,
    session: rustls::ServerConnection,
}

impl<S: Read + Write> TlsStream<S> {
    /// Starts `session` on `socket`.
    pub fn new(socket: S, session: rustls::ServerConnection) -> TlsStream<S> {
        TlsStream { socket, session }
    }

    /// The socket.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// The socket, to register or shut down.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Whether TLS bytes wait for the socket to take them.
    pub fn pending(&self) -> bool {
        self.session.wants_write()
    }

    /// Sends what waits, as far as the socket takes it.
    pub fn send_pending(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Says the session ends (TLS's `close_notify`), after the data
    /// already written; sent with what waits.
    pub fn close(&mut self) {
        self.session.send_close_notify();
    }

    /// Sends what waits; a full socket is not an error here.
    fn send_some(&mut self) -> io::Result<()> {
        match self.send_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The client's TCP end came without TLS's close_notify: an
                // end of input all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext waits: read TLS records from the socket.
            match self.session.read_tls(&mut self.socket) {
                // Nothing came after the plaintext already read.
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.session.process_new_packets() {
                        // Tell the client why (an alert), as far as its
                        // socket takes it; then the session is over.
                        let _ = self.send_some();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // A handshake's replies, or a key update's.
                    self.send_some()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    /// Takes as much of `buf` as the session's send buffer has room for
    /// and sends what the socket takes; `WouldBlock` when neither takes
    /// anything.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.send_some()?;
        let taken = self.session.writer().write(buf)?;
        self.send_some()?;
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_some()
    }
}

#[cfg(test)]
mod tests;
