"""One model, many requests: a bounded queue in front of a single model thread.

The model is loaded once and runs on one thread (PyTorch uses the cores inside each call), so
requests never compete for it; a full queue is refused at once (:class:`QueueFull`, the
server answers 503 with ``Retry-After``) rather than piling up work nobody waits for. A
request that gives up (time-out) cancels its job if the model has not started it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from instseg.inference.predictor import Predictor
from instseg.structures import Instances

__all__ = ["ModelWorker", "QueueFull"]


class QueueFull(Exception):
    """Every queue slot is taken; ``retry_after`` is an estimate in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the model's queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    future: Future[Instances]


class ModelWorker:
    """Runs ``predictor.predict_arrays(..., apply_cutoff=False)`` on a thread, one image at a
    time, for at most ``max_queue`` waiting images. ``served`` counts finished images and
    ``mean_seconds`` is their running mean time (for ``Retry-After``)."""

    def __init__(self, predictor: Predictor, max_queue: int = 16) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.predictor = predictor
        self.max_queue = max_queue
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.served = 0
        self.mean_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="instseg-model", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Images queued and not yet started."""
        return self._queue.qsize()

    def submit(self, image: np.ndarray) -> Future[Instances]:
        """Queue ``image``; its future gets every detection (no score cut-off) or the error.
        Raises :class:`QueueFull` when all ``max_queue`` slots are taken."""
        job = _Job(image, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            wait = (self.max_queue + 1) * max(self.mean_seconds, 0.1)
            raise QueueFull(max(1, math.ceil(wait))) from None
        return job.future

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue  # its request gave up while it waited
            start = time.perf_counter()
            try:
                result = self.predictor.predict_arrays([job.image], apply_cutoff=False)[0]
            except BaseException as exc:  # the request reports it; the worker goes on
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            seconds = time.perf_counter() - start
            self.served += 1
            self.mean_seconds += (seconds - self.mean_seconds) / min(self.served, 20)

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the queued images (waits at most ``timeout`` seconds)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
