//! What both daemons share around their work: logging set-up, the password
//! and protected-mode checks, systemd notification, signals, and the file
//! that tells the `rkv` CLI which daemon owns a directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use crate::resp::Limits;
use crate::server::tls::{AuthClients, Tls, TlsFiles};
use crate::server::users::Users;
use crate::server::{ListenAddr, ServerConfig};

mod config_error;
mod daemon_file;
pub use config_error::ConfigError;
pub use daemon_file::DaemonFile;

/// The flags both daemons share: access control, limits and logging.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The default user's password, for `AUTH PASSWORD`. Prefer
    /// --password-file: a flag is visible in the process list.
    #[arg(
        long,
        env = "RKV_REQUIREPASS",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub requirepass: Option<String>,

    /// File whose first line is the password clients must AUTH with.
    #[arg(long = "password-file", env = "RKV_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Users, in Redis's ACL file syntax: `user NAME on #<sha256 of the
    /// password> ~PATTERN… +@read|+@write|+@admin|+@all`, one per line
    /// (see the README). Re-read on SIGHUP and ACL LOAD. Without a
    /// `default` user in it (or --requirepass), clients must AUTH as a
    /// named user.
    #[arg(long, env = "RKV_ACLFILE", value_name = "FILE")]
    pub aclfile: Option<PathBuf>,

    /// Refuse a non-loopback listener that anyone could use (Redis's
    /// protected mode): --listen without a password or ACL users,
    /// --tls-listen without those or required client certificates,
    /// --metrics-listen without TLS client certificates; `no` allows it on
    /// a trusted network.
    #[arg(long = "protected-mode", env = "RKV_PROTECTED_MODE", default_value = "yes",
          value_parser = parse_yes_no, action = clap::ArgAction::Set, value_name = "yes|no")]
    pub protected_mode: bool,

    /// The most clients connected at once; more get an error.
    #[arg(
        long = "max-clients",
        env = "RKV_MAX_CLIENTS",
        default_value_t = 10_000
    )]
    pub max_clients: usize,

    /// The largest request accepted, in bytes (suffixes KiB, MiB, GiB);
    /// larger ones get an error and the connection is closed.
    #[arg(long = "max-request-bytes", env = "RKV_MAX_REQUEST_BYTES", default_value = "64MiB",
          value_parser = parse_size)]
    pub max_request_bytes: usize,

    /// The largest reply to one request, in bytes (suffixes KiB, MiB, GiB):
    /// an MGET whose values add up to more is refused with an error, and a
    /// SCAN returns fewer keys. Bounds what one client can make the server
    /// hold.
    #[arg(long = "max-reply-bytes", env = "RKV_MAX_REPLY_BYTES", default_value = "128MiB",
          value_parser = parse_size)]
    pub max_reply_bytes: usize,

    /// Memory for RocksDB's cache of data blocks, shared by every database
    /// the daemon opens (suffixes KiB, MiB, GiB). Reads of cached blocks skip
    /// the page cache and decompression.
    #[arg(long = "cache-size", env = "RKV_CACHE_SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub cache_size: usize,

    /// The permission bits new files and directories do not get, in octal:
    /// 077 keeps the database, backups and data private to the daemon's
    /// user whatever the shell's umask; 027 lets the group read them (how
    /// followers running as another user of the group read the backup
    /// directory; the systemd units set it).
    #[arg(long, env = "RKV_UMASK", default_value = "077", value_parser = parse_umask, value_name = "OCTAL")]
    pub umask: u32,

    /// Serve Prometheus metrics on http://ADDR/metrics and health on
    /// /healthz (200, or 503 with the reason). Off by default; a
    /// non-loopback address needs --protected-mode=no (the endpoint has no
    /// password).
    #[arg(
        long = "metrics-listen",
        env = "RKV_METRICS_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Serve the metrics endpoint over HTTPS, with the TLS certificate of
    /// --tls-cert-file and its demand for client certificates
    /// (--tls-auth-clients); reloaded with it on SIGHUP. With client
    /// certificates required, a non-loopback --metrics-listen counts as
    /// protected.
    #[arg(long = "metrics-tls", env = "RKV_METRICS_TLS")]
    pub metrics_tls: bool,

    /// Serve TLS on HOST:PORT or unix:/path (Redis's tls-port), beside or
    /// instead of --listen; repeat for several (comma-separated in the
    /// environment variable). Needs --tls-cert-file and --tls-key-file.
    #[arg(
        long = "tls-listen",
        env = "RKV_TLS_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub tls_listen: Vec<ListenAddr>,

    /// The server's certificate chain, PEM, leaf first (Redis's
    /// tls-cert-file). Re-read on SIGHUP: new connections get the new
    /// certificate, open ones keep theirs.
    #[arg(long = "tls-cert-file", env = "RKV_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The certificate's private key, PEM (Redis's tls-key-file); re-read
    /// on SIGHUP.
    #[arg(long = "tls-key-file", env = "RKV_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificates, PEM, that client certificates must chain to
    /// (Redis's tls-ca-cert-file); re-read on SIGHUP. Given, clients must
    /// present one unless --tls-auth-clients says otherwise.
    #[arg(
        long = "tls-ca-cert-file",
        env = "RKV_TLS_CA_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_ca_cert_file: Option<PathBuf>,

    /// Whether TLS clients must present a certificate signed by
    /// --tls-ca-cert-file: yes, optional (checked when given) or no.
    /// Default: yes with --tls-ca-cert-file, no without. A TLS listener that
    /// requires client certificates counts as protected (--protected-mode).
    #[arg(
        long = "tls-auth-clients",
        env = "RKV_TLS_AUTH_CLIENTS",
        value_enum,
        value_name = "yes|no|optional"
    )]
    pub tls_auth_clients: Option<AuthClients>,

    /// Log format.
    #[arg(
        long = "log-format",
        env = "RKV_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl ServerArgs {
    /// The server's configuration for `listen`: reads the password and
    /// applies protected mode; the error is a sentence for the operator.
    pub fn server_config(&self, listen: Vec<ListenAddr>) -> Result<ServerConfig, ConfigError> {
        let password = load_password(self.requirepass.as_deref(), self.password_file.as_deref())?;
        let from_environment = std::env::var("RKV_REQUIREPASS").ok() == self.requirepass;
        if self.requirepass.is_some() && !from_environment {
            eprintln!(
                "warning: --requirepass on the command line is visible to every local user \
                 (ps, /proc); use --password-file or RKV_REQUIREPASS instead"
            );
        }
        let users = Users::load(self.aclfile.as_deref(), password.as_deref())
            .map_err(|e| ConfigError::Password(e.to_string()))?;
        let protected = !users.open_to_anyone();
        let tls = self.tls()?;
        if listen.is_empty() && self.tls_listen.is_empty() {
            return Err(ConfigError::Flag(
                "--listen none leaves nothing to listen on; give --tls-listen ADDR too".into(),
            ));
        }
        let client_certs = tls.as_ref().is_some_and(|t| t.requires_client_certs());
        check_protected_mode(&listen, protected, self.protected_mode)?;
        check_protected_mode(
            &self.tls_listen,
            protected || client_certs,
            self.protected_mode,
        )?;
        if self.metrics_tls && (tls.is_none() || self.metrics_listen.is_none()) {
            return Err(ConfigError::Flag(
                "--metrics-tls needs --metrics-listen and the TLS certificate (--tls-listen, \
                 --tls-cert-file, --tls-key-file)"
                    .into(),
            ));
        }
        if let Some(addr) = self.metrics_listen.filter(|a| !a.ip().is_loopback()) {
            if self.protected_mode && !(self.metrics_tls && client_certs) {
                return Err(ConfigError::Unprotected(format!(
                    "refusing to serve metrics on {addr} (protected mode): the metrics endpoint \
                     has no password. Listen on a loopback address, serve it over TLS with \
                     client certificates required (--metrics-tls, --tls-ca-cert-file), or pass \
                     --protected-mode=no if the network is trusted"
                )));
            }
        }
        if self.max_clients == 0 {
            return Err(ConfigError::Flag("--max-clients must be at least 1".into()));
        }
        Ok(ServerConfig {
            listen,
            tls_listen: self.tls_listen.clone(),
            tls,
            metrics_listen: self.metrics_listen,
            metrics_tls: self.metrics_tls,
            requirepass: password,
            aclfile: self.aclfile.clone(),
            users,
            max_clients: self.max_clients,
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_reply_bytes: self.max_reply_bytes,
            },
        })
    }

    /// The TLS files, read once here so a bad one stops the start with a
    /// sentence naming it; `None` when nothing is served over TLS.
    fn tls(&self) -> Result<Option<std::sync::Arc<Tls>>, ConfigError> {
        let files =
            match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert), Some(key)) => TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: self.tls_ca_cert_file.clone(),
                    auth_clients: self
                        .tls_auth_clients
                        .unwrap_or(match self.tls_ca_cert_file {
                            Some(_) => AuthClients::Yes,
                            None => AuthClients::No,
                        }),
                },
                (None, None) if self.tls_listen.is_empty() => {
                    if self.tls_ca_cert_file.is_some() || self.tls_auth_clients.is_some() {
                        return Err(ConfigError::Flag(
                            "--tls-ca-cert-file and --tls-auth-clients need --tls-listen, \
                         --tls-cert-file and --tls-key-file"
                                .into(),
                        ));
                    }
                    return Ok(None);
                }
                _ => return Err(ConfigError::Flag(
                    "TLS needs both --tls-cert-file and --tls-key-file (and --tls-listen ADDR to \
                     serve it on)"
                        .into(),
                )),
            };
        if self.tls_listen.is_empty() {
            return Err(ConfigError::Flag(
                "--tls-cert-file is set but nothing is served over TLS: give --tls-listen ADDR"
                    .into(),
            ));
        }
        Tls::load(files)
            .map(|tls| Some(std::sync::Arc::new(tls)))
            .map_err(|e| ConfigError::Tls(e.to_string()))
    }
}

