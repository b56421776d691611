//! Users and what they may do: Redis's ACL vocabulary, in the subset rkv
//! needs. Each user may read, write and run admin commands or not, and may
//! be limited to keys matching patterns. The users come from a file in
//! Redis's ACL file syntax (`--aclfile`), one `user` line each, with
//! passwords stored as SHA-256 hashes (`#<hex>`), and from `--requirepass`
//! for the default user. The file is re-read on SIGHUP and `ACL LOAD`.
//!
//! ```text
//! # name   state  password (sha256)  keys          commands
//! user app on #5e884898da28…  ~cache:*      +@read
//! user ops on #1c8bfe8f801d…  allkeys       +@all
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The name of the user a connection starts as.
pub const DEFAULT_USER: &str = "default";

/// What a command does, for permissions (Redis's ACL categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Reads keys (`@read`).
    Read,
    /// Writes keys (`@write`).
    Write,
    /// Runs the daemon (`@admin`: SAVE, BGSAVE, CONFIG, ACL LOAD…).
    Admin,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Admin => "admin",
        }
    }
}

/// How a user proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Passwords {
    /// Any password, or none (`nopass`).
    Any,
    /// One of these SHA-256 hashes (`#<hex>` in the file).
    Hashed(Vec<[u8; 32]>),
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    /// `on`: it may log in.
    enabled: bool,
    passwords: Passwords,
    read: bool,
    write: bool,
    admin: bool,
    /// Patterns the keys it touches must match; `None` for all keys.
    keys: Option<Vec<Vec<u8>>>,
}

impl User {
    /// A new user: off, with no password and no permissions, as in Redis.
    fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            passwords: Passwords::Hashed(Vec::new()),
            read: false,
            write: false,
            admin: false,
            keys: Some(Vec::new()),
        }
    }

    /// A user that may do everything, with these passwords.
    fn everything(name: &str, passwords: Passwords) -> User {
        User {
            name: name.to_string(),
            enabled: true,
            passwords,
            read: true,
            write: true,
            admin: true,
            keys: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `password` logs it in.
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        match &self.passwords {
            Passwords::Any => true,
            Passwords::Hashed(hashes) => {
                let given = sha256(password);
                // Every hash is compared, and each in constant time.
                hashes
                    .iter()
                    .fold(false, |found, h| found | constant_time_eq(h, &given))
            }
        }
    }

    /// Whether it may log in (`on`).
    pub fn may_log_in(&self) -> bool {
        self.enabled
    }

    /// Whether a connection is logged in as this user before any `AUTH`.
    fn open(&self) -> bool {
        self.enabled && self.passwords == Passwords::Any
    }

    /// Whether it may do everything to every key: the checks are skipped.
    pub fn unrestricted(&self) -> bool {
        self.read && self.write && self.admin && self.keys.is_none()
    }

    /// Whether it may run commands of `category`.
    pub fn may(&self, category: Category) -> bool {
        match category {
            Category::Read => self.read,
            Category::Write => self.write,
            Category::Admin => self.admin,
        }
    }

    /// Whether it may touch every key (`allkeys`).
    pub fn all_keys(&self) -> bool {
        self.keys.is_none()
    }

    /// Whether it may touch `key`.
    pub fn may_touch(&self, key: &[u8]) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| crate::glob::matches(p, key)))
    }

    /// The user as `ACL LIST` shows it (hashes, never passwords).
    pub fn describe(&self) -> String {
        let mut rules = vec![format!("user {}", self.name)];
        rules.push(if self.enabled { "on" } else { "off" }.into());
        match &self.passwords {
            Passwords::Any => rules.push("nopass".into()),
            Passwords::Hashed(hashes) => {
                rules.extend(hashes.iter().map(|h| format!("#{}", hex::encode(h))))
            }
        }
        match &self.keys {
            None => rules.push("~*".into()),
            Some(patterns) => rules.extend(
                patterns
                    .iter()
                    .map(|p| format!("~{}", String::from_utf8_lossy(p))),
            ),
        }
        if self.read && self.write && self.admin {
            rules.push("+@all".into());
        } else {
            rules.push("-@all".into());
            for category in [Category::Read, Category::Write, Category::Admin] {
                if self.may(category) {
                    rules.push(format!("+@{}", category.name()));
                }
            }
        }
        rules.join(" ")
    }
}

/// Every user, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, Arc<User>>,
}

/// Why the users cannot be loaded: the file and line, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsersError(pub String);

impl Users {
    /// The users of `aclfile` (if given) and the default user: as the file
    /// defines it, else with `requirepass` (anyone may log in when there
    /// is neither), else (a file without it) turned off.
    pub fn load(aclfile: Option<&Path>, requirepass: Option<&[u8]>) -> Result<Users, UsersError> {
        let Some(path) = aclfile else {
            return Ok(Users::parse("", requirepass, false).expect("no lines, no errors"));
        };
        let text = crate::daemon::read_private(path, "ACL file", "640").map_err(UsersError)?;
        Users::parse(&text, requirepass, true)
            .map_err(|e| UsersError(format!("the ACL file {}: {e}", path.display())))
    }

