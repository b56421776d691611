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
