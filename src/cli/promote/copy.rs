//! The copy `rkv promote` makes of a follower's generation: made beside
//! the target (SST files hard-linked), opened read-write to check it, and
//! renamed into place.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::db::{Db, OpenMode};
use crate::error::Error;

/// Where the copy is made before it is renamed to `db`: beside it, so the
/// rename stays on one filesystem.
pub(super) fn staging_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map_or_else(|| "db".into(), |n| n.to_string_lossy().into_owned());
    db.with_file_name(format!(".{name}.promoting"))
}

/// What [`copy_generation`] did.
#[derive(Debug, Default)]
pub(super) struct Copied {
    pub(super) linked_files: u64,
    pub(super) linked_bytes: u64,
    pub(super) copied_files: u64,
    pub(super) copied_bytes: u64,
}

/// Copies the generation's database files into `to` (created afresh): SST
/// and blob files as hard links where possible, the rest (the MANIFEST,
/// CURRENT and OPTIONS, which RocksDB rewrites) as copies. Run as root, the
/// copies keep their owner, so the service user can open them.
pub(super) fn copy_generation(from: &Path, to: &Path) -> Result<Copied, CliError> {
    let io_err = |what: String| move |e| Error::io(what, e);
    if to.exists() {
        fs::remove_dir_all(to).map_err(io_err(format!("remove the leftover {}", to.display())))?;
    }
    fs::create_dir_all(to).map_err(io_err(format!("create {}", to.display())))?;
    keep_owner(from, to)?;
    let mut copied = Copied::default();
    let entries = fs::read_dir(from).map_err(io_err(format!("read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("read {}", from.display())))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let kind = entry
            .file_type()
            .map_err(io_err(format!("stat {}", entry.path().display())))?;
        if !kind.is_file()
            || name_str == crate::follower::GENERATION_INFO
            || name_str == "LOCK"
            || name_str.starts_with("LOG")
        {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        let size = entry
            .metadata()
            .map_err(io_err(format!("stat {}", source.display())))?
            .len();
        let immutable = name_str.ends_with(".sst") || name_str.ends_with(".blob");
        if immutable && fs::hard_link(&source, &target).is_ok() {
            copied.linked_files += 1;
            copied.linked_bytes += size;
            continue;
        }
        fs::copy(&source, &target).map_err(io_err(format!(
            "copy {} to {}",
            source.display(),
            target.display()
        )))?;
        fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(io_err(format!("sync {}", target.display())))?;
        keep_owner(&source, &target)?;
        copied.copied_files += 1;
        copied.copied_bytes += size;
    }
    Ok(copied)
}

/// Gives `to` the owner of `from` when running as root (a copy made by
/// root would otherwise be root's, and the service could not open it).
fn keep_owner(from: &Path, to: &Path) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let meta = fs::metadata(from).map_err(|e| Error::io(format!("stat {}", from.display()), e))?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| Error::io(format!("chown {}", to.display()), e).into())
}

/// What the promoted database says of itself once opened read-write.
pub(super) struct Opened {
    pub(super) db_id: Option<String>,
    pub(super) seq: u64,
}

/// Opens the copy read-write, as the master will, and closes it again.
pub(super) fn check_opens(dir: &Path) -> Result<Opened, CliError> {
    let db = Db::open(
        dir,
        OpenMode::ReadWrite {
            create_if_missing: false,
        },
    )?;
    let opened = Opened {
        db_id: db.identity(),
        seq: db.latest_sequence_number(),
    };
    drop(db);
    // Files RocksDB made at the open (LOG) belong to root, if root ran this.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            keep_owner(dir, &entry.path())?;
        }
    }
    Ok(opened)
}

/// Renames the checked copy to `db` (an empty directory there is replaced)
/// and makes the rename durable.
pub(super) fn publish(staged: &Path, db: &Path) -> Result<(), CliError> {
    if db.exists() {
        fs::remove_dir(db).map_err(|e| Error::io(format!("replace {}", db.display()), e))?;
    }
    fs::rename(staged, db).map_err(|e| {
        Error::io(
            format!("rename {} to {}", staged.display(), db.display()),
            e,
        )
    })?;
    let parent = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync {}", parent.display()), e).into())
}
