//! [`DaemonFile`]: the file a running daemon leaves in its directory, which
//! tells the `rkv` CLI which daemon owns it and where it listens.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::server::ListenAddr;

/// Whether process `pid` runs: it exists and has not exited (a child that
/// exited stays a zombie until its parent reaps it).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The file a running daemon leaves in its directory so that `rkv --db=DIR`
/// can reach it instead of failing on the database lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonFile {
    /// The daemon's process id.
    pub pid: u32,
    /// `master` or `follower`.
    pub role: String,
    /// Where it listens (`ListenAddr` spellings).
    pub listen: Vec<String>,
    /// Where it listens for TLS clients (`--tls-listen`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_listen: Vec<String>,
    /// Where it serves metrics (`--metrics-listen`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl DaemonFile {
    /// The file's name inside the database or data directory.
    pub const NAME: &'static str = "rkv-daemon.json";

    /// Writes the file into `dir` atomically (temp file, then rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{}.tmp", Self::NAME));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializes"))?;
        std::fs::rename(&tmp, dir.join(Self::NAME))
    }

    /// Removes the file from `dir`, if this process wrote it.
    pub fn remove(dir: &Path) {
        if let Some(file) = Self::read(dir) {
            if file.pid == std::process::id() {
                let _ = std::fs::remove_file(dir.join(Self::NAME));
            }
        }
    }

    /// Reads the file from `dir`.
    pub fn read(dir: &Path) -> Option<DaemonFile> {
        let bytes = std::fs::read(dir.join(Self::NAME)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits (up to `timeout`) for the file that process `pid` writes into
    /// `dir` once it listens, and returns it: how a script or a test that
    /// started a daemon on port 0 learns the address it got. `None` at the
    /// timeout, or as soon as the process is gone (a refused start).
    pub fn wait_for(dir: &Path, pid: u32, timeout: Duration) -> Option<DaemonFile> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(file) = Self::read(dir).filter(|f| f.pid == pid) {
                return Some(file);
            }
            if !running(pid) || std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first TCP address the file names, if any.
    pub fn tcp_addr(&self) -> Option<ListenAddr> {
        self.listen
            .iter()
            .filter_map(|a| a.parse::<ListenAddr>().ok())
            .find(|a| matches!(a, ListenAddr::Tcp(_)))
    }

    /// The file in `dir`, if the daemon that wrote it is still running.
    pub fn find_running(dir: &Path) -> Option<DaemonFile> {
        let file = Self::read(dir)?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(file.pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive.then_some(file)
    }
}
