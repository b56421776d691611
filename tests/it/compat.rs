//! Redis compatibility, differentially: a seeded random sequence of the
//! string and keyspace commands rkv supports (edge values, errors,
//! overflow, negative and huge ranges, binary keys, expiry) goes to
//! rkv-master and to a real redis-server, and every reply must be
//! byte-identical, in RESP2 and in RESP3.
//!
//! Four allowances, each for an answer that is not a function of the
//! commands: replies to TTL, PTTL, EXPIRETIME and PEXPIRETIME of keys given
//! a relative deadline may differ by the moments between the two servers'
//! runs of a command (a few seconds at most, on a busy machine); KEYS and
//! SCAN are compared as sets (Redis orders by hash, rkv by key); RANDOMKEY
//! is compared by whether it found a key; and Redis's DBSIZE counts expired
//! keys it has not reclaimed yet, so rkv's is compared with the number of
//! keys Redis's KEYS lists.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkv::resp::Reply;

use crate::rng::Rng;
use crate::util::{rkv, wait_until, Daemon, Sandbox, GENEROUS};

/// A redis-server on a free loopback port, with no persistence; killed
/// when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &std::path::Path) -> RedisServer {
        let dir = dir.display().to_string();
        let (child, port) =
            crate::redis::start_redis_server(&["--save", "", "--appendonly", "no", "--dir", &dir]);
        RedisServer { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection that sends commands and returns each reply's raw bytes.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn call(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            wire.extend_from_slice(arg);
            wire.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&wire).unwrap();
        let mut reply = Vec::new();
        read_raw(&mut self.reader, &mut reply);
        reply
    }
}

/// Reads one RESP2 or RESP3 reply into `out`, as sent.
fn read_raw(reader: &mut impl BufRead, out: &mut Vec<u8>) {
    let start = out.len();
    reader.read_until(b'\n', out).unwrap();
    assert!(out.ends_with(b"\r\n"), "a reply line: {:?}", &out[start..]);
    let line = String::from_utf8_lossy(&out[start + 1..out.len() - 2]).into_owned();
    let n = || line.parse::<i64>().unwrap();
    match out[start] {
        b'$' | b'=' | b'!' if n() >= 0 => {
            let mut body = vec![0u8; n() as usize + 2];
            reader.read_exact(&mut body).unwrap();
            out.extend_from_slice(&body);
        }
        b'*' | b'~' | b'>' if n() >= 0 => (0..n()).for_each(|_| read_raw(reader, out)),
        b'%' | b'|' => (0..2 * n()).for_each(|_| read_raw(reader, out)),
        _ => {}
    }
}

const KEYS: &[&str] = &[
    "k0", "k1", "k2", "k3", "n", "f", "", "k\0b", "k\r\nx", "long",
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "10",
    "007",
    "-0",
    "+1",
    " 1",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775806",
    "1.5",
    "-0.5",
    "1e3",
    "3.0e2",
    "0x10",
    "inf",
    "abc",
    "",
    "hello world",
    "\0\u{ff}\r\n",
    "a value long enough to be stored raw by redis rather than embedded, 60b",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "5",
    "-3",
    "17",
    "100",
    "-100",
    "9223372036854775807",
    "-9223372036854775808",
    "4611686018427387904",
    "abc",
    "1.5",
    "",
    "01",
];

const FLOATS: &[&str] = &[
    "0.1",
    "0.2",
    "-0.3",
    "1",
    "1e2",
    "5.0e3",
    "-1e-2",
    "3",
    "abc",
    "",
    "inf",
    "-inf",
    "nan",
    "1e4932",
    "0x1p3",
    " 1",
    "1.7976931348623157e308",
];

/// Expiries that cannot fire during the test (or fire at once): relative
/// ones of 100 s and more, absolute ones far in the past or future.
fn expiry(rng: &mut Rng, far: u64) -> Vec<String> {
    match rng.below(9) {
        0 => vec![
            "EX".into(),
            rng.pick(&["100", "1000", "0", "-5", "x"]).into(),
        ],
        1 => vec!["PX".into(), rng.pick(&["100000", "2000000", "0"]).into()],
        2 => vec!["EXAT".into(), far.to_string()],
        3 => vec!["PXAT".into(), (far * 1000 + 123).to_string()],
        4 => vec!["EXAT".into(), "1".into()],
        5 => vec!["PXAT".into(), "1000".into()],
        6 => vec!["KEEPTTL".into()],
        7 => vec!["EX".into(), "9223372036854775807".into()],
        _ => vec![],
    }
}