/// A daemon's `main`: validates its configuration (exit 2 with the sentence
/// on failure), sets the umask, starts logging, runs it, and turns the
/// outcome into an exit code (0 clean stop, 1 failure, with a `Try:` line
/// where one helps).
pub fn daemon_main<C>(
    name: &str,
    log_format: LogFormat,
    umask: u32,
    config: Result<C, ConfigError>,
    run: impl FnOnce(C) -> anyhow::Result<()>,
) -> ExitCode {
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{name}: error: {message}");
            return ExitCode::from(2);
        }
    };
    set_umask(umask);
    init_logging(log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {}", crate::error::Report(e.as_ref()));
            if let Some(hint) = e
                .downcast_ref::<crate::Error>()
                .and_then(crate::Error::hint)
            {
                eprintln!("Try: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Sets the process's umask: what every file and directory rkv creates
/// (RocksDB's included) does not get.
pub fn set_umask(mask: u32) {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask((mask & 0o777) as libc::mode_t) };
}

/// Parses an octal umask (`077`, `0027`).
pub fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal umask (e.g. 077 or 027)"))
}

/// Accepts yes/no, true/false, on/off, 1/0.
pub fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not yes or no")),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; no timestamps or colour under journald.
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts logging to stderr. `RKV_LOG` (a tracing filter, e.g. `debug` or
/// `rkv=debug`) overrides the default level, `info`. The object store
/// client's own lines (each retry) are shown from `warn` unless `RKV_LOG`
/// names `object_store`: rkv reports a failed request itself, once.
pub fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("RKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !std::env::var("RKV_LOG").is_ok_and(|v| v.contains("object_store")) {
        filter = filter.add_directive("object_store=warn".parse().expect("a valid directive"));
    }
    // journald adds its own timestamps and shows escape codes verbatim.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match (format, under_journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// The password clients must give, from `--requirepass` or `--password-file`
/// (first line, surrounding whitespace trimmed).
pub fn load_password(
    requirepass: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    match (requirepass, password_file) {
        (Some(_), Some(_)) => Err(ConfigError::Password(
            "give either --requirepass or --password-file, not both".into(),
        )),
        (Some(""), None) => Err(ConfigError::Password(
            "--requirepass is empty; give a password".into(),
        )),
        (Some(p), None) => Ok(Some(p.as_bytes().to_vec())),
        (None, Some(path)) => {
            let text = read_private(path, "password file", "600").map_err(ConfigError::Password)?;
            let password = text.lines().next().unwrap_or("").trim();
            if password.is_empty() {
                return Err(ConfigError::Password(format!(
                    "the password file {} is empty",
                    path.display()
                )));
            }
            Ok(Some(password.as_bytes().to_vec()))
        }
        (None, None) => Ok(None),
    }
}

/// The text of a file that holds secrets (`what` it is), refused when every
/// user may read it; the error says to `chmod MODE` it.
pub fn read_private(path: &Path, what: &str, mode: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e: std::io::Error| format!("cannot read the {what} {}: {e}", path.display());
    let bits = std::fs::metadata(path)
        .map_err(cannot)?
        .permissions()
        .mode();
    if bits & 0o007 != 0 {
        return Err(format!(
            "the {what} {} can be read by every user (mode {:o}); make it private: chmod {mode} \
             {0}",
            path.display(),
            bits & 0o777
        ));
    }
    std::fs::read_to_string(path).map_err(cannot)
}

/// Redis's protected mode: listening beyond this machine without a password
/// is refused unless explicitly allowed.
pub fn check_protected_mode(
    listen: &[ListenAddr],
    has_password: bool,
    protected_mode: bool,
) -> Result<(), ConfigError> {
    if has_password || !protected_mode {
        return Ok(());
    }
    match listen.iter().find(|a| !a.is_local()) {
        Some(addr) => Err(ConfigError::Unprotected(format!(
            "refusing to listen on {addr} without a password (protected mode): anyone who can \
             reach it could read the data. Set --requirepass, --password-file or --aclfile \
             (without an open default user), serve TLS with client certificates required \
             (--tls-listen with --tls-ca-cert-file), listen on a loopback address, or pass \
             --protected-mode=no if the network is trusted"
        ))),
        None => Ok(()),
    }
}

/// Parses a byte size: `1048576`, `64KiB`, `64MiB`, `1GiB`, `512kb`, `64m`…
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1048576, 512KiB, 64MiB, 1GiB)"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use KiB, MiB or GiB)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration as humantime does (`10s`, `1h 30m`, `250ms`); `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration (e.g. 10s, 5m, 1h): {e}"))
}

