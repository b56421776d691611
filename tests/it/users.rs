//! Users from an ACL file: a user that may only read is refused writes
//! with `-NOPERM` (by rkv's client, redis-cli and redis-py), key patterns
//! bound what a user touches, and a reload on SIGHUP changes what open
//! connections may do.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rkv::resp::Reply;
use rkv_testkit::{wait_for, wait_until, Daemon, GENEROUS};

use crate::util::{bulk, refused, rkv, Sandbox};

fn hash(password: &str) -> String {
    format!(
        "#{}",
        hex::encode(rkv::server::users::sha256(password.as_bytes()))
    )
}

/// Writes the ACL file, private to this user as the daemon asks.
fn write_acl(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `app` reads `cache:*` keys only; `ops` does everything; no default user.
fn acl(s: &Sandbox) -> std::path::PathBuf {
    let path = s.path("users.acl");
    write_acl(
        &path,
        &format!(
            "# application hosts\nuser app on {} ~cache:* +@read\nuser ops on {} allkeys +@all\n",
            hash("app-secret"),
            hash("ops-secret")
        ),
    );
    path
}

/// A master whose users are [`acl`]'s; and the ACL file.
fn master(s: &Sandbox) -> (Daemon, std::path::PathBuf) {
    let acl = acl(s);
    let acl_flag = format!("--aclfile={}", acl.display());
    let master = Daemon::master(
        &s.path("db"),
        &s.path("backups"),
        &["--interval", "0", &acl_flag],
    );
    (master, acl)
}

fn error(reply: Result<Reply, rkv::client::ClientError>) -> String {
    match reply {
        Ok(Reply::Error(e)) => e,
        Err(rkv::client::ClientError::Server { message, .. }) => message,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_user_that_may_only_read_is_refused_writes_and_other_keys_with_noperm() {
    let s = Sandbox::new();
    let (master, _) = master(&s);

    // Nobody is logged in at connect: there is no default user.
    let mut c = master.client();
    assert!(error(c.call(&[b"GET", b"cache:1"])).starts_with("NOAUTH"));
    assert!(error(c.call(&[b"AUTH", b"app", b"wrong"])).starts_with("WRONGPASS"));
    assert!(error(c.call(&[b"AUTH", b"ops-secret"])).starts_with("WRONGPASS"));

    let mut ops = master.client();
    let hello = ops
        .call(&[b"HELLO", b"3", b"AUTH", b"ops", b"ops-secret"])
        .unwrap();
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    ops.call(&[b"SET", b"cache:1", b"v"]).unwrap();
    ops.call(&[b"SET", b"user:1", b"alice"]).unwrap();

    c.call(&[b"AUTH", b"app", b"app-secret"]).unwrap();
    assert_eq!(c.call(&[b"ACL", b"WHOAMI"]).unwrap(), bulk("app"));
    assert_eq!(c.call(&[b"GET", b"cache:1"]).unwrap(), bulk("v"));
    let noperm_command = "NOPERM this user has no permissions to run the 'set' command";
    assert_eq!(error(c.call(&[b"SET", b"cache:1", b"w"])), noperm_command);
    for refused in [
        vec![&b"GET"[..], b"user:1"],
        vec![b"MGET", b"cache:1", b"user:1"],
        vec![b"SCAN", b"0"],
        vec![b"KEYS", b"*"],
    ] {
        let said = error(c.call(&refused));
        assert!(
            said.contains("NOPERM") && said.contains("keys"),
            "{refused:?}: {said}"
        );
    }
    assert!(error(c.call(&[b"ACL", b"LIST"])).starts_with("NOPERM"));
    assert!(error(c.call(&[b"SAVE"])).starts_with("NOPERM"));
    // Inside a transaction, and pipelined (where writes are grouped).
    c.call(&[b"MULTI"]).unwrap();
    assert!(error(c.call(&[b"SET", b"cache:1", b"w"])).starts_with("NOPERM"));
    assert!(error(c.call(&[b"EXEC"])).starts_with("EXECABORT"));
    let replies = c
        .pipeline(&[
            vec![b"SET", b"cache:2", b"w"],
            vec![b"INCR", b"cache:3"],
            vec![b"GET", b"cache:1"],
        ])
        .unwrap();
    assert!(
        matches!(&replies[0], Reply::Error(e) if e.starts_with("NOPERM")),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[1], Reply::Error(e) if e.starts_with("NOPERM")),
        "{replies:?}"
    );
    assert_eq!(replies[2], bulk("v"));
    assert_eq!(ops.call(&[b"GET", b"cache:1"]).unwrap(), bulk("v"));
    assert_eq!(
        ops.call(&[b"EXISTS", b"cache:2", b"cache:3"]).unwrap(),
        Reply::Integer(0)
    );
    // What clients probe, and what SETUSER says instead.
    assert_eq!(
        c.call(&[b"ACL", b"CAT"]).unwrap(),
        Reply::array(["read", "write", "admin"].map(bulk).to_vec())
    );
    let reads = format!("{:?}", c.call(&[b"ACL", b"CAT", b"read"]).unwrap());
    assert!(reads.contains(&format!("{:?}", b"get")) && !reads.contains(&format!("{:?}", b"set")));
    assert!(matches!(c.call(&[b"ACL", b"HELP"]).unwrap(), Reply::Array(Some(l)) if l.len() > 3));
    let said = error(ops.call(&[b"ACL", b"SETUSER", b"eve", b"on"]));
    assert!(said.contains("--aclfile"), "{said}");
    assert_eq!(
        ops.call(&[b"ACL", b"USERS"]).unwrap(),
        Reply::array(["app", "default", "ops"].map(bulk).to_vec())
    );
    // The operator's view: hashes, never passwords.
    let Reply::Array(Some(lines)) = ops.call(&[b"ACL", b"LIST"]).unwrap() else {
        panic!("ACL LIST is not an array");
    };
    let list: Vec<String> = lines
        .iter()
        .map(|line| match line {
            Reply::Bulk(Some(text)) => String::from_utf8_lossy(text).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    let app_line = format!("user app on {} ~cache:* -@all +@read", hash("app-secret"));
    assert!(list.contains(&app_line), "{list:?}");
    assert!(!list.iter().any(|l| l.contains("app-secret")), "{list:?}");

    // redis-cli as the read-only user.
    let port = master
        .addr
        .to_string()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "--user",
            "app",
            "--pass",
            "app-secret",
            "--no-auth-warning",
        ])
        .args(["SET", "cache:1", "w"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("NOPERM"), "{said}");

    // rkv's CLI as the read-only user.
    let password_file = s.path("app.password");
    write_acl(&password_file, "app-secret\n");
    let connect = format!("--connect={}", master.addr);
    let as_app = [
        connect.as_str(),
        "--user=app",
        &format!("--password_file={}", password_file.display()),
    ];
    let cli = |more: &[&str]| rkv(&[&as_app[..], more].concat());
    assert_eq!(cli(&["get", "cache:1"]).ok(), "v\n");
    cli(&["put", "cache:1", "x"]).fails(1, &["NOPERM", "--user=NAME"]);
    rkv(&[&connect, "--user=app", "get", "cache:1"])
        .fails(2, &["--user needs the user's password"]);

    // redis-py: NoPermissionError, as against Redis.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), username="app", password="app-secret")
assert r.get("cache:1") == b"v"
assert r.acl_whoami() == "app" or r.acl_whoami() == b"app"
try:
    r.set("cache:1", "w")
    raise SystemExit("a read-only user wrote")
except redis.exceptions.NoPermissionError:
    pass
print("ok")
"#;
    crate::compat::run_redis_py(script, &[port.as_ref()]);
}

#[test]
fn a_reloaded_acl_file_changes_what_open_connections_may_do() {
    let s = Sandbox::new();
    let (master, acl) = master(&s);
    let mut app = master.client();
    app.call(&[b"AUTH", b"app", b"app-secret"]).unwrap();
    let mut ops = master.client();
    ops.call(&[b"AUTH", b"ops", b"ops-secret"]).unwrap();
    assert!(error(app.call(&[b"SET", b"cache:1", b"w"])).starts_with("NOPERM"));

    // ACL LOAD of the file as it stands: nothing changes.
    assert_eq!(
        ops.call(&[b"ACL", b"LOAD"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(ops.call(&[b"ACL", b"WHOAMI"]).unwrap(), bulk("ops"));

    // app may now write; ops is gone.
    write_acl(
        &acl,
        &format!(
            "user app on {} ~cache:* +@read +@write\n",
            hash("app-secret")
        ),
    );
    master.signal(libc::SIGHUP);
    wait_for(
        GENEROUS,
        "app's write to be taken after the reload",
        || match app.call_raw(&[b"SET", b"cache:1", b"w"]) {
            Ok(Reply::Simple(ok)) if ok == "OK" => Ok(()),
            other => Err(other.ok()),
        },
    );
    assert!(error(ops.call(&[b"GET", b"cache:1"])).starts_with("NOAUTH"));
    assert!(
        error(master.client().call(&[b"AUTH", b"ops", b"ops-secret"])).starts_with("WRONGPASS")
    );

    // A broken file: the reload fails, saying where, and the users stay.
    write_acl(&acl, "user app on >plaintext +@all\n");
    master.signal(libc::SIGHUP);
    wait_until(GENEROUS, "the failed reload to be logged", || {
        master.log().contains("the reload failed")
    });
    assert!(master.log().contains("line 1"), "{}", master.log());
    assert_eq!(app.call(&[b"GET", b"cache:1"]).unwrap(), bulk("w"));
    let said = error(app.call(&[b"ACL", b"LOAD"]));
    assert!(said.contains("NOPERM"), "{said}");
}

#[test]
fn acl_files_that_cannot_work_are_refused_with_the_reason() {
    let s = Sandbox::new();
    let (db, backups) = (
        format!("--db={}", s.path("db").display()),
        format!("--backup-dir={}", s.path("backups").display()),
    );
    let path = s.path("users.acl");
    let flag = format!("--aclfile={}", path.display());
    for (text, mode, extra, expected) in [
        ("user app on >pw +@read\n", 0o600, None, "line 1"),
        ("user app on #00 +@read\n", 0o600, None, "64 hex digits"),
        ("user app on nopass +@read\n", 0o644, None, "chmod"),
        (
            "user default on nopass +@all\n",
            0o600,
            Some("--requirepass=pw"),
            "keep one",
        ),
    ] {
        write_acl(&path, text);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut args = vec![db.as_str(), backups.as_str(), flag.as_str()];
        args.extend(extra);
        let said = refused(env!("CARGO_BIN_EXE_rkv-master"), &args, 2);
        assert!(said.contains(expected), "{text}: {said}");
    }
    // No ACL file: ACL LOAD says how to have one; everyone is `default`.
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let mut c = master.client();
    assert!(error(c.call(&[b"ACL", b"LOAD"])).contains("--aclfile"));
    assert_eq!(c.call(&[b"ACL", b"WHOAMI"]).unwrap(), bulk("default"));
}
