//! The shell scripts an operator runs: install.sh into a staging tree, and
//! the smoke test's failure report.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::Sandbox;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// The directory holding the binaries under test.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rkv"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(script_name: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(script(script_name))
        .args(args)
        .env("RKV_BIN_DIR", bin_dir())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every file under `root` with its size and modification time.
fn tree(root: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            entries.push(format!(
                "{rel} {} {:?}",
                meta.len(),
                meta.modified().unwrap()
            ));
        }
    }
    entries.sort();
    entries
}

#[test]
fn install_stages_the_tree_idempotently_and_uninstalls() {
    let s = Sandbox::new();
    let dest = s.path("stage");
    let destdir = dest.display().to_string();
    let (ok, log) = run("install.sh", &["--destdir", &destdir, "--no-build"], &[]);
    assert!(ok, "{log}");
    for file in [
        "usr/local/bin/rkv",
        "usr/local/bin/rkv-master",
        "usr/local/bin/rkv-follower",
        "usr/local/lib/systemd/system/rkv-master.service",
        "usr/local/lib/systemd/system/rkv-follower@.service",
        "usr/local/lib/sysusers.d/rkv.conf",
        "usr/local/share/doc/rkv/README.md",
        "etc/rkv/master.env",
        "etc/rkv/follower.env",
    ] {
        assert!(
            dest.join(file).is_file(),
            "{file} missing after install:\n{log}"
        );
    }
    let unit =
        std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/rkv-master.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/rkv-master"),
        "{unit}"
    );

    let before = tree(&dest);
    let (ok, log) = run("install.sh", &["--destdir", &destdir, "--no-build"], &[]);
    assert!(ok && log.contains("already up to date"), "{log}");
    assert_eq!(tree(&dest), before, "a second install changed the tree");

    // An env file the operator edited is never overwritten.
    let env = dest.join("etc/rkv/master.env");
    std::fs::write(&env, "RKV_DB=/data/mine\n").unwrap();
    let (ok, log) = run("install.sh", &["--destdir", &destdir, "--no-build"], &[]);
    assert!(ok, "{log}");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "RKV_DB=/data/mine\n"
    );
    assert!(dest.join("etc/rkv/master.env.new").is_file());

    let (ok, log) = run("install.sh", &["--destdir", &destdir, "--uninstall"], &[]);
    assert!(ok, "{log}");
    assert!(
        !dest.join("usr").exists(),
        "uninstall left files: {:?}",
        tree(&dest)
    );
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "RKV_DB=/data/mine\n",
        "uninstall removed an edited env file"
    );

    // A custom prefix rewrites the units' paths.
    let (ok, log) = run(
        "install.sh",
        &["--destdir", &destdir, "--prefix", "/opt/rkv", "--no-build"],
        &[],
    );
    assert!(ok, "{log}");
    let unit =
        std::fs::read_to_string(dest.join("opt/rkv/lib/systemd/system/rkv-follower@.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/opt/rkv/bin/rkv-follower"),
        "{unit}"
    );
    let (ok, log) = run("install.sh", &["--bogus"], &[]);
    assert!(!ok && log.contains("unknown argument"), "{log}");
}

#[test]
fn smoke_test_fails_with_one_clear_line_when_a_follower_is_down() {
    let s = Sandbox::new();
    let tmp = s.root().display().to_string();
    // The default bound: a stopped follower fails its check at once, and a
    // busy machine gets the time it needs for the steps before.
    let env = [("SMOKE_BREAK", "stop-follower2"), ("TMPDIR", tmp.as_str())];
    let (ok, log) = run("smoke.sh", &[], &env);
    assert!(!ok, "the smoke test passed with a follower stopped:\n{log}");
    let fail: Vec<&str> = log.lines().filter(|l| l.contains("FAIL:")).collect();
    assert_eq!(fail.len(), 1, "{log}");
    assert!(
        fail[0].contains("expected GET user:3") && fail[0].contains("'Charlie', got"),
        "{log}"
    );
    assert!(log.contains("smoke test FAILED"), "{log}");
}

#[test]
fn demo_shows_replication_and_leaves_no_process_behind() {
    let s = Sandbox::new();
    let tmp = s.root().display().to_string();
    let (ok, log) = run("demo.sh", &[], &[("TMPDIR", tmp.as_str())]);
    assert!(ok, "{log}");
    assert!(
        log.contains("readable on") && log.contains("measured staleness"),
        "{log}"
    );
    assert!(
        log.contains("READONLY You can't write against a read only replica."),
        "{log}"
    );
    assert!(
        log.contains("role:slave") && log.contains("rkv_staleness_ms:"),
        "{log}"
    );
    // Every daemon the demo started ran under TMPDIR: none may be left.
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&tmp) && c.contains("rkv-"))
        .collect();
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    let left: Vec<_> = std::fs::read_dir(s.root()).unwrap().collect();
    assert!(left.is_empty(), "the demo left files in TMPDIR: {left:?}");
}
