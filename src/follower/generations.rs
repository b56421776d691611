//! The follower's data directory: one RocksDB directory per applied backup
//! (a generation), the `current` symlink that is the single commit point,
//! and the `LOCK` that keeps a second follower out.
//!
//! ```text
//! <data>/
//!   gen-000123/            the generation `current` names (serving)
//!   gen-000124.partial/    a restore in progress
//!   current -> gen-000123
//!   LOCK                   flock held by the running follower
//! ```
//!
//! A new generation starts as hard links to the serving generation's SST
//! files (immutable in RocksDB, so sharing them is safe), then the restore
//! keeps the ones the backup still has and copies only what changed. Disk use
//! stays near one database plus the change, and no step writes into a
//! directory a reader has open.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The commit point: a symlink to the serving generation.
const CURRENT: &str = "current";
/// The lock file a running follower holds.
const LOCK: &str = "LOCK";
const PARTIAL: &str = ".partial";

/// A follower's data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held open for the follower's lifetime: the flock lives with it.
    _lock: Option<fs::File>,
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another rkv-follower is already using {path}{pid}; stop it, or give this one its own --data directory",
        pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy {
        /// The data directory.
        path: PathBuf,
        /// The holder, when its daemon file names it.
        pid: Option<u32>,
    },
    /// The directory cannot be created or locked.
    #[error("cannot use {path} as the follower's data directory: {source}")]
    Io {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl DataDir {
    /// Creates `path` if needed and takes its lock.
    pub fn lock(path: &Path) -> Result<DataDir, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(io)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDir {
                path: path.to_path_buf(),
                _lock: Some(file),
            }),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::Busy {
                path: path.to_path_buf(),
                pid: crate::daemon::DaemonFile::read(path).map(|f| f.pid),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// A view of `path` without its lock, for readers such as the CLI.
    pub fn unlocked(path: &Path) -> DataDir {
        DataDir {
            path: path.to_path_buf(),
            _lock: None,
        }
    }

    /// Whether `path` looks like a follower's data directory.
    pub fn is_data_dir(path: &Path) -> bool {
        fs::symlink_metadata(path.join(CURRENT)).is_ok_and(|m| m.file_type().is_symlink())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup id and path of the serving generation, if any.
    pub fn current(&self) -> Option<(u32, PathBuf)> {
        let target = fs::read_link(self.path.join(CURRENT)).ok()?;
        let id = parse_generation(target.file_name()?.to_str()?)?;
        let path = self.path.join(&target);
        path.is_dir().then_some((id, path))
    }

    /// Starts a generation of backup `id`: an empty partial directory holding
    /// hard links to the SST files of `base` (the serving generation), if
    /// given. It is named `gen-<id>`, or `gen-<id>-<n>` when a generation of
    /// that id is still there (a backup directory that was replaced reuses
    /// ids). A leftover partial of that name from a crash is discarded first.
    pub fn start(&self, id: u32, base: Option<&Path>) -> Result<PathBuf> {
        let name = (0..)
            .map(|n| match n {
                0 => format!("gen-{id:06}"),
                n => format!("gen-{id:06}-{n}"),
            })
            .find(|name| !self.path.join(name).exists())
            .expect("some generation name is free");
        let partial = self.path.join(format!("{name}{PARTIAL}"));
        let io = |what: &str, e| Error::io(format!("{what} {}", partial.display()), e);
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| io("remove the leftover", e))?;
        }
        fs::create_dir(&partial).map_err(|e| io("create", e))?;
        if let Some(base) = base {
            let entries =
                fs::read_dir(base).map_err(|e| Error::io(format!("read {}", base.display()), e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().ends_with(".sst") {
                    continue;
                }
                match fs::hard_link(entry.path(), partial.join(&name)) {
                    Ok(()) => {}
                    // A generation the log is applied to compacts: a file
                    // may go between the listing and the link. The restore
                    // copies whatever the backup needs of it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("link an SST file into", e)),
                }
            }
        }
        Ok(partial)
    }

    /// Renames a restored partial generation to its final name: complete,
    /// but not serving until [`DataDir::publish`]. Returns its path.
    pub fn finish(&self, partial: &Path) -> Result<PathBuf> {
        let done = finished_path(partial);
        fs::rename(partial, &done).map_err(|e| {
            Error::io(
                format!("rename {} to {}", partial.display(), done.display()),
                e,
            )
        })?;
        Ok(done)
    }

    /// Removes what a failed apply left: the partial and, if it got that
    /// far, the finished generation (which was never published).
    pub fn discard(&self, partial: &Path) {
        for dir in [partial.to_path_buf(), finished_path(partial)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove {}", dir.display()),
            }
        }
    }

    /// Makes the generation at `generation` the one `current` names: a new
    /// symlink renamed over the old one, so `current` always names a
    /// complete generation.
    pub fn publish(&self, generation: &Path) -> Result<()> {
        let name = generation
            .file_name()
            .ok_or_else(|| Error::io("publish", io::Error::other("no generation name")))?;
        let tmp = self.path.join(format!(".{CURRENT}.tmp"));
        let current = self.path.join(CURRENT);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        sync_dir(&self.path)?;
        fs::rename(&tmp, &current)
            .map_err(|e| Error::io(format!("replace {}", current.display()), e))?;
        sync_dir(&self.path)
    }

    /// Removes every generation and partial except those at `keep`:
    /// leftovers of crashes and generations no reader uses any more.
    pub fn remove_except(&self, keep: &[&Path]) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_generation = parse_generation(name.trim_end_matches(PARTIAL)).is_some();
            let kept = keep
                .iter()
                .any(|k| k.file_name() == Some(entry.file_name().as_os_str()));
            if is_generation && (!kept || name.ends_with(PARTIAL)) {
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    tracing::warn!(error = %e, "cannot remove {}", entry.path().display());
                }
            }
        }
    }
}