/// Makes `path` absolute and resolves symlinks as far as it exists, so two
/// spellings of one directory compare equal even before it is created.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// systemd notification; every call does nothing outside systemd.
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to ping the watchdog (half its timeout), if it is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|t| t / 2)
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// Leaves the [`DaemonFile`] in `dir` so `rkv --db=DIR` finds the daemon;
/// returns the addresses it listens on.
pub fn announce(dir: &Path, role: &str, server: &crate::server::Server) -> Vec<String> {
    let spell = |addrs: &[ListenAddr]| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let file = DaemonFile {
        pid: std::process::id(),
        role: role.to_string(),
        listen: spell(server.local_addrs()),
        tls_listen: spell(server.tls_addrs()),
        metrics: server.metrics_addr().map(|a| a.to_string()),
    };
    let listen = file
        .listen
        .iter()
        .cloned()
        .chain(file.tls_listen.iter().map(|a| format!("{a} (TLS)")))
        .collect();
    if let Err(e) = file.write(dir) {
        tracing::warn!(
            "cannot write {} (rkv --db will not find this daemon): {e}",
            DaemonFile::NAME
        );
    }
    listen
}

/// SIGHUP: re-reads the server's ACL file and TLS files; a failure keeps
/// what is in use, and says why.
pub fn reload(server: &crate::server::Server) {
    tracing::info!("SIGHUP: reloading");
    if let Err(e) = server.reload() {
        tracing::error!(error = %e, "the reload failed; what was in use stays in use");
    }
}