/// One random command.
fn command(rng: &mut Rng, far: u64) -> Vec<String> {
    let key = |rng: &mut Rng| rng.pick(KEYS).to_string();
    let value = |rng: &mut Rng| rng.pick(VALUES).to_string();
    let number = |rng: &mut Rng| rng.pick(NUMBERS).to_string();
    let mut c: Vec<String> = match rng.below(44) {
        0..=3 => vec!["GET".into(), key(rng)],
        4..=6 => {
            let mut c = vec!["SET".into(), key(rng), value(rng)];
            for _ in 0..rng.below(3) {
                match rng.below(4) {
                    0 => c.push(rng.pick(&["NX", "XX", "GET", "nx"]).into()),
                    1 => c.push(rng.pick(&["BOGUS", "EX"]).into()),
                    _ => c.extend(expiry(rng, far)),
                }
            }
            c
        }
        7 => vec!["SETNX".into(), key(rng), value(rng)],
        8 => {
            // Seconds or milliseconds: either way 100 s and more.
            let setex = rng.pick(&["SETEX", "PSETEX"]);
            let ttl = rng.pick(&["100", "200000", "0", "-1", "x"]);
            let ttl = match (setex, ttl) {
                ("PSETEX", "100") => "100000",
                _ => ttl,
            };
            vec![setex.into(), key(rng), ttl.into(), value(rng)]
        }
        9 => {
            let mut c = vec!["GETEX".into(), key(rng)];
            match rng.below(3) {
                0 => c.push("PERSIST".into()),
                1 => c.extend(expiry(rng, far)),
                _ => {}
            }
            c
        }
        10 => vec!["GETDEL".into(), key(rng)],
        11 => vec!["GETSET".into(), key(rng), value(rng)],
        12 => {
            let mut c = vec!["MGET".into()];
            c.extend((0..1 + rng.below(4)).map(|_| key(rng)));
            c
        }
        13 => {
            let mut c = vec![rng.pick(&["MSET", "MSETNX"]).into()];
            for _ in 0..1 + rng.below(3) {
                c.push(key(rng));
                c.push(value(rng));
            }
            if rng.below(8) == 0 {
                c.pop();
            }
            c
        }
        14..=16 => vec![rng.pick(&["INCR", "DECR"]).into(), key(rng)],
        17..=18 => vec![
            rng.pick(&["INCRBY", "DECRBY"]).into(),
            key(rng),
            number(rng),
        ],
        19..=20 => vec!["INCRBYFLOAT".into(), key(rng), rng.pick(FLOATS).into()],
        21 => vec!["APPEND".into(), key(rng), value(rng)],
        22 => vec!["STRLEN".into(), key(rng)],
        23 => vec![
            rng.pick(&["GETRANGE", "SUBSTR"]).into(),
            key(rng),
            number(rng),
            number(rng),
        ],
        24 => vec![
            "SETRANGE".into(),
            key(rng),
            rng.pick(&["0", "1", "3", "10", "-1", "x", "70"]).into(),
            value(rng),
        ],
        25 => {
            let mut c = vec!["LCS".into(), key(rng), key(rng)];
            match rng.below(5) {
                0 => c.push("LEN".into()),
                1 => c.push("IDX".into()),
                2 => c.extend(["IDX".into(), "MINMATCHLEN".into(), "2".into()]),
                3 => c.extend(["IDX".into(), "WITHMATCHLEN".into()]),
                _ => {}
            }
            c
        }
        26 => {
            let mut c = vec![rng.pick(&["DEL", "UNLINK"]).into()];
            c.extend((0..1 + rng.below(3)).map(|_| key(rng)));
            c
        }
        27 => {
            let mut c = vec![rng.pick(&["EXISTS", "TOUCH"]).into()];
            c.extend((0..1 + rng.below(3)).map(|_| key(rng)));
            c
        }
        28 => vec!["TYPE".into(), key(rng)],
        29..=30 => {
            // Seconds or milliseconds: either way 100 s and more.
            let expire = rng.pick(&["EXPIRE", "PEXPIRE"]);
            let ttl = rng.pick(&["100", "100000", "0", "-10", "x", "9223372036854775807"]);
            let ttl = match (expire, ttl) {
                ("PEXPIRE", "100") => "100000",
                ("PEXPIRE", "100000") => "100000000",
                _ => ttl,
            };
            let mut c = vec![expire.into(), key(rng), ttl.into()];
            if rng.below(2) == 0 {
                c.push(rng.pick(&["NX", "XX", "GT", "LT", "ZZ"]).into());
            }
            if rng.below(6) == 0 {
                c.push(rng.pick(&["NX", "XX", "GT", "LT"]).into());
            }
            c
        }
        31 => {
            let at = match rng.below(3) {
                0 => far.to_string(),
                1 => (far + 7).to_string(),
                _ => "1".into(),
            };
            let mut c = vec!["EXPIREAT".into(), key(rng), at];
            if rng.below(2) == 0 {
                c.push(rng.pick(&["NX", "XX", "GT", "LT"]).into());
            }
            c
        }
        32 => vec!["PEXPIREAT".into(), key(rng), (far * 1000 + 5).to_string()],
        33..=34 => vec![
            rng.pick(&["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"])
                .into(),
            key(rng),
        ],
        35 => vec!["PERSIST".into(), key(rng)],
        36 => vec![rng.pick(&["RENAME", "RENAMENX"]).into(), key(rng), key(rng)],
        37 => {
            let mut c = vec!["COPY".into(), key(rng), key(rng)];
            if rng.below(2) == 0 {
                c.push("REPLACE".into());
            }
            if rng.below(6) == 0 {
                c.extend(["DB".into(), "0".into()]);
            }
            c
        }
        38 => vec!["DBSIZE".into()],
        39 => vec![
            "KEYS".into(),
            rng.pick(&["*", "k*", "k?", "*o*", "[kn]*"]).into(),
        ],
        40 => vec!["SCAN".into(), "0".into()],
        41 => vec!["RANDOMKEY".into()],
        42 => vec![rng
            .pick(&["FLUSHDB", "PING", "ECHO", "NOSUCH", "INCR"])
            .into()],
        _ => vec!["STRLEN".into()],
    };
    if c[0] == "MULTI" && rng.below(3) == 0 {
        // Most transactions end; a third run on until a later EXEC.
        c = vec!["EXEC".into()];
    }
    if c[0] == "ECHO" {
        c.push(value(rng));
    }
    if c[0] == "FLUSHDB" && rng.below(4) != 0 {
        // Rare, so the keyspace has time to fill.
        c = vec!["DBSIZE".into()];
    }
    c
}

