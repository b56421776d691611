//! The object store across real network links: the S3 server, the master,
//! two followers and a second master each in their own network namespace,
//! joined to the store's by veth pairs with addresses this test assigns, so
//! that each reaches the store only over a link that can be cut. Needs root;
//! without it the test says it skipped (the loopback variants in `s3.rs`
//! still run).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::moto::Moto;
use crate::s3::{store_env, url, BUCKET};
use crate::util::{bulk, fill, get, refused_with_env, serves, Daemon, Sandbox};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces and the veth pairs between them, removed on drop.
struct Net {
    tag: String,
    namespaces: Vec<String>,
    links: u32,
}

/// One veth pair: `b`'s end, and both addresses.
struct Link {
    b_dev: String,
    a_addr: String,
    b_addr: String,
}

/// Tells the links of concurrent tests apart (within this process).
static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Net {
            tag: format!("{}{n}", std::process::id() % 10_000),
            namespaces: Vec::new(),
            links: 0,
        }
    }

    /// A new namespace with its loopback up.
    fn namespace(&mut self, name: &str) -> String {
        let ns = format!("rkv{}-{name}", self.tag);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A veth pair between namespaces `a` and `b` (`None`: the test's own),
    /// on its own /24.
    fn link(&mut self, a: Option<&str>, b: &str) -> Link {
        self.links += 1;
        let block = NEXT.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        let (ea, eb) = (
            format!("rk{}{}a", self.tag, self.links),
            format!("rk{}{}b", self.tag, self.links),
        );
        let _ = Command::new("ip").args(["link", "del", &ea]).output();
        ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb]);
        let (addr_a, addr_b) = (format!("10.213.{block}.1"), format!("10.213.{block}.2"));
        let place = |dev: &str, ns: Option<&str>, addr: &str| {
            if let Some(ns) = ns {
                ip(&["link", "set", dev, "netns", ns]);
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
                ip(&["-n", ns, "link", "set", dev, "up"]);
            } else {
                ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
                ip(&["link", "set", dev, "up"]);
            }
        };
        place(&ea, a, &addr_a);
        place(&eb, Some(b), &addr_b);
        Link {
            b_dev: eb,
            a_addr: addr_a,
            b_addr: addr_b,
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[test]
fn separate_hosts_replicate_catch_up_after_a_cut_link_and_fence_a_second_master() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        eprintln!(
            "SKIPPED: the network-namespace variant needs root and iproute2; the loopback \
             variants in s3.rs ran"
        );
        return;
    }
    let s = Sandbox::new();
    let mut net = Net::new();
    let store_ns = net.namespace("store");
    // The test reaches the store (to create the bucket) over its own link.
    let store_addr = net.link(None, &store_ns).b_addr;
    let mut moto = Moto::start_with(
        &["ip", "netns", "exec", &store_ns],
        "0.0.0.0",
        0,
        s.path("moto.log"),
    );
    let port = moto.addr.rsplit(':').next().unwrap().to_string();
    moto.addr = format!("{store_addr}:{port}");
    moto.create_bucket(BUCKET);

    // Each daemon: a namespace, a link to the store (the only way to it)
    // and a link to the test, on which it serves.
    let mut host = |name: &str| {
        let ns = net.namespace(name);
        let store_link = net.link(Some(&store_ns), &ns);
        let serve = net.link(None, &ns).b_addr;
        let endpoint = format!("http://{}:{port}", store_link.a_addr);
        (ns, endpoint, serve, store_link.b_dev)
    };
    let (m_ns, m_endpoint, m_addr, _) = host("master");
    let (f1_ns, f1_endpoint, f1_addr, f1_dev) = host("f1");
    let (f2_ns, f2_endpoint, f2_addr, _) = host("f2");
    let (m2_ns, m2_endpoint, m2_addr, _) = host("master2");
    let url = url("hosts");
    let start = |bin: &str, ns: &str, args: Vec<String>, dir: &std::path::Path| {
        let mut argv = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            ns.into(),
            bin.into(),
        ];
        argv.extend(args);
        Daemon::start_argv(&argv, &store_env(), dir)
    };
    let listen = |addr: &str| {
        vec![
            "--listen".to_string(),
            format!("{addr}:0"),
            "--protected-mode".into(),
            "no".into(),
        ]
    };
    let mut margs = vec![
        "--db".to_string(),
        s.path("db").display().to_string(),
        "--backup-dir".into(),
        url.clone(),
        "--s3-endpoint".into(),
        m_endpoint,
        "--interval".into(),
        "1s".into(),
    ];
    margs.extend(listen(&m_addr));
    let m = start(
        env!("CARGO_BIN_EXE_rkv-master"),
        &m_ns,
        margs,
        &s.path("db"),
    );
    let follower = |ns: &str, endpoint: &str, addr: &str, name: &str| {
        let mut args = vec![
            "--data".to_string(),
            s.path(name).display().to_string(),
            "--backup-dir".into(),
            url.clone(),
            "--s3-endpoint".into(),
            endpoint.to_string(),
            "--poll-interval".into(),
            "200ms".into(),
        ];
        args.extend(listen(addr));
        start(env!("CARGO_BIN_EXE_rkv-follower"), ns, args, &s.path(name))
    };
    let f1 = follower(&f1_ns, &f1_endpoint, &f1_addr, "f1");
    let f2 = follower(&f2_ns, &f2_endpoint, &f2_addr, "f2");

    fill(&m, "base", 4);
    m.client().call(&[b"SET", b"k", b"1"]).unwrap();
    for f in [&f1, &f2] {
        serves(f, "k", "1");
    }

    // Cut follower 1 off for several intervals while the master writes.
    ip(&["-n", &f1_ns, "link", "set", &f1_dev, "down"]);
    for i in 2..=6 {
        m.client()
            .call(&[b"SET", b"k", i.to_string().as_bytes()])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    serves(&f2, "k", "6");
    assert_eq!(
        get(&f1, "k"),
        Some(bulk("1")),
        "the cut-off follower keeps serving"
    );
    let shared = moto.keys(BUCKET, "hosts/shared_checksum/").len();
    let before = moto.requests().len();

    ip(&["-n", &f1_ns, "link", "set", &f1_dev, "up"]);
    serves(&f1, "k", "6");
    // Incremental: only what changed while it was away came over the link
    // (the restore into its generation may still copy more, when the
    // master compacted meanwhile).
    let downloaded = moto.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/shared_checksum/"))
        .count();
    assert!(
        downloaded < shared,
        "caught up with {downloaded} of {shared} shared files downloaded"
    );
    // A second master on another host, on the same prefix, while the first
    // renews its heartbeat: refused.
    let mut argv = vec![
        "ip",
        "netns",
        "exec",
        &m2_ns,
        env!("CARGO_BIN_EXE_rkv-master"),
    ];
    let db2 = s.path("db2").display().to_string();
    let listen2 = format!("{m2_addr}:0");
    argv.extend([
        "--db",
        &db2,
        "--backup-dir",
        &url,
        "--s3-endpoint",
        &m2_endpoint,
    ]);
    argv.extend([
        "--listen",
        &listen2,
        "--protected-mode",
        "no",
        "--take-over",
    ]);
    let err = refused_with_env(argv[0], &argv[1..], &store_env(), 1);
    assert!(err.contains("holds the backup directory"), "{err}");
    assert_eq!(get(&f2, "k"), Some(bulk("6")));
}
