//! How far long work has got: the bytes and files under a directory being
//! filled (a restore, a backup, a download), and a [`Meter`] that work
//! which only reads (a verify) counts itself. The `rkv` CLI draws them as
//! progress bars; a follower's first bootstrap logs them.
//!
//! Measuring what has landed on disk, rather than asking RocksDB (whose
//! BackupEngine reports no byte counts through its C API), keeps the
//! figures honest: they are what an operator would see with `du`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes and files: done so far, or expected in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    /// Bytes.
    pub bytes: u64,
    /// Files.
    pub files: u64,
}

impl Amount {
    /// `self` less `baseline`, never below zero: what was added since.
    pub fn since(self, baseline: Amount) -> Amount {
        Amount {
            bytes: self.bytes.saturating_sub(baseline.bytes),
            files: self.files.saturating_sub(baseline.files),
        }
    }
}

/// The regular files under `dir`, recursively: their total size, and how
/// many are complete. A file still being written under a `.tmp` name (or in
/// a `.tmp` directory, as BackupEngine writes them) adds its bytes but is
/// not counted. A directory that is missing, or vanishes while walked,
/// counts as empty.
pub fn usage(dir: &Path) -> Amount {
    usage_within(dir, false)
}

fn usage_within(dir: &Path, temporary: bool) -> Amount {
    let mut total = Amount::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let temporary = temporary || entry.file_name().to_string_lossy().ends_with(".tmp");
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                let sub = usage_within(&entry.path(), temporary);
                total.bytes += sub.bytes;
                total.files += sub.files;
            }
            Ok(kind) if kind.is_file() => {
                total.files += u64::from(!temporary);
                total.bytes += entry.metadata().map_or(0, |m| m.len());
            }
            _ => {}
        }
    }
    total
}

/// The files directly in `dir`: their total size, and how many have
/// reached the size `expected` names for them (a restore writes files under
/// their final names, so only the size tells a finished one).
pub fn usage_against(dir: &Path, expected: &HashMap<String, u64>) -> Amount {
    let mut total = Amount::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_file() {
            total.bytes += meta.len();
            let name = entry.file_name().to_string_lossy().into_owned();
            total.files += u64::from(expected.get(&name) == Some(&meta.len()));
        }
    }
    total
}

/// A count that work adds to as it goes, read by whoever shows progress.
#[derive(Debug, Default)]
pub struct Meter {
    bytes: AtomicU64,
    files: AtomicU64,
}

impl Meter {
    /// One more file of `bytes` done.
    pub fn file_done(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// What is done so far.
    pub fn done(&self) -> Amount {
        Amount {
            bytes: self.bytes.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
        }
    }
}

/// Runs `work` while a thread logs, every `period`, how far it got
/// towards `total` as `done` measures it (with `extra` appended, when it
/// says anything): a long restore is visibly alive in the journal. Nothing
/// is logged when the work ends within the first period.
pub fn logged<T>(
    what: &str,
    total: Amount,
    period: std::time::Duration,
    done: impl Fn() -> Amount + Sync,
    extra: impl Fn() -> Option<String> + Sync,
    work: impl FnOnce() -> T,
) -> T {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let (done, extra) = (&done, &extra);
        scope.spawn(move || {
            let started = std::time::Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(period)
            {
                let done = done();
                let percent = (done.bytes * 100).checked_div(total.bytes).unwrap_or(0);
                let extra = extra().map(|e| format!(", {e}")).unwrap_or_default();
                tracing::info!(
                    bytes_done = done.bytes,
                    bytes_total = total.bytes,
                    "{what}: {} of {} ({percent}%), {} of {} files, {}s so far{extra}",
                    human(done.bytes),
                    human(total.bytes),
                    done.files.min(total.files),
                    total.files,
                    started.elapsed().as_secs(),
                );
            }
        });
        let result = work();
        drop(done_tx);
        result
    })
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `8.0 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_recursively_and_a_missing_dir_as_empty() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a"), [0u8; 10]).unwrap();
        fs::create_dir(tmp.path().join("sub")).unwrap();
        fs::write(tmp.path().join("sub/b"), [0u8; 5]).unwrap();
        let used = usage(tmp.path());
        assert_eq!(
            used,
            Amount {
                bytes: 15,
                files: 2
            }
        );
        assert_eq!(usage(&tmp.path().join("missing")), Amount::default());
        let baseline = Amount {
            bytes: 10,
            files: 3,
        };
        assert_eq!(used.since(baseline), Amount { bytes: 5, files: 0 });
    }

    #[test]
    fn files_being_written_are_not_counted_done() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("000009.sst.tmp"), [0u8; 4]).unwrap();
        fs::create_dir(tmp.path().join("3.tmp")).unwrap();
        fs::write(tmp.path().join("3.tmp/CURRENT"), [0u8; 2]).unwrap();
        fs::write(tmp.path().join("CURRENT"), [0u8; 1]).unwrap();
        assert_eq!(usage(tmp.path()), Amount { bytes: 7, files: 1 });
        let expected = HashMap::from([("CURRENT".to_string(), 16), ("000009.sst".into(), 4)]);
        fs::write(tmp.path().join("000009.sst"), [0u8; 4]).unwrap();
        // CURRENT is short of its 16 bytes: not done.
        assert_eq!(
            usage_against(tmp.path(), &expected),
            Amount { bytes: 9, files: 1 }
        );
    }

    #[test]
    fn human_uses_binary_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(8 << 20), "8.0 MiB");
    }

    #[test]
    fn a_meter_adds_up_what_work_reports() {
        let meter = Meter::default();
        meter.file_done(7);
        meter.file_done(3);
        assert_eq!(
            meter.done(),
            Amount {
                bytes: 10,
                files: 2
            }
        );
    }
}
