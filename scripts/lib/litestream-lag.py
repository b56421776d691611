#!/usr/bin/env python3
"""Litestream's write-to-readable lag, measured as rkv-bench measures rkv's.

A SQLite database in WAL mode takes a background load (KEYS_PER_S upserts a
second, as transactions of 50 every 10 ms) and a probe row every 50 ms;
`litestream replicate` ships it to a file replica at its fastest settings, and
`litestream restore -f` follows the replica into a read-only copy, which a
reader polls every 2 ms for the newest probe. Prints one JSON object: the lag
of every probe seen, in milliseconds, with the time it was written.

Usage: litestream-lag.py WORKDIR SECONDS KEYS_PER_S
"""
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time

work, seconds, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
os.makedirs(work, exist_ok=True)
db_path = os.path.join(work, "primary.db")
replica_dir = os.path.join(work, "replica")
follower_path = os.path.join(work, "follower.db")
config = os.path.join(work, "litestream.yml")

db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
db.execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER PRIMARY KEY)")
db.execute("INSERT INTO probe (n) VALUES (-1)")

with open(config, "w") as f:
    # The fastest settings Litestream offers: check the WAL and ship it
    # every 10 ms (defaults: 1 s each).
    f.write(
        f"dbs:\n  - path: {db_path}\n    monitor-interval: 10ms\n"
        f"    replicas:\n      - type: file\n        path: {replica_dir}\n"
        f"        sync-interval: 10ms\n"
    )
log = open(os.path.join(work, "litestream.log"), "w")
replicate = subprocess.Popen(
    ["litestream", "replicate", "-config", config], stdout=log, stderr=log
)
follower = None
try:
    deadline = time.time() + 60
    while not os.path.isdir(replica_dir) or not os.listdir(replica_dir):
        if time.time() > deadline:
            sys.exit("litestream did not create its replica within 60 s")
        time.sleep(0.05)
    time.sleep(1)
    follower = subprocess.Popen(
        ["litestream", "restore", "-f", "-follow-interval", "10ms",
         "-o", follower_path, "file://" + replica_dir],
        stdout=log, stderr=log,
    )
    while not os.path.exists(follower_path):
        if time.time() > deadline + 60:
            sys.exit("litestream restore -f made no database within 60 s")
        time.sleep(0.05)

    sent = {}
    done = threading.Event()
    lock = threading.Lock()

    def load():
        value = os.urandom(100)
        n = 0
        start = time.monotonic()
        while not done.is_set():
            due = start + n * 0.010
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with lock:
                db.execute("BEGIN")
                for _ in range(max(1, rate // 100)):
                    db.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?)",
                        (f"key:{random.randrange(100000):012}", value),
                    )
                db.execute("COMMIT")
            n += 1

    loader = threading.Thread(target=load)
    loader.start()
    lags = []

    def read():
        # A connection is opened for each look and closed after it: an open
        # connection to a WAL-mode database holds a shared lock on it, and
        # Litestream's follower waits for an exclusive one to apply.
        seen = -1
        while True:
            try:
                reader = sqlite3.connect(
                    f"file:{follower_path}?mode=ro", uri=True, timeout=0.1
                )
                try:
                    ((newest,),) = reader.execute("SELECT max(n) FROM probe").fetchall()
                finally:
                    reader.close()
            except sqlite3.Error:
                newest = None
            now = time.monotonic()
            if newest is not None and newest > seen:
                for n in range(seen + 1, newest + 1):
                    if n in sent:
                        lags.append((sent[n][0], (now - sent[n][1]) * 1000.0))
                seen = newest
            if done.is_set() and seen >= max(sent, default=-1):
                return
            time.sleep(0.002)

    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n * 0.050
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with lock:
            db.execute("INSERT INTO probe (n) VALUES (?)", (n,))
            sent[n] = (time.monotonic() - start, time.monotonic())
        n += 1
    done.set()
    loader.join()
    reader_thread.join(timeout=30)
    print(json.dumps({"lags": lags, "written": n}))
finally:
    for p in (follower, replicate):
        if p is not None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
