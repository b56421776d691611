//! Flag sets the tests and the fault suite both pass a follower, and what
//! they look for in its data directory.

use std::path::Path;

/// A follower's flags for a slow restore: 1 MiB/s, one file at a time
/// (polling every 100 ms), so a restore in progress can be watched, and
/// raced.
pub const SLOW_RESTORE: [&str; 6] = [
    "--poll-interval",
    "100ms",
    "--restore-rate-limit",
    "1MiB",
    "--restore-threads",
    "1",
];

/// A follower's flags to refuse reads once its data is 3 s stale
/// (polling every 100 ms).
pub const REFUSE_AFTER_3S: [&str; 6] = [
    "--poll-interval",
    "100ms",
    "--max-staleness",
    "3s",
    "--stale-reads",
    "refuse",
];

/// How many half-applied generations (`*.partial`) a follower's data
/// directory holds.
pub fn partials(data: &Path) -> usize {
    std::fs::read_dir(data).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count()
    })
}
