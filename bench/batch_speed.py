"""Batch prediction speed: single-process ``run_batch`` against ``predict_ray`` (1 and 2 actors).

The shipped ``nuclei`` model predicts the first ``--limit`` DSB 2018 images (sorted ids,
``../shared/data/dsb2018_stage1_subset``, all sizes) into a fresh folder, with every output
(results.json, images.json, instances.csv, label images, overlays), on the CPU:

* ``local``: ``run_batch`` in this process, ``torch.set_num_threads(threads)``;
* ``rayN``: ``predict_ray`` with N actors of ``max(1, threads // N)`` torch threads each, on
  a local Ray started beforehand (its start is timed apart). ``ray1`` has the same CPU
  budget as ``local``: its difference is Ray's overhead. On a shared 2-core machine use
  ``--threads 1``: two OpenMP threads of one process slow down badly when another process
  holds a core, which would make ``local`` look slow.

Timed: the whole call, model loading included (the driver's and every actor's for Ray).
Overhead per image = (row time - local time) / images, and its share of local time. The
rows' ``results.json`` are compared with local's: detections whose mask, category or score
(rounded to 5 decimals; 2e-5 allowed) differ; 1 vs 2 torch threads can move a few masks.
``--repeats R`` runs the rows round-robin R times and keeps each row's best time. Each
round also prints when the first records reached the journal (start-up: model loading, for
Ray also the actors' start and the first block of images) and the time per image after it.

    python bench/batch_speed.py [--limit 100] [--threads 1] [--rows local,ray1,ray2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import data_root  # noqa: E402


def dsb_images(limit: int) -> list[Path]:
    root = data_root() / "dsb2018_stage1_subset" / "stage1_train"
    files = sorted(root.glob("*/images/*.png"))
    if not files:
        raise SystemExit(f"no DSB images under {root} (set INSTSEG_DATA)")
    return files[:limit]


STAMPS: list[tuple[float, int]] = []  # (time, images) of every journalled batch, both engines


def watch_journal() -> None:
    """Record when each batch of records reaches the journal (both engines write one)."""
    from instseg.inference import shards

    append = shards.Journal.append

    def timed(self: Any, records: Any) -> None:
        records = list(records)
        STAMPS.append((time.perf_counter(), len(records)))
        append(self, records)

    shards.Journal.append = timed  # type: ignore[method-assign]


def split_time(t0: float, n: int) -> tuple[float, float]:
    """``(s until the first record, ms per image after it)`` of the last row."""
    first, k = STAMPS[0]
    steady = (STAMPS[-1][0] - first) / max(n - k, 1) * 1000
    return first - t0, steady


def run_local(files: list[Path], out: Path, threads: int) -> Any:
    import torch

    from instseg.inference import Predictor, run_batch

    torch.set_num_threads(threads)
    return run_batch(Predictor("nuclei", device="cpu"), files, out, progress=False)


def run_ray(files: list[Path], out: Path, threads: int, actors: int) -> Any:
    import torch

    from instseg.inference import predict_ray

    torch.set_num_threads(1)  # the driver only lists, journals and merges
    return predict_ray("nuclei", files, out, actors=actors, cpus_per_actor=threads,
                       device="cpu", progress=False)  # fmt: skip


def row_threads(row: str, threads: int) -> tuple[int, int]:
    """``(actors, threads per actor)`` of a row: ``rayN`` splits ``threads`` over N actors
    (at least one each); ``local`` is one process."""
    actors = 1 if row == "local" else int(row.removeprefix("ray"))
    return actors, max(1, threads // actors)


def differing(a: Path, b: Path) -> str:
    """How many detections of ``b`` differ from ``a`` (mask RLE, category, or score > 2e-5)."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    if len(ra) != len(rb):
        return f"{len(rb)} vs {len(ra)} detections"
    key = ("image_id", "category_id", "segmentation")
    bad = sum(
        [x[k] for k in key] != [y[k] for k in key] or abs(x["score"] - y["score"]) > 2e-5
        for x, y in zip(ra, rb)
    )
    return f"{bad} of {len(ra)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=100, help="number of DSB images")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per row (see the doc)")
    p.add_argument("--rows", default="local,ray1,ray2", help="comma-separated rows")
    p.add_argument("--repeats", type=int, default=1, help="rounds over the rows; best time kept")
    args = p.parse_args()
    files = dsb_images(args.limit)
    watch_journal()
    for f in files:  # page cache warm for every row alike
        f.read_bytes()
    rows = args.rows.split(",")
    plan = {row: row_threads(row, args.threads) for row in rows}
    times: dict[str, float] = {}
    outs: dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix="batch_speed_"))
    if any(r.startswith("ray") for r in rows):
        import ray

        t0 = time.perf_counter()
        cpus = max(a * t for a, t in plan.values())
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        print(f"ray.init: {time.perf_counter() - t0:.1f} s (not counted below)", flush=True)
    for k in range(args.repeats):  # rounds: a slow phase of a shared machine hits every row
        for row in rows:
            outs[row] = tmp / f"{row}_{k}"
            actors, threads = plan[row]
            STAMPS.clear()
            t0 = time.perf_counter()
            if row == "local":
                report = run_local(files, outs[row], threads)
            else:
                report = run_ray(files, outs[row], threads, actors)
            t = time.perf_counter() - t0
            times[row] = min(t, times.get(row, t))
            first, steady = split_time(t0, len(files))
            print(f"{row} (round {k + 1}): {t:.1f} s (first records after {first:.1f} s, then "
                  f"{steady:.0f} ms/image), {report.processed} images, "
                  f"{report.num_instances} instances, {len(report.failed)} failed", flush=True)  # fmt: skip
    print_table(rows, plan, times, outs, len(files))


def print_table(
    rows: list[str], plan: dict[str, tuple[int, int]], times: dict[str, float],
    outs: dict[str, Path], n: int,
) -> None:  # fmt: skip
    base = times.get("local")
    print(f"\n{n} DSB images, shipped nuclei model, CPU; wall time incl. model loading")
    head = "| row | processes x threads | wall s | images/s | vs local: overhead ms/image | % of local time | detections differing |"  # fmt: skip
    print(head + "\n|---|---|---|---|---|---|---|")
    for row in rows:
        t, (actors, threads) = times[row], plan[row]
        cells = ["", "", ""]
        if base is not None and row != "local":
            cells = [f"{(t - base) / n * 1000:+.0f}", f"{(t - base) / base * 100:+.1f}%",
                     differing(outs["local"], outs[row])]  # fmt: skip
        print(
            f"| {row} | {actors} x {threads} | {t:.1f} | {n / t:.2f} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
