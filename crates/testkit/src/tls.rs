//! A private CA and the certificates it signs, made with the `openssl`
//! commands the README shows: a server certificate for 127.0.0.1 and
//! localhost, client certificates, and a second CA that the daemons do not
//! trust (for the certificates they must refuse).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `openssl req` with a new P-256 key, unencrypted: the README's keys.
const NEW_KEY: &[&str] = &[
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A CA's files in a directory: `NAME.crt` and `NAME.key` for each
/// certificate, the CA's own as `ca.crt` and `ca.key`.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a CA in `dir` (created), with a server certificate
    /// (`server.crt`, `server.key`) and a client certificate (`client.crt`,
    /// `client.key`).
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("create the PKI directory");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        openssl(
            dir,
            &[
                NEW_KEY,
                &[
                    "-x509",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=rkv test CA",
                ],
            ]
            .concat(),
        );
        pki.issue("server", "rkv", Usage::Server);
        pki.issue("client", "app", Usage::Client);
        pki
    }

    /// Signs a new certificate `NAME.crt` (key `NAME.key`) with this CA.
    pub fn issue(&self, name: &str, common_name: &str, usage: Usage) {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            &self.dir,
            &[
                NEW_KEY,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={common_name}"),
                ],
            ]
            .concat(),
        );
        let extensions = match usage {
            Usage::Server => {
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            }
            Usage::Client => "extendedKeyUsage=clientAuth\n",
        };
        std::fs::write(
            self.dir.join(&ext),
            format!("{extensions}basicConstraints=CA:FALSE\n"),
        )
        .expect("write the extensions");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "825",
                "-extfile",
                &ext,
            ],
        );
    }

    /// The file `NAME` in the CA's directory (`ca.crt`, `server.key`…).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A daemon's flags for this CA's server certificate, and, when
    /// `client_certs`, for requiring client certificates it signed.
    pub fn daemon_flags(&self, client_certs: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert-file".to_string(),
            self.file("server.crt").display().to_string(),
            "--tls-key-file".into(),
            self.file("server.key").display().to_string(),
        ];
        if client_certs {
            flags.extend(["--tls-ca-cert-file".into(), self.ca().display().to_string()]);
        }
        flags
    }

    /// A TLS client's configuration that trusts this CA and presents
    /// `NAME.crt` (with `NAME.key`) when `cert` is given.
    pub fn client_config(&self, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.ca()).expect("the CA certificate"))
            .expect("a CA certificate rustls takes");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default versions")
            .with_root_certificates(roots);
        Arc::new(match cert {
            Some(name) => builder
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from_pem_file(self.file(&format!("{name}.crt")))
                            .expect("the client certificate"),
                    ],
                    PrivateKeyDer::from_pem_file(self.file(&format!("{name}.key")))
                        .expect("the client key"),
                )
                .expect("a certificate and its key"),
            None => builder.with_no_client_auth(),
        })
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy)]
pub enum Usage {
    /// A daemon's, for 127.0.0.1 and localhost.
    Server,
    /// A client's.
    Client,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (the tests need it: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