/// `…/gen-000123.partial` → `…/gen-000123`.
fn finished_path(partial: &Path) -> PathBuf {
    let name = partial.file_name().unwrap_or_default().to_string_lossy();
    partial.with_file_name(name.trim_end_matches(PARTIAL))
}

/// `gen-000123` (or `gen-000123-2`) → 123.
fn parse_generation(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("gen-")?;
    let (digits, suffix) = rest.split_once('-').unwrap_or((rest, "1"));
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(digits) && numeric(suffix)).then(|| digits.parse().ok())?
}

/// Makes renames and new links in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("sync {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn commit_moves_current_and_links_share_inodes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::lock(tmp.path()).unwrap();
        assert_eq!(data.current(), None);
        let first = data.start(1, None).unwrap();
        fs::write(first.join("000007.sst"), b"sst").unwrap();
        fs::write(first.join("MANIFEST-000001"), b"m").unwrap();
        let gen1 = data.finish(&first).unwrap();
        assert_eq!(data.current(), None, "finished is not yet serving");
        data.publish(&gen1).unwrap();
        assert_eq!(data.current(), Some((1, gen1.clone())));
        assert!(DataDir::is_data_dir(tmp.path()));

        let second = data.start(2, Some(&gen1)).unwrap();
        assert!(
            !second.join("MANIFEST-000001").exists(),
            "only SST files are shared"
        );
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&second.join("000007.sst")),
            ino(&gen1.join("000007.sst"))
        );
        let gen2 = data.finish(&second).unwrap();
        data.publish(&gen2).unwrap();
        assert_eq!(data.current(), Some((2, gen2.clone())));

        fs::create_dir(tmp.path().join("gen-000009.partial")).unwrap();
        data.remove_except(&[&gen2]);
        assert!(!gen1.exists() && !tmp.path().join("gen-000009.partial").exists());
        assert!(gen2.exists());
    }

    #[test]
    fn a_reused_id_gets_its_own_directory_and_a_failed_apply_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::lock(tmp.path()).unwrap();
        let gen3 = data.finish(&data.start(3, None).unwrap()).unwrap();
        data.publish(&gen3).unwrap();
        // A replaced backup directory brings another backup 3.
        let again = data.start(3, Some(&gen3)).unwrap();
        assert_eq!(again.file_name().unwrap(), "gen-000003-1.partial");
        let other = data.finish(&again).unwrap();
        data.publish(&other).unwrap();
        assert_eq!(data.current(), Some((3, other.clone())));
        assert!(gen3.exists(), "the previous generation 3 is untouched");

        let failed = data.start(4, Some(&other)).unwrap();
        data.discard(&failed);
        let finished = data.finish(&data.start(5, None).unwrap()).unwrap();
        data.discard(&tmp.path().join("gen-000005.partial"));
        assert!(!failed.exists() && !finished.exists());
    }

    #[test]
    fn a_second_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::lock(tmp.path()).unwrap();
        assert!(matches!(
            DataDir::lock(tmp.path()),
            Err(LockError::Busy { .. })
        ));
    }

    #[test]
    fn parses_generation_names() {
        assert_eq!(parse_generation("gen-000123"), Some(123));
        assert_eq!(parse_generation("gen-000123-2"), Some(123));
        assert_eq!(parse_generation("gen-000123-x"), None);
        assert_eq!(parse_generation("gen-"), None);
        assert_eq!(parse_generation("gen-12a"), None);
        assert_eq!(parse_generation("current"), None);
    }
}
