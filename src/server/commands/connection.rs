//! Connection and protocol commands: HELLO, AUTH, ACL, PING, ECHO, SELECT,
//! CLIENT, COMMAND and QUIT.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::args;
use super::{lookup, Ctx, Spec, COMMANDS};
use crate::resp::{Protocol, Reply};
use crate::server::users::{Category, DEFAULT_USER};
use crate::server::Role;

/// The Redis version rkv reports (INFO's `redis_version`, HELLO's
/// `version`): clients pick features by it, and rkv answers the commands
/// it has as Redis 7.0 does.
pub(super) const REDIS_VERSION: &str = "7.0.0";

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`:
/// switches the connection to RESP2 or RESP3, authenticates, names it,
/// and describes the server, as Redis 7's `helloCommand`.
pub(super) fn hello(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let mut protocol = None;
    if let Some(version) = args.get(1) {
        match args::int(version) {
            Some(2) => protocol = Some(Protocol::Resp2),
            Some(3) => protocol = Some(Protocol::Resp3),
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
            None => return Reply::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let (mut credentials, mut name) = (None, None);
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        match args::upper(&args[i]).as_str() {
            "AUTH" if more >= 2 => {
                credentials = Some((&args[i + 1], &args[i + 2]));
                i += 2;
            }
            "SETNAME" if more >= 1 => {
                if let Err(e) = valid_name(&args[i + 1]) {
                    return e;
                }
                name = Some(args[i + 1].clone());
                i += 1;
            }
            _ => {
                return Reply::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                ))
            }
        }
        i += 1;
    }
    if let Some((user, password)) = credentials {
        if let Err(e) = log_in(ctx, user, password) {
            return e;
        }
    }
    if !ctx.conn.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if name.is_some() {
        ctx.conn.name = name;
    }
    if let Some(protocol) = protocol {
        ctx.conn.protocol = protocol;
    }
    let role = match ctx.shared.backend.role() {
        Role::Master => "master",
        Role::Replica { .. } => "replica",
    };
    let version = match ctx.conn.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Integer(version)),
        (Reply::bulk("id"), Reply::Integer(ctx.conn.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk(role)),
        (Reply::bulk("modules"), Reply::array(Vec::new())),
    ])
}

/// Redis's rule for client names: no spaces, newlines or special bytes.
fn valid_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// Logs the connection in as `user` when `password` is one of its own (any
/// password for a `nopass` user); a wrong password does not log out a
/// connection that is logged in.
fn log_in(ctx: &mut Ctx<'_, '_>, user: &[u8], password: &[u8]) -> Result<(), Reply> {
    let wrong = || Reply::error("WRONGPASS invalid username-password pair or user is disabled.");
    // Read before the users, so a reload in between is looked at again.
    let version = ctx.shared.users_version.load(Ordering::SeqCst);
    let users = ctx.shared.users.load();
    let found = std::str::from_utf8(user)
        .ok()
        .and_then(|name| users.get(name))
        .filter(|found| found.accepts(password))
        .ok_or_else(wrong)?;
    ctx.conn.user = Some(Arc::clone(found));
    ctx.conn.users_version = version;
    ctx.conn.authenticated = true;
    Ok(())
}

/// `AUTH password` (the default user) or `AUTH username password`.
pub(super) fn auth(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let open = ctx.shared.users.load().open_to_anyone();
    match args.len() {
        2 if open => Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        2 => log_in(ctx, DEFAULT_USER.as_bytes(), &args[1]).map_or_else(|e| e, |()| Reply::ok()),
        3 => log_in(ctx, &args[1], &args[2]).map_or_else(|e| e, |()| Reply::ok()),
        _ => Reply::error("ERR syntax error"),
    }
}

/// `ACL WHOAMI`, `CAT`, `USERS`, `LIST`, `LOAD` and `HELP`: what clients
/// probe, and what an operator checks. Users are defined in the ACL file
/// only, so `SETUSER` and the other changes are refused with the way to
/// make them.
pub(super) fn acl(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let user = ctx.conn.user.clone();
    let admin = || match &user {
        Some(user) if !user.may(Category::Admin) => Err(Reply::error(format!(
            "NOPERM this user has no permissions to run the 'acl|{sub}' command"
        ))),
        _ => Ok(()),
    };
    let bulks = |items: Vec<String>| Reply::array(items.into_iter().map(Reply::bulk).collect());
    let result = match (sub.as_str(), args.len()) {
        ("whoami", 2) => Ok(Reply::bulk(
            user.as_ref().map_or(DEFAULT_USER, |u| u.name()).to_string(),
        )),
        ("cat", 2) => Ok(bulks(["read", "write", "admin"].map(String::from).to_vec())),
        ("cat", 3) => {
            let category = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
            let flag = match category.as_str() {
                "read" => "readonly",
                "write" => "write",
                "admin" => "admin",
                _ => return Reply::error(format!("ERR Unknown category '{category}'")),
            };
            Ok(bulks(
                COMMANDS
                    .iter()
                    .filter(|spec| spec.flags.contains(&flag))
                    .map(|spec| spec.name.to_string())
                    .collect(),
            ))
        }
        ("users", 2) => admin().map(|()| {
            bulks(ctx.shared.users.load().iter().map(|u| u.name().to_string()).collect())
        }),
        ("list", 2) => admin().map(|()| {
            bulks(ctx.shared.users.load().iter().map(|u| u.describe()).collect())
        }),
        ("load", 2) => admin().and_then(|()| {
            if ctx.shared.config.aclfile.is_none() {
                return Err(Reply::error(
                    "ERR This daemon has no ACL file: start it with --aclfile FILE",
                ));
            }
            ctx.shared
                .reload_users()
                .map(|()| Reply::ok())
                .map_err(|e| Reply::error(format!("ERR {e}")))
        }),
        ("help", 2) => Ok(bulks(
            [
                "ACL <subcommand> [<arg> ...]. Subcommands are:",
                "WHOAMI -- the user this connection is logged in as.",
                "CAT [<category>] -- the categories (read, write, admin), or a category's commands.",
                "USERS -- the users' names.",
                "LIST -- the users as ACL file lines (password hashes, never passwords).",
                "LOAD -- re-read the ACL file (as SIGHUP does).",
                "Users are defined in the ACL file (--aclfile); edit it, then ACL LOAD.",
            ]
            .map(String::from)
            .to_vec(),
        )),
        ("setuser" | "deluser" | "save" | "genpass" | "getuser" | "log" | "dryrun", _) => {
            Err(Reply::error(format!(
                "ERR ACL {} is not supported: users are defined in the ACL file (--aclfile); \
                 edit it, then ACL LOAD or SIGHUP",
                sub.to_ascii_uppercase()
            )))
        }
        _ => Err(Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try ACL HELP."
        ))),
    };
    result.unwrap_or_else(|e| e)
}

pub(super) fn ping(ctx: &mut Ctx<'_, '_>) -> Reply {
    match ctx.args.len() {
        1 => Reply::Simple("PONG".into()),
        2 => Reply::bulk(ctx.args[1].clone()),
        _ => Reply::error("ERR wrong number of arguments for 'ping' command"),
    }
}

pub(super) fn echo(ctx: &mut Ctx<'_, '_>) -> Reply {
    Reply::bulk(ctx.args[1].clone())
}

pub(super) fn select(ctx: &mut Ctx<'_, '_>) -> Reply {
    match ctx.args[1].as_slice() {
        b"0" => Reply::ok(),
        _ => Reply::error("ERR DB index is out of range"),
    }
}

pub(super) fn quit(ctx: &mut Ctx<'_, '_>) -> Reply {
    ctx.close = true;
    Reply::ok()
}

pub(super) fn client(ctx: &mut Ctx<'_, '_>) -> Reply {
    let (args, conn) = (ctx.args, &mut *ctx.conn);
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("setname", 3) => {
            conn.name = Some(args[2].clone());
            Reply::ok()
        }
        ("getname", 2) => Reply::Bulk(conn.name.clone()),
        ("id", 2) => Reply::Integer(conn.id as i64),
        ("setinfo", 4) => Reply::ok(),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
        )),
    }
}

pub(super) fn command(ctx: &mut Ctx<'_, '_>) -> Reply {
    let args = ctx.args;
    let describe = |spec: &Spec| {
        Reply::array(vec![
            Reply::bulk(spec.name),
            Reply::Integer(spec.arity),
            Reply::array(
                spec.flags
                    .iter()
                    .map(|f| Reply::Simple(f.to_string()))
                    .collect(),
            ),
            Reply::Integer(spec.keys.0),
            Reply::Integer(spec.keys.1),
            Reply::Integer(spec.keys.2),
        ])
    };
    let sub = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    match sub.as_deref() {
        None => Reply::array(COMMANDS.iter().map(describe).collect()),
        Some("count") => Reply::Integer(COMMANDS.len() as i64),
        // redis-cli asks for documentation to show hints; it copes with none.
        Some("docs") => Reply::array(Vec::new()),
        Some("info") => Reply::array(
            args[2..]
                .iter()
                .map(
                    |name| match lookup(&String::from_utf8_lossy(name).to_ascii_lowercase()) {
                        Some(spec) => describe(spec),
                        None => Reply::Array(None),
                    },
                )
                .collect(),
        ),
        Some(other) => Reply::error(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND HELP."
        )),
    }
}
