use super::*;

fn hash(password: &str) -> String {
    format!("#{}", hex::encode(sha256(password.as_bytes())))
}

#[test]
fn users_read_only_or_read_write_limited_to_patterns() {
    let text = format!(
        "# application hosts read the cache\n\
         user app on {} ~cache:* ~session:* +@read\n\
         \n\
         user ops on {} {} allkeys +@all\n\
         user writer on {} ~* +@read +@write\n\
         user gone off {} +@all\n",
        hash("app-pw"),
        hash("old"),
        hash("new"),
        hash("w"),
        hash("g"),
    );
    let users = Users::parse(&text, None, true).unwrap();
    let app = users.get("app").unwrap();
    assert!(app.accepts(b"app-pw") && !app.accepts(b"app-pw ") && !app.accepts(b""));
    assert!(app.may(Category::Read) && !app.may(Category::Write) && !app.may(Category::Admin));
    assert!(app.may_touch(b"cache:1") && app.may_touch(b"session:x") && !app.may_touch(b"user:1"));
    assert!(!app.unrestricted() && !app.all_keys());
    // Two passwords while one is rotated out.
    let ops = users.get("ops").unwrap();
    assert!(ops.accepts(b"old") && ops.accepts(b"new") && ops.unrestricted());
    let writer = users.get("writer").unwrap();
    assert!(writer.all_keys() && writer.may(Category::Write) && !writer.may(Category::Admin));
    // Off: no password logs it in.
    assert!(!users.get("gone").unwrap().accepts(b"g"));
    // With a file and no default user there, nobody is logged in at connect.
    assert!(!users.open_to_anyone());
    assert!(!users.get(DEFAULT_USER).unwrap().accepts(b""));
    assert_eq!(
        app.describe(),
        format!(
            "user app on {} ~cache:* ~session:* -@all +@read",
            hash("app-pw")
        )
    );
}

#[test]
fn the_default_user_comes_from_requirepass_the_file_or_is_open() {
    let open = Users::parse("", None, false).unwrap();
    assert!(open.open_to_anyone());
    let with_password = Users::parse("", Some(b"pw"), false).unwrap();
    assert!(!with_password.open_to_anyone());
    let default = with_password.get(DEFAULT_USER).unwrap();
    assert!(default.accepts(b"pw") && !default.accepts(b"wrong") && default.unrestricted());
    // Anonymous read-only access, when the file says so.
    let anonymous = Users::parse("user default on nopass ~* +@read", None, true).unwrap();
    let at_connect = anonymous.at_connect().unwrap();
    assert!(at_connect.may(Category::Read) && !at_connect.may(Category::Write));
    let twice = Users::parse("user default on nopass +@all", Some(b"pw"), true).unwrap_err();
    assert!(twice.contains("keep one"), "{twice}");
}

#[test]
fn a_bad_line_is_refused_with_its_number_and_what_rkv_takes() {
    for (text, expected) in [
        ("user app on >plain +@read", "stored hashed"),
        ("user app on #abc +@read", "64 hex digits"),
        ("user app on +get", "rkv takes"),
        ("user app on +@dangerous", "@dangerous"),
        ("person app", "user NAME RULES"),
        ("user", "needs a name"),
        ("user a on\nuser a off", "defined twice"),
    ] {
        let error = Users::parse(text, None, true).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(error.starts_with("line "), "{text}: {error}");
    }
    // Rules apply in order, as in Redis.
    let users = Users::parse(
        "user a on nopass +@all -@write ~k* reset on nopass +@read",
        None,
        true,
    )
    .unwrap();
    let a = users.get("a").unwrap();
    assert!(a.may(Category::Read) && !a.may(Category::Write) && !a.may_touch(b"k1"));
}
