"""The web page in a real browser: headless Chromium (the system's package, driven by
Playwright; never ``playwright install``) against ``instseg serve`` in a subprocess.

Opens the page, uploads a DSB image, waits for the overlay, checks the table against the
API, filters with the score slider without calling the model, deletes an instance in review
mode and checks the exported COCO file (one fewer; instseg reads it and fine-tunes on it)
and label image; saves a screenshot to ``artifacts/serve_page.png`` (``$INSTSEG_ARTIFACTS``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def chromium() -> str:
    """The system Chromium (``$INSTSEG_CHROMIUM`` overrides); the set-up installs it."""
    found = os.environ.get("INSTSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no Chromium: scripts/dev.sh installs it (apt-get install -y chromium)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``instseg serve --model nuclei`` on a free loopback port; its base URL once healthy."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("INSTSEG_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "instseg", "serve", "--model", "nuclei", "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"instseg serve exited {proc.returncode}: {out}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _api(url: str, image: Path, threshold: float) -> dict[str, Any]:
    files = {"file": (image.name, image.read_bytes(), "image/png")}
    res = httpx.post(f"{url}/v1/predict", params={"score_threshold": threshold}, files=files, timeout=60)
    res.raise_for_status()
    return dict(res.json())


def _inner_pixel(rle: dict[str, Any]) -> tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from its border (a safe place to click)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask_utils.decode(rle), 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def test_page_upload_filter_review_export(server: str, dsb_image: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    cutoff = httpx.get(f"{server}/v1/model").json()["score_cutoff"]
    api = _api(server, dsb_image, cutoff)
    n = api["count"]
    assert n > 5
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 860}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        remote: list[str] = []  # the page and the docs must work offline: nothing beyond the server

        def local_only(route: Any) -> None:
            if route.request.url.startswith(server):
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort()

        page.route("**/*", local_only)
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/predict\"]", timeout=30_000)  # Swagger UI rendered the API
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready='1']")
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        page.set_input_files("#file-input", [str(dsb_image), str(bad)])
        page.wait_for_selector(f"#canvas[data-instances='{n}']", timeout=60_000)  # the overlay is drawn
        page.wait_for_selector("#image-list li.error", timeout=60_000)  # the bad file: its reason
        assert "notes.png: not an image" in page.locator("#image-list li.error").inner_text()
        assert page.locator("#image-list li").count() == 2
        rows = page.locator("#instance-table tbody tr")
        assert rows.count() == n

        served = httpx.get(f"{server}/healthz").json()["served"]
        page.locator("#score").fill("0.8")  # filters in the page: the model is not called again
        assert rows.count() == _api(server, dsb_image, 0.8)["count"] < n
        assert httpx.get(f"{server}/healthz").json()["served"] == served + 1  # only our own call
        page.locator("#score").fill(str(cutoff))
        assert rows.count() == n

        page.locator("#instance-table th[data-key='area']").click()  # sortable: largest first
        areas = [int(t) for t in page.locator("#instance-table tbody td:nth-child(4)").all_inner_texts()]
        assert areas == sorted(areas, reverse=True)

        target = api["instances"][2]
        box = page.locator("#canvas").bounding_box()
        assert box is not None
        x, y = _inner_pixel(target["rle"])
        at = (box["x"] + (x + 0.5) * box["width"] / 256, box["y"] + (y + 0.5) * box["height"] / 256)
        page.mouse.move(*at)
        assert page.locator("#tooltip").inner_text().startswith(f"#{target['id']} nucleus")
        page.locator("#review").check()
        page.mouse.click(*at)
        assert page.locator("#review-title").inner_text().startswith(f"Instance {target['id']}:")
        page.locator("#review-delete").click()
        assert rows.count() == n - 1
        other = api["instances"][0]  # hover another one for the screenshot's read-out
        x, y = _inner_pixel(other["rle"])
        page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 256, box["y"] + (y + 0.5) * box["height"] / 256)

        artifacts = Path(os.environ.get("INSTSEG_ARTIFACTS", REPO / "artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "serve_page.png"))

        with page.expect_download() as dl:
            page.locator("#dl-coco").click()
        coco_path = tmp_path / "corrected.json"
        dl.value.save_as(coco_path)
        with page.expect_download() as dl:
            page.locator("#dl-labels").click()
        labels_path = tmp_path / "labels.png"
        dl.value.save_as(labels_path)
        browser.close()
    assert not errors, errors
    assert not remote, remote

    coco = json.loads(coco_path.read_text())
    assert len(coco["annotations"]) == n - 1 and len(coco["images"]) == 1
    kept = {a["segmentation"]["counts"] for a in coco["annotations"]}
    assert target["rle"]["counts"] not in kept
    assert kept == {d["rle"]["counts"] for d in api["instances"]} - {target["rle"]["counts"]}

    labels = np.asarray(Image.open(labels_path))
    assert labels.dtype == np.uint16 and labels.shape == (256, 256)
    assert set(np.unique(labels).tolist()) == {0} | {d["id"] for d in api["instances"]} - {target["id"]}

    shutil.copy(dsb_image, tmp_path / dsb_image.name)  # the export sits beside its images
    from instseg.data.formats import load_dataset

    data = load_dataset(coco_path)
    assert len(data) == 1 and data.load_image(0).shape == (256, 256, 3)
    assert len(data.instances(0)) == n - 1 and data.num_instances == n - 1
    from instseg.cli.main import main  # and the model fine-tunes on the corrections

    run = tmp_path / "run"
    args = ["train", "--data", str(coco_path), "--model", "nuclei", "--out", str(run), "--steps", "1", "--no-progress"]
    assert main(args) == 0 and (run / "last.pt").is_file()
