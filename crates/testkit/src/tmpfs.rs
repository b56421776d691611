//! A small disk for the full-disk faults: a tmpfs mounted for one test or
//! scenario, for the fault suite and the cargo tests.

use std::path::Path;

/// A tmpfs of `size` at `path` (a small disk to fill), unmounted when
/// dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when not root or the mount fails.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }

    /// Fills it but for `leave` bytes; returns the filler.
    pub fn fill(&self, leave: u64) -> std::path::PathBuf {
        let free = free_bytes(&self.0);
        let filler = self.0.join("filler");
        std::fs::write(&filler, vec![0u8; free.saturating_sub(leave) as usize]).unwrap();
        filler
    }
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.display().to_string()).unwrap();
    // SAFETY: statvfs into a zeroed struct, on a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail * st.f_frsize
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
