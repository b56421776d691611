//! A real S3-compatible server for the tests and the benchmark: moto's server (PyPI
//! `moto[server]`), which the test command installs into a virtualenv
//! under the cache directory, started per test on a port of its choosing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    /// `host:port`.
    pub addr: String,
    log: PathBuf,
}

/// One request the server logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// moto's server: `RKV_MOTO_SERVER`, else the test command's virtualenv.
fn moto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RKV_MOTO_SERVER") {
        return bin.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    Path::new(&home).join(".cache/rkv/moto-venv/bin/moto_server")
}

impl Moto {
    /// Whether moto's server is installed.
    pub fn installed() -> bool {
        moto_bin().exists()
    }

    /// Starts moto on `host`, on `port` (0: of its choosing), run through
    /// `prefix` (e.g. `ip netns exec NS`), and waits until it listens.
    pub fn start_with(prefix: &[&str], host: &str, port: u16, log: PathBuf) -> Moto {
        let bin = moto_bin();
        assert!(
            bin.exists(),
            "no moto server at {} (scripts/test.sh installs it; or set RKV_MOTO_SERVER)",
            bin.display()
        );
        let file = std::fs::File::create(&log).unwrap();
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.extend([
            bin.display().to_string(),
            "-H".into(),
            host.into(),
            "-p".into(),
            port.to_string(),
        ]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut moto = Moto {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = moto.log_text();
            if let Some(rest) = text.split("Running on http://").nth(1) {
                let port = rest.split_whitespace().next().unwrap();
                let port = port.rsplit(':').next().unwrap().to_string();
                moto.addr = format!("{host}:{port}");
                return moto;
            }
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "moto did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts moto on loopback, logging into `dir`.
    pub fn start(dir: &Path) -> Moto {
        Moto::start_with(&[], "127.0.0.1", 0, dir.join("moto.log"))
    }

    /// `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one plain HTTP request; returns the status and the body. moto
    /// checks no signature, but wants an Authorization header on deletes.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=rkv-test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        (status.unwrap_or(0), reply)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        assert_eq!(
            self.http("PUT", &format!("/{name}")).0,
            200,
            "create bucket {name}"
        );
    }

    /// Deletes an object (`bucket/key`).
    pub fn delete(&self, object: &str) {
        let status = self.http("DELETE", &format!("/{object}")).0;
        assert!(status == 204 || status == 200, "delete {object}: {status}");
    }

    /// The keys under `bucket/prefix` (one ListObjectsV2 page).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (_, body) = self.http("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"));
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The requests the server answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log_text().lines().filter_map(parse_request).collect()
    }
}

/// `127.0.0.1 - - [date] "GET /b/k HTTP/1.1" 304 -` (moto colours some
/// lines with terminal escapes).
fn parse_request(line: &str) -> Option<Request> {
    let (_, quoted) = line.split_once('"')?;
    let (request, rest) = quoted.split_once('"')?;
    let mut parts = request.split_whitespace();
    let method = parts.next()?;
    let path = parts.next()?;
    let status = rest
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(Request {
        method: method
            .trim_start_matches(|c: char| !c.is_ascii_uppercase())
            .to_string(),
        path: path.to_string(),
        status,
    })
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
