//! What the tests, the benchmark and the fault suite do with the processes
//! they start: find rkv's binaries, read their CPU time and memory, stop
//! them.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// rkv's binary `name` (`rkv`, `rkv-master`, `rkv-follower`): in
/// `RKV_BIN_DIR` when set, else beside the running binary (cargo builds the
/// workspace's binaries into one directory; a test binary runs from its
/// `deps/` sub-directory).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RKV_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("the running binary's path");
    let mut dir = exe.parent().expect("the running binary's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("the target directory");
    }
    dir.join(name)
}

/// CPU time (user + system) process `pid` used so far; zero once it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces and
    // parentheses): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// SIGTERM, then waits up to `grace` for the exit; kill -9 after it.
/// Returns the exit status when the process stopped by itself.
pub fn terminate(mut child: Child, grace: Duration) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Peak resident memory of process `pid` so far (VmHWM), in MiB; NaN once
/// it is gone.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM").map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// A field of /proc/PID/status counted in kB (`VmRSS`, `VmHWM`…), in KiB;
/// `None` once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
