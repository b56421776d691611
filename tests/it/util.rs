//! Helpers for process-level tests: temp dirs, and a command wrapper that
//! asserts exit codes and returns output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The path of the built `rkv` binary.
pub fn rkv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rkv"))
}

/// A temp dir that lives as long as the test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("rkv-test-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A path inside the sandbox (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `rkv` with `args`.
pub fn rkv(args: &[&str]) -> Run {
    let output = Command::new(rkv_bin())
        .args(args)
        .env_remove("RKV_LOG")
        .output()
        .expect("run rkv");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        output,
    }
}

/// The outcome of one command.
pub struct Run {
    args: Vec<String>,
    output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "rkv {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts exit code `code` and a stderr containing each of `needles`;
    /// returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) -> String {
        let stderr = self.stderr();
        assert_eq!(
            self.output.status.code(),
            Some(code),
            "rkv {:?}: wrong exit code\nstdout: {}\nstderr: {stderr}",
            self.args,
            self.stdout()
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "rkv {:?}: stderr lacks {needle:?}:\n{stderr}",
                self.args
            );
        }
        assert!(
            !stderr.contains("panicked"),
            "rkv {:?} panicked:\n{stderr}",
            self.args
        );
        stderr
    }
}

pub use rkv_testkit::flags::{partials, REFUSE_AFTER_3S, SLOW_RESTORE};

/// `--db=<path>`.
pub fn db_flag(path: &Path) -> String {
    format!("--db={}", path.display())
}

/// `--backup_dir=<path>`.
pub fn backup_flag(path: &Path) -> String {
    format!("--backup_dir={}", path.display())
}

pub use rkv_testkit::{wait_for, wait_until, Daemon, GENEROUS};

/// Waits until `d` answers `GET key` with `value`; fails after
/// [`GENEROUS`] with what it answered instead.
#[track_caller]
pub fn serves(d: &Daemon, key: &str, value: &str) {
    wait_for(
        GENEROUS,
        &format!("GET {key} to answer {value:?}"),
        || match get(d, key) {
            Some(reply) if reply == bulk(value) => Ok(()),
            other => Err(other),
        },
    );
}

/// Waits until follower `d` serves `key` as `value`, healthy, with a
/// staleness under `bound_ms`; fails after [`GENEROUS`] with what it saw.
/// (A wait, not one reading: a busy machine may hold back a heartbeat.)
#[track_caller]
pub fn serves_fresh(d: &Daemon, key: &str, value: &str, bound_ms: i64) {
    wait_for(GENEROUS, "fresh data served as healthy", || {
        let seen = (
            get(d, key),
            d.info("healthy"),
            d.info_num("rkv_staleness_ms"),
        );
        match &seen {
            (Some(v), Some(h), ms)
                if *v == bulk(value) && h == "1" && (0..bound_ms).contains(ms) =>
            {
                Ok(())
            }
            _ => Err(seen),
        }
    });
}

/// A bulk string reply.
pub fn bulk(s: &str) -> rkv::resp::Reply {
    rkv::resp::Reply::bulk(s.as_bytes().to_vec())
}

/// `GET key` on a new connection; `None` when the daemon cannot be reached.
pub fn get(d: &Daemon, key: &str) -> Option<rkv::resp::Reply> {
    rkv::client::Client::connect(&d.addr, None)
        .ok()?
        .call_raw(&[b"GET", key.as_bytes()])
        .ok()
}

/// `len` bytes that do not compress (xorshift from `state`, which moves on).
pub fn incompressible(len: usize, state: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}

/// Writes about `mib` MiB of incompressible values under
/// `<prefix>:<batch>:<i>`, 16 keys of 4 KiB per MSET.
pub fn fill(master: &Daemon, prefix: &str, mib: usize) {
    let mut c = master.client();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for batch in 0..mib * 16 {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..16 {
            args.push(format!("{prefix}:{batch:06}:{i:02}").into_bytes());
            args.push(incompressible(4096, &mut x));
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        c.call(&refs).unwrap();
    }
}

/// Runs a binary with args and returns its output.
pub fn run_bin(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

/// Runs `bin` with `args`, which must fail with exit code `code` (2: bad
/// configuration, 1: a failure); returns what it said on stderr.
pub fn refused(bin: &str, args: &[&str], code: i32) -> String {
    refused_with_env(bin, args, &[], code)
}

/// [`refused`] with extra environment variables (`bin` may be a wrapper
/// such as `ip` that runs the daemon).
pub fn refused_with_env(bin: &str, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    stderr
}

/// Flips the last byte of the MANIFEST only backup `id` holds: the size stays
/// (RocksDB still lists the backup) and only the checksum tells.
pub fn corrupt_private_manifest(backups: &Path, id: u32) {
    let private = backups.join("private").join(id.to_string());
    let manifest = std::fs::read_dir(&private)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST")
        })
        .unwrap();
    let mut bytes = std::fs::read(&manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();
}
