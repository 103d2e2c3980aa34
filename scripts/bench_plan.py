#!/usr/bin/env python3
"""The coordinator's peak memory planning a labeling job over a large corpus.

A real coordinator process (in-process metadata, a local object store) and the real CLI:
`labelfleet submit` uploads a corpus of DOCS documents of about 4 KB each, then streams a job
of PAIRS pairs naming random documents by id; the coordinator inlines each document into the
tasks. The coordinator's VmHWM (/proc/<pid>/status) is read once the submit returns, so it
covers the upload and the planning.

usage: scripts/bench_plan.py --bin target/release/labelfleet --impl shard-ordered \
           [--docs 100000] [--pairs 100000] [--out bench/results/scale-cpu-2core.jsonl]
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_inputs(work, docs, pairs, seed=1):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    text = " ".join(rng.choice(words) for _ in range(200_000))
    corpus = os.path.join(work, "corpus.jsonl")
    with open(corpus, "w") as f:
        for i in range(docs):
            start = rng.randrange(len(text) - 4000)
            body = text[start:start + 4000]
            f.write(json.dumps({"id": f"doc-{i:07d}", "title": f"title {i}", "body": body}) + "\n")
    path = os.path.join(work, "pairs.jsonl")
    with open(path, "w") as f:
        for i in range(pairs):
            d = rng.randrange(docs)
            f.write(json.dumps({"id": f"p{i}", "query_id": f"q{i // 10}",
                                "query": f"query {i // 10}", "doc_id": f"doc-{d:07d}"}) + "\n")
    return corpus, path


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def wait_listening(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("coordinator exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("coordinator never listened")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--impl", required=True)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--task-size", type=int, default=200)
    ap.add_argument("--inputs", help="folder for the generated corpus and pairs (kept)")
    ap.add_argument("--out")
    a = ap.parse_args()
    inputs = a.inputs or tempfile.mkdtemp()
    os.makedirs(inputs, exist_ok=True)
    corpus, pairs = os.path.join(inputs, "corpus.jsonl"), os.path.join(inputs, "pairs.jsonl")
    if not (os.path.exists(corpus) and os.path.exists(pairs)):
        corpus, pairs = write_inputs(inputs, a.docs, a.pairs)
    work = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, RUST_LOG="warn")
    coord = subprocess.Popen([a.bin, "coordinator", "--listen", f"127.0.0.1:{port}",
                              "--store", os.path.join(work, "store")],
                             env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "coord.log"), "w"))
    try:
        wait_listening(port, coord)
        time.sleep(1)
        idle = vm_hwm(coord.pid)
        t0 = time.time()
        out = subprocess.run([a.bin, "submit", "--coordinator", f"http://127.0.0.1:{port}",
                              "--corpus", corpus, "--pairs", pairs, "--task-size", str(a.task_size)],
                             env=env, capture_output=True, text=True)
        seconds = time.time() - t0
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"submit failed ({out.returncode})")
        peak = vm_hwm(coord.pid)
        row = {"kind": "plan", "impl": a.impl, "documents": a.docs, "pairs": a.pairs,
               "task_size": a.task_size, "corpus_bytes": os.path.getsize(corpus),
               "coordinator_peak_rss_bytes": peak, "coordinator_idle_rss_bytes": idle,
               "submit_seconds": round(seconds, 3),
               "scope": "labelfleet submit (corpus upload, then the streamed job) against one "
                        "coordinator process with a local store; VmHWM of that process"}
        print(json.dumps(row))
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    finally:
        coord.terminate()
        coord.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