/// A daemon's main loop: returns at SIGTERM/SIGINT. Every second (or half
/// the watchdog timeout, if shorter) it runs `tick`, pings the watchdog, and
/// sends `status()` to systemd when it changed. SIGUSR1 runs `on_user1`,
/// SIGHUP `on_hangup`.
pub fn serve_until_terminated(
    signals: &mpsc::Receiver<Signal>,
    notifier: &Notifier,
    mut on_user1: impl FnMut(),
    mut on_hangup: impl FnMut(),
    mut tick: impl FnMut(),
    status: impl Fn() -> String,
) {
    let period = notifier
        .watchdog_interval()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut last_status = String::new();
    loop {
        match signals.recv_timeout(period) {
            Ok(Signal::Terminate) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Signal::User1) => on_user1(),
            Ok(Signal::Hangup) => on_hangup(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        tick();
        notifier.watchdog();
        let now = status();
        if now != last_status {
            notifier.status(&now);
            last_status = now;
        }
    }
}

/// A signal the daemons act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: shut down cleanly.
    Terminate,
    /// SIGUSR1: the master backs up now.
    User1,
    /// SIGHUP: re-read the ACL file and the TLS files.
    Hangup,
}

/// Starts a thread that turns signals into messages. A second SIGTERM or
/// SIGINT exits the process at once (exit code 1): the operator's way to cut
/// a slow shutdown short.
pub fn watch_signals() -> std::io::Result<mpsc::Receiver<Signal>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("rkv-signals".into())
        .spawn(move || {
            let mut terminating = false;
            for signal in signals.forever() {
                let message = match signal {
                    SIGTERM | SIGINT if terminating => {
                        tracing::warn!("second termination signal: exiting now");
                        std::process::exit(1);
                    }
                    SIGTERM | SIGINT => {
                        terminating = true;
                        Signal::Terminate
                    }
                    SIGUSR1 => Signal::User1,
                    _ => Signal::Hangup,
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests;
