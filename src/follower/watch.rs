//! The watch on the backup directory: a wake-up for the apply loop when a
//! backup or heartbeat may have arrived, and nothing else.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// A filesystem watch on the directories the backup store names (for a
/// directory store: `meta/`, where a complete backup appears as a renamed
/// file, the directory itself, where the heartbeat is renamed into place,
/// and `log/`, where each log segment is linked into place). Each is
/// watched once it exists: a store without a log never has `log/`, and a
/// new store gains `meta/` with its first backup (an event in the
/// directory itself, which wakes the follower to look again).
pub(super) struct MetaWatcher {
    paths: Vec<PathBuf>,
    watched: Vec<PathBuf>,
    wake: mpsc::Sender<Wake>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The watcher could not be made: polling alone finds news.
    unavailable: bool,
}

/// What woke the apply loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Log segments, and nothing else: stepping the log is enough.
    Log,
    /// Anything else: a backup, the heartbeat, a directory that appeared,
    /// the stop.
    Store,
}

/// What a news `event` wakes the loop for: [`Wake::Log`] when every path
/// it names is in `log_dir`.
fn wake_for(event: &notify::Event, log_dir: Option<&Path>) -> Wake {
    let in_log = |p: &PathBuf| log_dir.is_some_and(|dir| p.parent() == Some(dir));
    if !event.paths.is_empty() && event.paths.iter().all(in_log) {
        Wake::Log
    } else {
        Wake::Store
    }
}

/// Whether a filesystem event can mean a new backup, segment or heartbeat:
/// a file created or renamed. Opens and reads are not: the follower's own
/// listing of `meta/` is one, and waking on it would make an idle follower
/// poll itself in a loop. Nor is a dot-file appearing: BackupEngine's
/// `meta/.<id>.tmp`, a segment's and the heartbeat's temporary files are
/// written first and put in place under their names, and only that is news.
fn is_news(event: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    let kind = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    let hidden = |p: &std::path::PathBuf| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    kind && (event.paths.is_empty() || !event.paths.iter().all(hidden))
}

impl MetaWatcher {
    pub(super) fn new(paths: Vec<PathBuf>, wake: mpsc::Sender<Wake>) -> MetaWatcher {
        let mut watcher = MetaWatcher {
            paths,
            watched: Vec::new(),
            wake,
            watcher: None,
            unavailable: false,
        };
        watcher.ensure();
        watcher
    }

    /// Watches each path that exists and is not watched yet.
    pub(super) fn ensure(&mut self) {
        use notify::Watcher;
        if self.unavailable || self.watched.len() == self.paths.len() {
            return;
        }
        let pending: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|p| !self.watched.contains(p) && p.is_dir())
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        if self.watcher.is_none() {
            let wake = self.wake.clone();
            let log_dir = self
                .paths
                .iter()
                .find(|p| p.ends_with(crate::tail::store::LOG_DIR))
                .cloned();
            let handler = move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event.as_ref() {
                    if is_news(event) {
                        let _ = wake.send(wake_for(event, log_dir.as_deref()));
                    }
                }
            };
            match notify::recommended_watcher(handler) {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(e) => {
                    tracing::warn!(error = %e, "no filesystem watcher; relying on polling");
                    self.unavailable = true;
                    return;
                }
            }
        }
        let watcher = self.watcher.as_mut().expect("made above");
        for dir in pending {
            match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(path = %dir.display(), "watching the backup store");
                    self.watched.push(dir);
                }
                Err(e) => {
                    // Not asked again: polling finds what it would have.
                    tracing::warn!(error = %e, "cannot watch {}; relying on polling", dir.display());
                    self.watched.push(dir);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_creates_and_renames_wake_the_follower() {
        use notify::event::{AccessKind, CreateKind, EventKind, ModifyKind, RenameMode};
        let event = |kind| notify::Event::new(kind);
        assert!(is_news(&event(EventKind::Create(CreateKind::File))));
        assert!(is_news(&event(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        // A temporary file appearing is not news; its rename into place is.
        let at = |kind, path: &str| notify::Event::new(kind).add_path(path.into());
        assert!(!is_news(&at(
            EventKind::Create(CreateKind::File),
            "/b/.rkv-heartbeat.json.tmp"
        )));
        assert!(is_news(&at(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/b/rkv-heartbeat.json"
        )));
        assert!(is_news(
            &at(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                "/b/meta/.7.tmp"
            )
            .add_path("/b/meta/7".into())
        ));
        // A segment alone needs only the log stepped; anything else, a poll.
        let log = Some(Path::new("/b/log"));
        let segment = at(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/b/log/00000000000000000007.seg",
        );
        assert_eq!(wake_for(&segment, log), Wake::Log);
        let heartbeat = at(EventKind::Create(CreateKind::File), "/b/rkv-heartbeat.json");
        assert_eq!(wake_for(&heartbeat, log), Wake::Store);
        assert_eq!(wake_for(&segment, None), Wake::Store);
        assert_eq!(
            wake_for(&event(EventKind::Create(CreateKind::File)), log),
            Wake::Store
        );
        // The follower's own listing of meta/ must not wake it.
        assert!(!is_news(&event(EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Any
        )))));
        assert!(!is_news(&event(EventKind::Access(AccessKind::Close(
            notify::event::AccessMode::Read
        )))));
    }
}
