//! Connection and protocol commands: AUTH, PING, ECHO, SELECT, CLIENT,
//! COMMAND, QUIT, and MULTI/EXEC/DISCARD (refused until transactions exist).

use super::{lookup, Ctx, Spec, COMMANDS};
use crate::resp::Reply;

pub(super) fn auth(ctx: &mut Ctx<'_>) -> Reply {
    let (args, conn, shared) = (ctx.args, &mut *ctx.conn, ctx.shared);
    let Some(password) = &shared.config.password else {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    // AUTH password, or AUTH default password (Redis 6 ACL form).
    let given = match args.len() {
        2 => &args[1],
        3 if args[1].eq_ignore_ascii_case(b"default") => &args[2],
        3 => &Vec::new(),
        _ => return Reply::error("ERR syntax error"),
    };
    // A wrong password does not log out a connection that is logged in,
    // as in Redis.
    if constant_time_eq(given, password) {
        conn.authenticated = true;
        Reply::ok()
    } else {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Compares without returning early, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn ping(ctx: &mut Ctx<'_>) -> Reply {
    match ctx.args.len() {
        1 => Reply::Simple("PONG".into()),
        2 => Reply::bulk(ctx.args[1].clone()),
        _ => Reply::error("ERR wrong number of arguments for 'ping' command"),
    }
}

pub(super) fn echo(ctx: &mut Ctx<'_>) -> Reply {
    Reply::bulk(ctx.args[1].clone())
}

pub(super) fn select(ctx: &mut Ctx<'_>) -> Reply {
    match ctx.args[1].as_slice() {
        b"0" => Reply::ok(),
        _ => Reply::error("ERR DB index is out of range"),
    }
}

pub(super) fn quit(ctx: &mut Ctx<'_>) -> Reply {
    ctx.close = true;
    Reply::ok()
}

pub(super) fn multi(ctx: &mut Ctx<'_>) -> Reply {
    ctx.conn.refused_multi = true;
    Reply::error(
        "ERR MULTI is not supported by rkv yet: the commands up to EXEC or DISCARD will be \
         refused, not run",
    )
}

pub(super) fn exec(_: &mut Ctx<'_>) -> Reply {
    Reply::error("ERR EXEC without MULTI")
}

pub(super) fn discard(_: &mut Ctx<'_>) -> Reply {
    Reply::error("ERR DISCARD without MULTI")
}

pub(super) fn client(ctx: &mut Ctx<'_>) -> Reply {
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

pub(super) fn command(ctx: &mut Ctx<'_>) -> Reply {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