    /// The users of an ACL file's `text` (see [`Users::load`]); `from_file`
    /// says whether there is a file (without one, no default user means an
    /// open one).
    pub fn parse(text: &str, requirepass: Option<&[u8]>, from_file: bool) -> Result<Users, String> {
        let mut users = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let user = parse_line(line).map_err(|e| format!("line {}: {e}", number + 1))?;
            if users.contains_key(&user.name) {
                return Err(format!(
                    "line {}: user {} is defined twice",
                    number + 1,
                    user.name
                ));
            }
            users.insert(user.name.clone(), Arc::new(user));
        }
        let default = match (users.contains_key(DEFAULT_USER), requirepass) {
            (true, Some(_)) => {
                return Err("it defines the default user, and so does --requirepass or \
                            --password-file: keep one"
                    .into())
            }
            (true, None) => None,
            (false, Some(password)) => Some(User::everything(
                DEFAULT_USER,
                Passwords::Hashed(vec![sha256(password)]),
            )),
            (false, None) if from_file => Some(User {
                enabled: false,
                ..User::everything(DEFAULT_USER, Passwords::Any)
            }),
            (false, None) => Some(User::everything(DEFAULT_USER, Passwords::Any)),
        };
        if let Some(user) = default {
            users.insert(DEFAULT_USER.into(), Arc::new(user));
        }
        Ok(Users { users })
    }

    /// The user `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// The user a new connection is logged in as, when one is (the default
    /// user, on and without a password).
    pub fn at_connect(&self) -> Option<Arc<User>> {
        self.users.get(DEFAULT_USER).filter(|u| u.open()).cloned()
    }

    /// Whether anyone who connects may run commands without `AUTH`: what
    /// protected mode refuses beyond loopback.
    pub fn open_to_anyone(&self) -> bool {
        self.at_connect().is_some()
    }

    /// Every user, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }
}

/// One `user NAME RULE…` line.
fn parse_line(line: &str) -> Result<User, String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("user") {
        return Err("each line is `user NAME RULES…` (Redis's ACL file syntax)".into());
    }
    let name = words.next().ok_or("a user line needs a name")?;
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{name:?} is not a user name"));
    }
    let mut user = User::new(name);
    for rule in words {
        apply(&mut user, rule).map_err(|e| format!("user {name}, rule {rule:?}: {e}"))?;
    }
    Ok(user)
}

fn apply(user: &mut User, rule: &str) -> Result<(), String> {
    let set = |user: &mut User, category: &str, on: bool| -> Result<(), String> {
        match category {
            "all" => (user.read, user.write, user.admin) = (on, on, on),
            "read" => user.read = on,
            "write" => user.write = on,
            "admin" => user.admin = on,
            other => {
                return Err(format!(
                    "rkv knows the categories @all, @read, @write and @admin, not @{other}"
                ))
            }
        }
        Ok(())
    };
    match rule {
        "on" => user.enabled = true,
        "off" => user.enabled = false,
        "nopass" => user.passwords = Passwords::Any,
        "resetpass" => user.passwords = Passwords::Hashed(Vec::new()),
        "allkeys" => user.keys = None,
        "resetkeys" => user.keys = Some(Vec::new()),
        "allcommands" => set(user, "all", true)?,
        "nocommands" => set(user, "all", false)?,
        "reset" => *user = User::new(&user.name),
        _ => match rule.split_at(1) {
            ("#", hash) => {
                let hash: [u8; 32] = hex::decode(hash)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or("a password hash is # and 64 hex digits of its SHA-256")?;
                match &mut user.passwords {
                    Passwords::Hashed(hashes) => hashes.push(hash),
                    Passwords::Any => user.passwords = Passwords::Hashed(vec![hash]),
                }
            }
            (">", _) => {
                return Err(
                    "passwords are stored hashed here: write #<sha256> instead of \
                            >password (printf %s 'PASSWORD' | sha256sum)"
                        .into(),
                )
            }
            ("~", "*") => user.keys = None,
            ("~", pattern) => {
                if let Some(patterns) = &mut user.keys {
                    patterns.push(pattern.as_bytes().to_vec());
                }
            }
            ("+", category) | ("-", category) if category.starts_with('@') => {
                set(user, &category[1..], rule.starts_with('+'))?
            }
            _ => {
                return Err(
                    "rkv takes on, off, nopass, #<sha256>, resetpass, ~PATTERN, \
                            allkeys, resetkeys, +@CATEGORY, -@CATEGORY, allcommands, \
                            nocommands and reset"
                        .into(),
                )
            }
        },
    }
    Ok(())
}

/// SHA-256 of `bytes`, as Redis stores ACL passwords.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Compares without returning early, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
