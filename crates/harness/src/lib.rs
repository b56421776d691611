//! What the benchmark (`rkv-bench`) and the fault suite (`rkv-faults`)
//! share beyond the test support crate: the flags every run takes.

use std::path::PathBuf;

/// How a harness run is sized and where it writes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Small sizes, few tries and short runs (minutes): proves that every
    /// scenario works, not the figures the full run reports.
    #[arg(long)]
    pub quick: bool,
    /// Where the report (markdown) and its plots go.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Where the scratch directories go (default: a temp dir).
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// A file of the repository the harness runs from: under `RKV_REPO`
/// (which `scripts/bench.sh` and `scripts/faults.sh` set to their checkout),
/// else where this binary was built. A binary built in another checkout
/// would otherwise read that checkout's scripts and analysis.
pub fn repo_file(relative: &str) -> PathBuf {
    let root = std::env::var_os("RKV_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")));
    root.join(relative)
}

/// Raises this process's open-file limit to its hard limit (for floods
/// of clients; the daemons it starts inherit it), and returns it.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur
    }
}
