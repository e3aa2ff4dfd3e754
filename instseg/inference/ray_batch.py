""":func:`predict_ray`: :func:`~instseg.inference.batch.run_batch` on a Ray cluster (Ray Data).

The driver lists the inputs once (:func:`~instseg.inference.shards.build_manifest`), skips
the images an earlier run into the same folder finished (its ``.shards`` journal), and hands
the rest to ``actors`` Ray actors (``map_batches`` with a class: each actor loads the model
once). An actor reads its images, predicts, writes the label images / overlays itself (the
output folder must be shared by every node) and returns one record per image; the driver
journals the records as they arrive and merges them at the end into the same
``results.json``, ``images.json``, ``instances.csv`` and ``failed.txt`` as ``run_batch``
(image ids in manifest order). A dead actor is restarted and its images retried
(``max_retries``); records are deduplicated by image id. Ray is imported lazily.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from instseg.errors import DataError
from instseg.inference.batch import (
    BatchReport,
    categories,
    fill_report,
    predict_items,
    prepare_out_dir,
)
from instseg.inference.predictor import Predictor
from instseg.inference.shards import (
    SHARDS_DIR,
    Entry,
    Journal,
    build_manifest,
    check_same_input,
    failed_record,
    image_record,
    is_uri,
    merge_outputs,
    read_records,
)
from instseg.inference.sources import Item, Source, is_video_file, iter_sources
from instseg.inference.writers import (
    CSV_NAME,
    FAILED,
    IMAGES,
    LABELS_DIR,
    OVERLAYS_DIR,
    RESULTS,
    SEMANTIC_DIR,
)

__all__ = ["RAY_MISSING", "predict_ray", "ray_available", "read_entry"]

RAY_MISSING = "the ray engine needs Ray: pip install 'instseg[ray]'"
ModelSpec = str | Path | Callable[[], Predictor]


def predict_ray(
    model: ModelSpec,
    source: Source,
    out_dir: str | Path,
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    batch_size: int = 1,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    object_size: float | str | None = None,
    device: str | None = None,
    predictor_options: Mapping[str, Any] | None = None,
    write_labels: bool = True,
    write_overlays: bool = True,
    write_csv: bool = True,
    write_semantic: bool = False,
    recursive: bool = False,
    tile_size: int | None = None,
    tile_overlap: int = 128,
    num_cpus: int | None = None,
    max_retries: int = 3,
) -> BatchReport:
    """Predict SOURCE (files / folders / globs, a COCO ``.json``'s images, or a ``.txt`` list
    of paths / URIs) into ``out_dir`` with ``actors`` Ray actors (module doc).

    ``model``: checkpoint / training folder / shipped name / ``.onnx`` (loaded in each actor
    by :class:`Predictor` with ``score_threshold``, ``max_detections``, ``batch_size``,
    ``device``, ``predictor_options``), or a picklable zero-argument function returning a
    :class:`Predictor`. The driver also loads it (on the CPU) for the class names and cut-off,
    and estimates an ``"auto"`` ``object_size`` on the first readable image. Without
    ``address`` a local Ray starts on ``num_cpus`` cores (default all) and stops at the end;
    ``"auto"`` or ``HOST:PORT`` joins a running cluster; an initialised Ray is used as is.
    ``resume`` (default) skips images an earlier run finished; ``overwrite`` starts again.
    ``max_retries``: restarts of a dead actor and retries of its task; past them the error
    is raised once the finished images are merged (run again to resume)."""
    ray = _import_ray(actors, batch_size, gpus_per_actor)
    out = Path(out_dir)
    kinds = {CSV_NAME: write_csv, LABELS_DIR: write_labels, OVERLAYS_DIR: write_overlays,
             SEMANTIC_DIR: write_semantic}  # fmt: skip
    _prepare(out, kinds, overwrite, resume)
    manifest = build_manifest(source, recursive)
    out.mkdir(parents=True, exist_ok=True)
    options = {"score_threshold": score_threshold, "max_detections": max_detections,
               "batch_size": batch_size, **(predictor_options or {})}  # fmt: skip
    driver = make_predictor(model, {**options, "device": "cpu", "object_size": object_size})
    if driver.object_size == "auto":
        object_size = _estimate_size(driver, manifest)
    done, todo = _plan(out, manifest, resume and not overwrite)
    report = BatchReport(out, resumed=sum(r["error"] is None for r in done.values()))
    new: dict[int, dict[str, Any]] = {}
    actor_args = {"model": model, "options": {**options, "device": device, "object_size": object_size},
                  "out": str(out), "kinds": kinds, "tile": (tile_size, tile_overlap),
                  "threads": max(1, int(cpus_per_actor))}  # fmt: skip
    bar = tqdm(total=len(manifest), initial=len(done), unit="img", disable=not progress)
    started = _connect(ray, address, num_cpus) if todo else False
    try:
        for recs in _stream(ray, todo, actor_args, batch_size, actors, gpus_per_actor,
                            cpus_per_actor, max_retries):  # fmt: skip
            new.update((int(r["id"]), r) for r in recs)
            bar.update(len(recs))
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
        records = [r for e in manifest if (r := new.get(e.id) or done.get(e.id)) is not None]
        merge_outputs(out, records, categories(driver.cat_ids, driver.class_names), write_csv)
        fill_report(report, records)
        report.interrupted = report.interrupted or len(records) < len(manifest)
    return report


def _plan(
    out: Path, manifest: Sequence[Entry], resume: bool
) -> tuple[dict[int, dict[str, Any]], list[Entry]]:
    """``(records kept from earlier runs, entries to predict)``: without ``resume`` all."""
    done = _done(out, manifest) if resume else {}
    todo = [e for e in manifest if e.id not in done or done[e.id]["error"] is not None]
    return done, [e for e in todo if not _still_unreadable(e, done)]


def ray_available() -> bool:
    """True when Ray (with Ray Data) can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _import_ray(actors: int, batch_size: int, gpus_per_actor: float) -> Any:
    """The ``ray`` module once the arguments are checked (ImportError: how to install)."""
    if actors < 1 or batch_size < 1 or gpus_per_actor < 0:
        raise ValueError(
            f"need actors >= 1, batch_size >= 1, gpus_per_actor >= 0; got {actors}, "
            f"{batch_size}, {gpus_per_actor}"
        )
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def _prepare(out: Path, kinds: dict[str, bool], overwrite: bool, resume: bool) -> None:
    """:func:`~instseg.inference.batch.prepare_out_dir`: earlier outputs are an error unless
    ``overwrite``, or ``resume`` and they come with a journal."""
    names = [RESULTS, IMAGES, FAILED, SHARDS_DIR, *(k for k, on in kinds.items() if on)]
    shards = out / SHARDS_DIR
    journal = shards.is_dir() and any(shards.glob("*.jsonl"))
    prepare_out_dir(out, names, overwrite, resume and journal)


