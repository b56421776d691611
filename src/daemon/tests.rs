//! Unit tests of `daemon.rs`.

use super::*;

#[test]
fn sizes_take_binary_units() {
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("512kb"), Ok(512 << 10));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert!(parse_size("lots").is_err() && parse_size("5 parsecs").is_err());
}

#[test]
fn protected_mode_refuses_open_binds_without_password() {
    let open: Vec<ListenAddr> = vec!["0.0.0.0:6380".parse().unwrap()];
    let local: Vec<ListenAddr> = vec!["127.0.0.1:6380".parse().unwrap()];
    assert!(matches!(
        check_protected_mode(&open, false, true),
        Err(ConfigError::Unprotected(m)) if m.contains("protected mode")
    ));
    assert!(check_protected_mode(&open, true, true).is_ok());
    assert!(check_protected_mode(&open, false, false).is_ok());
    assert!(check_protected_mode(&local, false, true).is_ok());
}

#[test]
fn password_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_password(None, Some(&file)),
        Err(ConfigError::Password(m)) if m.contains("chmod 600")
    ));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        load_password(None, Some(&file)),
        Ok(Some(b"s3cret".to_vec()))
    );
    assert_eq!(load_password(Some("x"), None), Ok(Some(b"x".to_vec())));
    assert_eq!(load_password(None, None), Ok(None));
    assert!(matches!(
        load_password(None, Some(&dir.path().join("missing"))),
        Err(ConfigError::Password(m)) if m.contains("cannot read")
    ));
    assert!(matches!(
        load_password(Some("x"), Some(&file)),
        Err(ConfigError::Password(_))
    ));
}

#[test]
fn resolve_handles_paths_that_do_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().canonicalize().unwrap();
    assert_eq!(resolve(&dir.path().join("a/b")), real.join("a/b"));
}

#[test]
fn daemon_file_round_trips_and_finds_live_pid() {
    let dir = tempfile::tempdir().unwrap();
    let file = DaemonFile {
        pid: std::process::id(),
        role: "master".into(),
        listen: vec!["127.0.0.1:6380".into()],
        tls_listen: vec!["127.0.0.1:6390".into()],
        metrics: Some("127.0.0.1:9380".into()),
    };
    file.write(dir.path()).unwrap();
    assert_eq!(DaemonFile::find_running(dir.path()), Some(file));
    DaemonFile::remove(dir.path());
    assert_eq!(DaemonFile::read(dir.path()), None);
}
