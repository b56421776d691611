#!/usr/bin/env python3
"""Renders the dashboard's key panel from a real run: follower lag over time.

Starts moto's S3 server, an rkv-master backing up every second into it, two
followers polling it (every 200 ms and every 3 s) and a Prometheus server
scraping all three every second. A client writes ten keys a second; the
master is paused (SIGSTOP) from 40 s to 60 s, so both followers' staleness
climbs until it resumes. Prometheus's own range query of
rkv_follower_staleness_seconds is then plotted with gnuplot, one line per
follower, as the Grafana panel "Follower staleness" shows it.

Usage: scripts/dashboard.py [--out contrib/grafana/rkv-dashboard.png]
Environment: RKV_BIN_DIR (default $CARGO_TARGET_DIR/release, else
$HOME/.cache/rkv/target/release), RKV_MOTO_SERVER (default the test
command's virtualenv). Needs prometheus and gnuplot.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"dashboard.py: timed out waiting for {what}")


def http(method, url, data=None):
    request = urllib.request.Request(url, method=method, data=data)
    request.add_header("Authorization", "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return reply.read()


def resp_set(port, key, value):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        parts = [b"SET", key.encode(), value.encode()]
        s.sendall(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        s.recv(64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(ROOT, "contrib/grafana/rkv-dashboard.png"))
    args = parser.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/rkv/target"))
    bins = os.environ.get("RKV_BIN_DIR", os.path.join(target, "release"))
    moto_bin = os.environ.get("RKV_MOTO_SERVER", os.path.expanduser("~/.cache/rkv/moto-venv/bin/moto_server"))
    work = tempfile.mkdtemp(prefix="rkv-dashboard-")
    procs = []
    env = dict(os.environ, AWS_ACCESS_KEY_ID="rkv", AWS_SECRET_ACCESS_KEY="rkv", AWS_REGION="us-east-1", RKV_LOG="warn")

    def start(argv, log):
        proc = subprocess.Popen(argv, stdout=open(os.path.join(work, log), "w"), stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        return proc

    try:
        s3 = free_port()
        start([moto_bin, "-H", "127.0.0.1", "-p", str(s3)], "moto.log")
        wait("moto", lambda: http("PUT", f"http://127.0.0.1:{s3}/rkv-dashboard") is not None)
        store = ["--backup-dir", "s3://rkv-dashboard/demo", "--s3-endpoint", f"http://127.0.0.1:{s3}"]
        ports = {name: (free_port(), free_port()) for name in ("master", "f1", "f2")}
        master = start([os.path.join(bins, "rkv-master"), "--db", os.path.join(work, "db"), *store,
                        "--interval", "1s", "--listen", f"127.0.0.1:{ports['master'][0]}",
                        "--metrics-listen", f"127.0.0.1:{ports['master'][1]}"], "master.log")
        for name, poll in (("f1", "200ms"), ("f2", "3s")):
            start([os.path.join(bins, "rkv-follower"), "--data", os.path.join(work, name), *store,
                   "--poll-interval", poll, "--listen", f"127.0.0.1:{ports[name][0]}",
                   "--metrics-listen", f"127.0.0.1:{ports[name][1]}"], f"{name}.log")
        prom = free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n")
            for name, (_, metrics) in ports.items():
                f.write(f"  - job_name: {name}\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n")
        start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work}/tsdb",
               f"--web.listen-address=127.0.0.1:{prom}"], "prometheus.log")
        wait("the master", lambda: resp_set(ports["master"][0], "start", "1") is None)

        stop = threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                try:
                    resp_set(ports["master"][0], f"key:{n % 1000}", str(n))
                except OSError:
                    pass
                n += 1
                time.sleep(0.1)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        began = time.time()
        print("dashboard.py: running 100 s (master paused from 40 s to 60 s)", file=sys.stderr)
        time.sleep(40)
        master.send_signal(signal.SIGSTOP)
        time.sleep(20)
        master.send_signal(signal.SIGCONT)
        time.sleep(40)
        stop.set()
        ended = time.time()

        query = urllib.parse.urlencode({"query": "rkv_follower_staleness_seconds", "start": began,
                                        "end": ended, "step": "1"})
        result = json.loads(http("GET", f"http://127.0.0.1:{prom}/api/v1/query_range?{query}"))
        series = {s["metric"]["job"]: s["values"] for s in result["data"]["result"]}
        if sorted(series) != ["f1", "f2"]:
            sys.exit(f"dashboard.py: expected both followers' staleness, got {sorted(series)}")
        data = os.path.join(work, "staleness.dat")
        with open(data, "w") as f:
            for name in ("f1", "f2"):
                for t, v in series[name]:
                    f.write(f"{float(t) - began:.1f} {float(v):.3f}\n")
                f.write("\n\n")
        script = f"""
set terminal pngcairo size 1100,420 font ",10" noenhanced
set output "{args.out}"
set title "rkv replication: Follower staleness (rkv_follower_staleness_seconds, scraped by Prometheus every 1 s)"
set xlabel "seconds since start (master paused 40-60 s)"
set ylabel "staleness (s)"
set grid
set key top left
set object 1 rect from 40, graph 0 to 60, graph 1 fc rgb "#f4dcdc" fs solid 0.5 noborder behind
plot "{data}" index 0 with lines lw 2 title "follower f1 (--poll-interval 200ms)", \\
     "{data}" index 1 with lines lw 2 title "follower f2 (--poll-interval 3s)"
"""
        subprocess.run(["gnuplot"], input=script.encode(), check=True)
        print(f"dashboard.py: wrote {args.out}", file=sys.stderr)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