def _done(out: Path, manifest: Sequence[Entry]) -> dict[int, dict[str, Any]]:
    """The earlier runs' records of this manifest's images (same files checked)."""
    previous = read_records(out)
    done = {}
    for e in manifest:
        rec = previous.get(e.id)
        if rec is not None:
            check_same_input(rec, e.path, out)
            done[e.id] = rec
    return done


def _still_unreadable(entry: Entry, done: dict[int, dict[str, Any]]) -> bool:
    """An image that failed before is read again here: still unreadable -> True, and its
    record is renewed (no actor needed); readable -> False (it goes to the actors)."""
    if entry.id not in done:
        return False
    item = read_entry(entry)
    if item.ok:
        return False
    done[entry.id] = failed_record(entry.id, entry.path, entry.name, item.error or "no image")
    return True


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Start (no ``address``) or join a Ray cluster; False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING}  # our progress bar and summary say enough
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


def _stream(
    ray: Any, todo: Sequence[Entry], actor_args: dict[str, Any], batch_size: int,
    actors: int, gpus_per_actor: float, cpus_per_actor: float, max_retries: int,
) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
    """Yield the actors' records (lists) as batches finish, journalled first."""
    if not todo:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    rows = [{"id": e.id, "path": e.path, "name": e.name} for e in todo]
    blocks = max(1, min(len(rows), -(-len(rows) // max(batch_size, 4))))
    retries = {"max_restarts": max_retries, "max_task_retries": max_retries}
    with warnings.catch_warnings():  # Ray 2.60 has no named parameter for these two yet
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            PredictActor, fn_constructor_kwargs=actor_args, batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus_per_actor, num_cpus=cpus_per_actor, **retries,
        )  # fmt: skip
    journal = Journal(Path(actor_args["out"]), "ray")
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            recs = [json.loads(s) for s in batch["record"]]
            journal.append(recs)
            yield recs
    finally:
        journal.close()


def make_predictor(model: ModelSpec, options: Mapping[str, Any]) -> Predictor:
    """A :class:`Predictor` of ``model`` (a factory is called as is, ``options`` unused)."""
    if callable(model):
        return model()
    return Predictor(model, **options)


def _estimate_size(predictor: Predictor, manifest: Sequence[Entry]) -> float:
    """An ``auto`` object size from the first readable image (as ``run_batch`` does)."""
    for e in manifest:
        item = read_entry(e)
        if item.ok:
            assert item.image is not None
            return float(predictor.estimate_object_size([item.image]).object_size)
    raise DataError(None, None, "object size 'auto': no readable image among the inputs")


def read_entry(entry: Entry) -> Item:
    """A manifest entry's image as an :class:`Item` named ``entry.name``, or an ``Item`` with
    the error (worded as :func:`~instseg.inference.sources.iter_sources` words it)."""
    if is_uri(entry.path):
        return _read_uri(entry)
    path = Path(entry.path)
    if is_video_file(path):
        return Item(entry.name, path, error="videos need --engine local (engine ray reads images)")
    try:
        item = next(iter_sources(path))
    except DataError as err:
        return Item(entry.name, path, error=err.message)
    item.name = entry.name
    return item


def _read_uri(entry: Entry) -> Item:
    """Download a URI (http(s) with urllib, others with pyarrow's file systems) and decode it."""
    try:
        if entry.path.lower().startswith(("http://", "https://")):
            import urllib.request

            with urllib.request.urlopen(entry.path, timeout=120) as r:
                data = r.read()
        else:
            from pyarrow import fs

            filesystem, key = fs.FileSystem.from_uri(entry.path)
            with filesystem.open_input_stream(key) as f:
                data = f.read()
    except Exception as exc:
        return Item(entry.name, None, error=f"cannot read ({type(exc).__name__}: {exc})")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / ("image" + Path(entry.path.split("?")[0]).suffix)
        local.write_bytes(data)
        item = next(iter_sources(local))
    return Item(entry.name, None, image=item.image, error=item.error)


class PredictActor:
    """The Ray Data UDF: loads the model once; ``__call__`` predicts a batch of manifest rows
    into the output folder and returns ``{"record": JSON strings}``, one per row."""

    def __init__(
        self, model: ModelSpec, options: dict[str, Any], out: str, kinds: dict[str, bool],
        tile: tuple[int | None, int], threads: int,
    ) -> None:  # fmt: skip
        import torch

        torch.set_num_threads(threads)
        self.predictor = make_predictor(model, options)
        self.out, self.kinds, self.tile = Path(out), kinds, tile

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = self.predictor
        entries = [Entry(int(i), str(f), str(n)) for i, f, n in
                   zip(batch["id"], batch["path"], batch["name"])]  # fmt: skip
        recs: dict[int, dict[str, Any]] = {}
        todo: list[tuple[int, Item]] = []
        for e in entries:
            item = read_entry(e)
            if item.ok:
                todo.append((e.id, item))
            else:
                recs[e.id] = failed_record(e.id, e.path, e.name, item.error or "no image")
        files = {e.id: e.path for e in entries}
        preds = predict_items(p, todo, *self.tile) if todo else []
        for (image_id, item), pred in zip(todo, preds):
            try:
                if isinstance(pred, BaseException):
                    raise pred
                recs[image_id] = image_record(
                    self.out, self.kinds, image_id, item, pred, p.class_names, p.cat_ids,
                    p.score_cutoff, file=files[image_id],
                )  # fmt: skip
            except Exception as exc:
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())
                recs[image_id] = failed_record(image_id, files[image_id], item.name, reason)
        lines = [json.dumps(recs[e.id], separators=(",", ":")) for e in entries]
        return {"record": np.array(lines, dtype=object)}