/// All keys through SCAN with a small COUNT, each as its raw bulk
/// string, sorted; on a RESP2 connection of its own.
fn scan_all(port: u16) -> Vec<Vec<u8>> {
    let mut conn = Raw::connect(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut keys = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let args = [
            b"SCAN".to_vec(),
            cursor.clone(),
            b"COUNT".to_vec(),
            b"3".to_vec(),
        ];
        let reply = conn.call(&args);
        let mut reader = BufReader::new(&reply[..]);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header).unwrap();
        assert_eq!(header, b"*2\r\n", "{}", String::from_utf8_lossy(&reply));
        let mut next = Vec::new();
        read_raw(&mut reader, &mut next);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        keys.extend(sorted_elements(&rest));
        // "$1\r\n0\r\n" ends the scan.
        let next = next.split(|&b| b == b'\n').nth(1).unwrap();
        cursor = next[..next.len() - 1].to_vec();
        if cursor == b"0" {
            break;
        }
    }
    keys.sort();
    keys
}

/// The elements of a flat array reply, sorted.
fn sorted_elements(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = BufReader::new(reply);
    let mut header = Vec::new();
    reader.read_until(b'\n', &mut header).unwrap();
    let n: usize = String::from_utf8_lossy(&header[1..header.len() - 2])
        .parse()
        .unwrap();
    let mut items: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut item = Vec::new();
            read_raw(&mut reader, &mut item);
            item
        })
        .collect();
    items.sort();
    items
}

