"""Load on ``instseg serve``: 16 concurrent clients over loopback, bounded in time.

    python bench/serve_load.py                 # ~2-4 min on 2 cores
    python bench/serve_load.py --clients 16 --seconds 60 --requests 1000

Starts ``instseg serve --model nuclei --threads T`` in a subprocess and posts the held-out DSB
images of the shipped model's split (``split(0.2, seed=0)``) up to ``--max-side`` pixels (16
of the 22 at the default 360: 256x256 to 360x360; the model sees them at 1.7x) round-robin from
``--clients`` threads (httpx, one connection each) for ``--seconds``; a client that gets 503
waits the ``Retry-After`` it was given and counts a deliberate 503. Reports requests/s,
p50/p95/p99 latency of the answered requests, the 503s and every other error (target 0).
Memory: the server's RSS after 100 answered requests and after ``--requests`` (the run goes on
past ``--seconds`` until then, at most ``--max-seconds``); target: growth <= 10%.

The reference in the same script: the same images through an in-process ``Predictor`` with
the same threads, one after the other (no HTTP): its images/s over the server's requests/s
is the cost of serving.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import load_split  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def images(data: str | None, max_side: int) -> list[Path]:
    """The held-out DSB images of the shipped model's split no larger than ``max_side``."""
    _, val = load_split("dsb2018_stage1_subset", data)
    return [Path(r.path) for r in val.images if max(r.width, r.height) <= max_side]


def in_process(paths: list[Path], threads: int) -> float:
    """Images/s of an in-process Predictor (same model, threads and images; 2 rounds, the
    first one warms up)."""
    import torch

    from instseg.data.io import read_image
    from instseg.inference import Predictor

    torch.set_num_threads(threads)
    predictor = Predictor("nuclei")
    arrays = [read_image(p) for p in paths]
    predictor.predict_arrays(arrays[:2], apply_cutoff=False)
    start = time.perf_counter()
    for a in arrays:
        predictor.predict_arrays([a], apply_cutoff=False)
    return len(arrays) / (time.perf_counter() - start)


class Load:
    """Counts and latencies shared by the client threads."""

    def __init__(self, target: int) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.deliberate_503 = 0
        self.errors: list[str] = []
        self.rss: dict[int, float] = {}
        self.target = target

    def answered(self) -> int:
        return len(self.latencies)


def client(url: str, bodies: list[tuple[str, bytes]], k: int, load: Load, stop: Any, proc: Any) -> None:
    import httpx

    with httpx.Client(timeout=120) as http:
        i = k
        while not stop():
            name, body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                res = http.post(f"{url}/v1/predict", files={"file": (name, body, "image/png")})
            except httpx.HTTPError as exc:
                with load.lock:
                    load.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            took = time.perf_counter() - start
            if res.status_code == 503:
                with load.lock:
                    load.deliberate_503 += 1
                time.sleep(min(float(res.headers.get("retry-after", 1)), 5.0))
                continue
            with load.lock:
                if res.status_code != 200:
                    load.errors.append(f"{res.status_code}: {res.text[:120]}")
                    continue
                load.latencies.append(took)
                n = len(load.latencies)
                if n in (100, load.target):
                    load.rss[n] = proc.memory_info().rss / 2**20


def run_load(args: argparse.Namespace, paths: list[Path]) -> dict[str, Any]:
    import httpx
    import psutil

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "instseg", "serve", "--model", "nuclei", "--port", str(port),
           "--threads", str(args.threads), "--max-queue", str(args.max_queue)]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        proc = psutil.Process(server.pid)
        bodies = [(p.name, p.read_bytes()) for p in paths]
        load = Load(args.requests)
        start = time.perf_counter()
        window: dict[str, float] = {}

        def stop() -> bool:
            now = time.perf_counter() - start
            if now >= args.seconds and "answered" not in window:
                window.update(answered=load.answered(), seconds=now)
            done = now >= args.seconds and load.answered() >= args.requests
            return done or now >= args.max_seconds or server.poll() is not None

        threads = [threading.Thread(target=client, args=(url, bodies, k, load, stop, proc)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat = np.asarray(load.latencies[: int(window.get("answered", load.answered()))]) * 1000
        return {
            "clients": args.clients,
            "seconds": round(window.get("seconds", time.perf_counter() - start), 1),
            "answered": int(lat.size),
            "requests_per_s": round(lat.size / window.get("seconds", 1.0), 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "deliberate_503": load.deliberate_503,
            "errors": len(load.errors),
            "error_examples": load.errors[:5],
            "total_answered": load.answered(),
            "rss_mib": {str(k): round(v, 1) for k, v in sorted(load.rss.items())},
        }
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="load window for the speed figures")
    ap.add_argument("--requests", type=int, default=1000, help="answered requests for the memory figure")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="hard bound of the whole load")
    ap.add_argument("--max-queue", type=int, default=16, help="the server's --max-queue")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (and the reference)")
    ap.add_argument("--max-side", type=int, default=360, help="largest image side posted")
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="runs/serve_load.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` stops the server
    paths = images(args.data, args.max_side)
    print(f"{len(paths)} held-out DSB images up to {args.max_side} px; reference: in-process Predictor, {args.threads} threads", flush=True)
    ref = in_process(paths, args.threads)
    print(f"in-process: {ref:.2f} images/s", flush=True)
    res = run_load(args, paths)
    rss = res["rss_mib"]
    growth = (rss[str(args.requests)] / rss["100"] - 1) * 100 if "100" in rss and str(args.requests) in rss else float("nan")
    res.update(in_process_images_per_s=round(ref, 2), served_over_in_process=round(res["requests_per_s"] / ref, 3),
               rss_growth_pct=round(growth, 1))  # fmt: skip
    print(f"| clients | window s | answered | req/s | in-process img/s | ratio | p50 ms | p95 ms | p99 ms | 503 (deliberate) | errors | RSS@100 MiB | RSS@{args.requests} MiB | growth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {res['clients']} | {res['seconds']} | {res['answered']} | {res['requests_per_s']} | {ref:.2f} | "
          f"{res['served_over_in_process']} | {res['p50_ms']} | {res['p95_ms']} | {res['p99_ms']} | "
          f"{res['deliberate_503']} | {res['errors']} | {rss.get('100')} | {rss.get(str(args.requests))} | {growth:.1f}% |")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    if res["error_examples"]:
        print("errors:", *res["error_examples"], sep="\n  ")


if __name__ == "__main__":
    main()