/// Commands whose replies are compared with an allowance.
const UNORDERED: &[&str] = &[
    "TTL",
    "PTTL",
    "EXPIRETIME",
    "PEXPIRETIME",
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    "DBSIZE",
];

/// An integer reply's value.
fn integer(reply: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(reply.strip_prefix(b":")?).ok()?;
    text.trim_end().parse().ok()
}

/// Runs `count` commands from `seed` against both servers in `protocol`
/// (2 or 3) and checks every reply; returns the number compared.
fn compare(rkv: &Daemon, redis: &RedisServer, protocol: u8, seed: u64, count: usize) -> usize {
    let mut a = Raw::connect(rkv.raw());
    let mut b = Raw::connect(TcpStream::connect(("127.0.0.1", redis.port)).unwrap());
    for conn in [&mut a, &mut b] {
        let hello = conn.call(&[b"HELLO".to_vec(), protocol.to_string().into_bytes()]);
        let expected: &[u8] = if protocol == 3 { b"%7\r\n" } else { b"*14\r\n" };
        assert!(
            hello.starts_with(expected),
            "{}",
            String::from_utf8_lossy(&hello)
        );
        assert_eq!(conn.call(&[b"FLUSHALL".to_vec()]), b"+OK\r\n");
    }
    let far = rkv::db::now_ms() / 1000 + 10_000_000;
    let mut rng = Rng(seed);
    let mut compared = 0;
    let mut in_multi = false;
    for i in 0..count {
        let mut words = command(&mut rng, far);
        // Inside MULTI only commands whose replies are compared byte for
        // byte: the allowances below cannot look into EXEC's array.
        while in_multi && UNORDERED.contains(&words[0].to_ascii_uppercase().as_str()) {
            words = command(&mut rng, far);
        }
        let args: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        match name.as_str() {
            "MULTI" => in_multi = true,
            "EXEC" | "DISCARD" => in_multi = false,
            _ => {}
        }
        let (got, want) = (a.call(&args), b.call(&args));
        let shown = || {
            format!(
                "command {i} of seed {seed} in RESP{protocol}: {:?}\n rkv:   {:?}\n redis: {:?}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            )
        };
        match name.as_str() {
            "TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME" if got != want => {
                // The two servers run each command moments apart, and a
                // busy machine may hold either one back for a while.
                let slack = if name.starts_with('P') { 5000 } else { 5 };
                let (x, y) = (integer(&got), integer(&want));
                let close = matches!((x, y), (Some(x), Some(y)) if x >= 0 && y >= 0 && (x - y).abs() <= slack);
                assert!(close, "{}", shown());
            }
            "KEYS" if !got.starts_with(b"-") => {
                assert_eq!(sorted_elements(&got), sorted_elements(&want), "{}", shown());
            }
            "SCAN" => {
                let rkv_port = port_of(rkv).parse().unwrap();
                assert_eq!(scan_all(rkv_port), scan_all(redis.port), "{}", shown());
            }
            // Redis counts keys past their deadline that it has not
            // reclaimed yet; rkv never does. KEYS skips them in both.
            "DBSIZE" if got != want => {
                let live = sorted_elements(&b.call(&[b"KEYS".to_vec(), b"*".to_vec()])).len();
                assert_eq!(integer(&got), Some(live as i64), "{}", shown());
            }
            "RANDOMKEY" => assert_eq!(got.starts_with(b"$"), want.starts_with(b"$"), "{}", shown()),
            _ => assert_eq!(got, want, "{}", shown()),
        }
        compared += 1;
    }
    compared
}

#[test]
fn string_and_keyspace_commands_answer_byte_for_byte_as_redis_does() {
    let s = Sandbox::new();
    let rkv = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let redis = RedisServer::start(s.root());
    // RKV_COMPAT_ROUNDS=N runs N rounds of new seeds (a longer search).
    let rounds: u64 = std::env::var("RKV_COMPAT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut compared = 0;
    for round in 0..rounds {
        for (protocol, seed) in [(2, 0x9E37_79B9_7F4A_7C15), (3, 0xD1B5_4A32_D192_ED03)] {
            let seed = seed ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D);
            compared += compare(&rkv, &redis, protocol, seed, 4000);
        }
    }
    println!("compared {compared} replies with redis-server's");
    assert_eq!(compared, rounds as usize * 8000);
}

/// A master that backs up on SAVE only, and a follower polling every
/// 100 ms.
fn master_and_follower(s: &Sandbox) -> (Daemon, Daemon) {
    let master = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let follower = Daemon::follower(
        &s.path("backups"),
        &s.path("f"),
        &["--poll-interval", "100ms"],
    );
    (master, follower)
}

#[test]
fn an_expired_key_is_gone_at_once_on_the_master_every_follower_and_the_cli() {
    let s = Sandbox::new();
    let (master, follower) = master_and_follower(&s);
    let mut m = master.client();
    let stays_at = Instant::now();
    m.call(&[b"SET", b"stays", b"w", b"EX", b"1000"]).unwrap();
    m.call(&[b"SET", b"plain", b"p"]).unwrap();
    m.call(&[b"SAVE"]).unwrap();
    let mut f = follower.client();
    wait_until(GENEROUS, "the follower applied", || {
        f.call(&[b"GET", b"plain"]).ok() == Some(Reply::bulk("p"))
    });
    // A key the follower serves until its deadline. (How long the backup
    // takes to get there depends on the machine: when the deadline passed
    // before it did, try again with a longer one.)
    let (set_at, px) = [4_000, 16_000, 64_000]
        .into_iter()
        .find_map(|px: u64| {
            let set_at = Instant::now();
            let px = Duration::from_millis(px);
            let ms = px.as_millis().to_string();
            m.call(&[b"SET", b"gone", b"v", b"PX", ms.as_bytes()])
                .unwrap();
            m.call(&[b"SAVE"]).unwrap();
            loop {
                if f.call(&[b"GET", b"gone"]).unwrap() == Reply::bulk("v") {
                    return Some((set_at, px));
                }
                if set_at.elapsed() >= px {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .expect("the follower never served the key before its deadline, even 64 s away");
    let ttl = f.call(&[b"TTL", b"stays"]).unwrap();
    let low = 1000 - stays_at.elapsed().as_secs() as i64 - 1;
    assert!(
        matches!(ttl, Reply::Integer(t) if (low..=1000).contains(&t)),
        "{ttl:?}"
    );

    // The CLI shows deadlines, from the daemon and from the data directory.
    let connect = format!("--connect={}", follower.addr);
    let shown = rkv(&[&connect, "get", "stays", "--show_deadline"]).ok();
    assert!(
        shown.starts_with("w : 20") && shown.trim_end().ends_with('Z'),
        "{shown}"
    );
    let local = format!("--db={}", s.path("f").display());
    let scanned = rkv(&[&local, "scan", "--show_deadline"]).ok();
    assert!(scanned.contains("plain : p : never"), "{scanned}");
    assert!(scanned.contains("stays : w : 20"), "{scanned}");

    std::thread::sleep((px + Duration::from_millis(100)).saturating_sub(set_at.elapsed()));
    for (who, c) in [("master", &mut m), ("follower", &mut f)] {
        let ask = |c: &mut rkv::client::Client, args: &[&[u8]]| c.call(args).unwrap();
        assert_eq!(ask(c, &[b"GET", b"gone"]), Reply::Bulk(None), "{who}");
        assert_eq!(ask(c, &[b"EXISTS", b"gone"]), Reply::Integer(0), "{who}");
        assert_eq!(
            ask(c, &[b"MGET", b"gone", b"plain"]),
            Reply::array(vec![Reply::Bulk(None), Reply::bulk("p")]),
            "{who}"
        );
        assert_eq!(
            ask(c, &[b"TYPE", b"gone"]),
            Reply::Simple("none".into()),
            "{who}"
        );
        assert_eq!(ask(c, &[b"TTL", b"gone"]), Reply::Integer(-2), "{who}");
        assert_eq!(ask(c, &[b"DBSIZE"]), Reply::Integer(2), "{who}");
        assert_eq!(
            ask(c, &[b"KEYS", b"*"]),
            Reply::array(vec![Reply::bulk("plain"), Reply::bulk("stays")]),
            "{who}"
        );
        assert_eq!(
            ask(c, &[b"SCAN", b"0"]),
            Reply::array(vec![
                Reply::bulk("0"),
                Reply::array(vec![Reply::bulk("plain"), Reply::bulk("stays")])
            ]),
            "{who}"
        );
    }
    let scanned = rkv(&[&connect, "scan"]).ok();
    assert_eq!(scanned, "plain : p\nstays : w\n");
    rkv(&[&connect, "get", "gone"]).fails(1, &["gone"]);
}

/// The Python with the newest redis-py from PyPI that the test command
/// installs (`RKV_REDIS_PY`, else its virtualenv).
pub(crate) fn redis_py() -> std::path::PathBuf {
    match std::env::var_os("RKV_REDIS_PY") {
        Some(python) => python.into(),
        None => {
            let home = std::env::var_os("HOME").expect("HOME");
            std::path::Path::new(&home).join(".cache/rkv/redis-py-venv/bin/python")
        }
    }
}

/// Runs `script` in redis-py's Python with `args`; asserts it succeeded and
/// printed `ok`, and returns what it printed.
#[track_caller]
pub(crate) fn run_redis_py(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(redis_py())
        .args(["-c", script])
        .args(args)
        .output()
        .expect("redis-py's Python (scripts/test.sh installs it)");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("ok"),
        "redis-py: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// What a redis-py user does, at the library's default settings and with
/// RESP2 and RESP3 asked for explicitly: prints the version and `ok`.
const REDIS_PY_SCRIPT: &str = r#"
import sys, redis
master, follower = int(sys.argv[1]), int(sys.argv[2])
for kw in ({}, {"protocol": 2}, {"protocol": 3}):
    r = redis.Redis(port=master, **kw)
    assert r.ping()
    assert r.set("greeting", "hello", ex=600)
    assert r.get("greeting") == b"hello"
    assert 590 <= r.ttl("greeting") <= 600
    assert r.incr("visits") >= 1
    assert r.incrbyfloat("price", "0.1") > 0
    assert r.getex("greeting", persist=True) == b"hello" and r.ttl("greeting") == -1
    assert r.info()["redis_version"]
    p = r.pipeline(transaction=True)
    p.set("x", 1).incr("x").get("x")
    assert p.execute() == [True, 2, b"2"], "MULTI/EXEC"
    # A check-and-set loop with WATCH, as redis-py's docs show it.
    with r.pipeline() as p:
        while True:
            try:
                p.watch("x")
                value = int(p.get("x"))
                p.multi()
                p.set("x", value + 1)
                p.execute()
                break
            except redis.WatchError:
                continue
    assert r.get("x") == b"3"
    assert b"greeting" in r.keys("*") and b"greeting" in list(r.scan_iter("gr*"))
    assert r.delete("x") == 1 and r.exists("x") == 0
r = redis.Redis(port=master)
r.set("replicated", "yes")
r.save()
f = redis.Redis(port=follower, protocol=3)
hello = f.execute_command("HELLO", 3)
role = hello.get(b"role", hello.get("role"))
assert role in (b"replica", "replica"), hello
import time
for _ in range(600):
    try:
        if f.get("replicated") == b"yes":
            break
    except redis.exceptions.MasterDownError:
        pass  # no backup applied yet
    time.sleep(0.1)
assert f.get("replicated") == b"yes"
# Read your writes, as the README shows it: one connection each.
writer = redis.Redis(port=master, single_connection_client=True)
reader = redis.Redis(port=follower, single_connection_client=True)
for i in range(200):
    writer.set("cart:42", i)
    position = writer.execute_command("RKV.POSITION")
    reader.execute_command("RKV.READAFTER", position, 30000)
    assert reader.get("cart:42") == str(i).encode(), (i, position)
    assert f.execute_command("RKV.WAIT", position, 30000) >= position
try:
    f.execute_command("RKV.WAIT", position + 10**9, 50)
    raise SystemExit("a wait for a position never written returned")
except redis.ResponseError as e:
    assert str(e).startswith("TIMEOUT position"), e
try:
    f.set("k", "v")
    raise SystemExit("a follower took a write")
except redis.exceptions.ReadOnlyError:
    pass
print(redis.__version__, "ok")
"#;

fn port_of(d: &Daemon) -> String {
    d.addr.to_string().rsplit(':').next().unwrap().to_string()
}

#[test]
fn real_clients_at_their_default_settings_work() {
    let s = Sandbox::new();
    let (master, follower) = master_and_follower(&s);
    let (m, f) = (port_of(&master), port_of(&follower));

    // The newest redis-py, with its defaults, RESP2 and RESP3.
    let said = run_redis_py(REDIS_PY_SCRIPT, &[m.as_ref(), f.as_ref()]);
    println!("redis-py {}", said.trim());

    // redis-benchmark's own tests, pipelined: none fails, no INCR is lost.
    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &m,
            "-t",
            "set,get,incr,mset",
            "-n",
            "20000",
            "-P",
            "16",
            "-q",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&bench.stdout);
    for test in ["SET:", "GET:", "INCR:", "MSET (10 keys):"] {
        assert!(report.contains(test), "{test} missing: {report}");
    }
    assert!(!report.contains("Error"), "{report}");
    let mut c = master.client();
    assert_eq!(
        c.call(&[b"GET", b"counter:__rand_int__"]).unwrap(),
        Reply::bulk("20000")
    );

    // redis-cli's tools.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &m])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let big = cli(&["--bigkeys"]);
    assert!(
        big.contains("Biggest string found") && big.contains("strings with"),
        "{big}"
    );
    let mem = cli(&["--memkeys"]);
    assert!(
        mem.contains("strings with") && mem.contains("bytes"),
        "{mem}"
    );
    let scanned = cli(&["--scan", "--pattern", "greet*"]);
    assert_eq!(scanned.trim(), "greeting");
    // --stat repeats until stopped: its first two readings.
    let mut stat = Command::new("stdbuf")
        .args(["-oL", "redis-cli", "-p", &m, "--stat", "-i", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(stat.stdout.take().unwrap()).lines();
    let header: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    let _ = stat.kill();
    let _ = stat.wait();
    assert!(header[1].starts_with("keys"), "{header:?}");
    let keys: u64 = header[2]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(keys > 0, "{header:?}");
}

#[test]
fn pipelined_writes_are_grouped_but_answer_in_order_as_redis_does() {
    let s = Sandbox::new();
    let rkv = Daemon::master(&s.path("db"), &s.path("backups"), &["--interval", "0"]);
    let redis = RedisServer::start(s.root());
    // Writes that rkv runs as groups, broken by reads and errors.
    let script: &[&[&str]] = &[
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["INCRBY", "a", "x"],
        &["INCR", "a"],
        &["GET", "a"],
        &["APPEND", "a", "z"],
        &["INCR", "a"],
        &["SET", "b", "v", "EX", "100"],
        &["SET", "b", "w", "KEEPTTL", "GET"],
        &["TTL", "b"],
        &["SET", "c", "1"],
        &["SET", "c", "2"],
        &["GETDEL", "c"],
        &["MSETNX", "c", "3", "d", "4"],
        &["RENAME", "d", "e"],
        &["MGET", "a", "b", "c", "d", "e"],
        // A stored key set without a read, then deleted or given a
        // deadline in the same group.
        &["SET", "a", "2"],
        &["DEL", "a"],
        &["SET", "e", "5"],
        &["EXPIRE", "e", "100"],
        &["EXISTS", "a", "e"],
        &["GET", "e"],
        &["TTL", "e"],
    ];
    let mut wire = Vec::new();
    for args in script {
        wire.extend(format!("*{}\r\n", args.len()).into_bytes());
        for arg in *args {
            wire.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
        }
    }
    let answers = |stream: TcpStream| {
        let mut conn = Raw::connect(stream);
        conn.writer.write_all(&wire).unwrap();
        let mut replies = Vec::new();
        for _ in script {
            let mut reply = Vec::new();
            read_raw(&mut conn.reader, &mut reply);
            replies.push(String::from_utf8_lossy(&reply).into_owned());
        }
        replies
    };
    let got = answers(rkv.raw());
    let want = answers(TcpStream::connect(("127.0.0.1", redis.port)).unwrap());
    for ((args, got), want) in script.iter().zip(&got).zip(&want) {
        if args[0] == "TTL" && got != want {
            // Seconds left, read moments apart: the one allowance.
            let (x, y) = (integer(got.as_bytes()), integer(want.as_bytes()));
            let close =
                matches!((x, y), (Some(x), Some(y)) if x >= 0 && y >= 0 && (x - y).abs() <= 5);
            assert!(close, "{args:?}: rkv {got:?}, redis {want:?}");
        } else {
            assert_eq!(got, want, "{args:?}");
        }
    }
}

#[test]
fn a_follower_answers_every_read_command_refuses_every_write_and_follows_a_flushall() {
    let s = Sandbox::new();
    let (master, follower) = master_and_follower(&s);
    let mut m = master.client();
    m.call(&[b"SET", b"k", b"hello", b"EX", b"1000"]).unwrap();
    m.call(&[b"SET", b"n", b"41"]).unwrap();
    m.call(&[b"SAVE"]).unwrap();
    let mut f = follower.client();
    wait_until(GENEROUS, "the follower applied", || {
        f.call(&[b"GET", b"n"]).ok() == Some(Reply::bulk("41"))
    });
    let reads: &[&[&str]] = &[
        &["GET", "k"],
        &["MGET", "k", "n"],
        &["GETRANGE", "k", "0", "1"],
        &["SUBSTR", "k", "0", "1"],
        &["STRLEN", "k"],
        &["LCS", "k", "n"],
        &["TTL", "k"],
        &["PTTL", "k"],
        &["EXPIRETIME", "k"],
        &["PEXPIRETIME", "k"],
        &["EXISTS", "k", "n"],
        &["TOUCH", "k"],
        &["TYPE", "k"],
        &["KEYS", "*"],
        &["SCAN", "0", "TYPE", "string"],
        &["RANDOMKEY"],
        &["DBSIZE"],
        &["MEMORY", "USAGE", "k"],
        &["OBJECT", "ENCODING", "n"],
    ];
    for args in reads {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = f.call_raw(&args).unwrap();
        assert!(!matches!(reply, Reply::Error(_)), "{args:?}: {reply:?}");
    }
    let writes: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["INCR", "n"],
        &["APPEND", "k", "x"],
        &["SETRANGE", "k", "0", "x"],
        &["GETDEL", "k"],
        &["GETEX", "k", "PERSIST"],
        &["GETEX", "k"],
        &["EXPIRE", "k", "5"],
        &["PERSIST", "k"],
        &["DEL", "k"],
        &["UNLINK", "k"],
        &["RENAME", "k", "k2"],
        &["COPY", "k", "k2"],
        &["MSETNX", "a", "1"],
        &["FLUSHALL"],
    ];
    for args in writes {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(
            f.call_raw(&args).unwrap(),
            Reply::error("READONLY You can't write against a read only replica."),
            "{args:?}"
        );
    }
    // FLUSHALL on the master reaches the follower with the next backup.
    m.call(&[b"FLUSHALL", b"ASYNC"]).unwrap();
    m.call(&[b"SET", b"after", b"1"]).unwrap();
    m.call(&[b"SAVE"]).unwrap();
    wait_until(GENEROUS, "the follower flushed", || {
        f.call(&[b"GET", b"after"]).ok() == Some(Reply::bulk("1"))
    });
    assert_eq!(f.call(&[b"DBSIZE"]).unwrap(), Reply::Integer(1));
    assert_eq!(f.call(&[b"GET", b"n"]).unwrap(), Reply::Bulk(None));
}
