"""How fast the dashboard's pages load in headless Chromium, with 200 jobs in a temp database.

200 job rows (mixed statuses, one job with 100 epochs of metrics and a result) are inserted into a fresh
SQLite database; the API serves them on loopback and Debian's Chromium (Playwright) loads each page N
times in a fresh tab. Per page: DOMContentLoaded and load from the Navigation Timing entry, and `ready`,
the page's own `squeezer:ready` mark, set once its data is on screen (the list's 50 rows; the job's facts,
spec and exports). For the job page also `history`: all 100 epochs replayed from /events onto the charts.
A finished search of 16 candidates (rows like the service writes them) times the search page the same
way: `history` is its table and Pareto scatter drawn from the /events stream's first `search` event.

    python bench/bench_ui.py                 # 5 loads per page, about 30 s
    python bench/bench_ui.py --screenshot docs/job_page.png   # also: a digits job running, its page
    python bench/bench_ui.py --search-screenshot docs/search_page.png   # also: a real digits search, finished

Writes bench/results/ui.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# the dashboard tests' harness (how the service and Chromium are started) is reused, not copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from squeezer.search import DEFAULT_CANDIDATES
from tests.ui.browser import chromium, service

RESULTS = Path(__file__).parent / "results"
STATUSES = ["succeeded", "failed", "cancelled", "running", "queued"]
SPARSITY = {
    "input_info": {"sample_size": [1, 64]},
    "compression": {
        "algorithm": "magnitude_sparsity",
        "params": {"schedule": "polynomial", "sparsity_target": 0.6, "sparsity_target_epoch": 5},
    },
    "accuracy_aware_training": {
        "mode": "early_exit",
        "params": {"maximal_absolute_accuracy_degradation": 2.0, "maximal_total_epochs": 8},
    },
}


def insert_jobs(app: Any, owner_secret: str, count: int = 200, epochs: int = 100) -> str:
    """`count` job rows for the key; the first has `epochs` metric rows and a result. Returns its id."""
    from squeezer.api.keys import find_key
    from squeezer.db import Job, JobMetric, JobStatus

    now = datetime.now(UTC)
    with app.state.sessions() as session:
        key = find_key(session, owner_secret)
        assert key is not None
        jobs = []
        for i in range(count):
            status = JobStatus(STATUSES[i % len(STATUSES)])
            done = status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
            jobs.append(
                Job(
                    owner_id=key.id,
                    name=f"bench-{i:03d}",
                    status=status,
                    spec={"model": "m", "train_data": "t", "val_data": "v", "config": SPARSITY, "recipe": {}},
                    stage="FULLY_COMPRESSED" if done else "PARTIALLY_COMPRESSED",
                    epoch=epochs if i == 0 else i % 10,
                    total_epochs=epochs if i == 0 else 10,
                    current_metric=90.0 + i % 7,
                    best_metric=91.0 + i % 7,
                    compression_rate=0.5,
                    accuracy_budget=0.3,
                    result={"metric": 91.0, "compression_rate": 0.5, "uncompressed_metric": 92.0} if done else None,
                    created_at=now - timedelta(minutes=count - i),
                    finished_at=now if done else None,
                )
            )
        session.add_all(jobs)
        session.flush()
        for epoch in range(epochs + 1):
            session.add(
                JobMetric(
                    job_id=jobs[0].id,
                    epoch=epoch,
                    phase="initial",
                    stage="FULLY_COMPRESSED",
                    metric=90.0 + epoch / epochs,
                    accuracy_budget=epoch / epochs,
                    compression_rate=min(0.5, epoch / epochs),
                    compression_rate_target=0.5,
                    loss=1.0 / (epoch + 1) if epoch else None,
                    lr=1e-3,
                    wall_time_s=float(epoch),
                )
            )
        session.commit()
        return jobs[0].id


def insert_search(app: Any, owner_secret: str, count: int = 16) -> str:
    """A finished search of `count` succeeded candidates, each with a result and an ONNX export row,
    trading metric against latency; returns its id."""
    from squeezer.api.keys import find_key
    from squeezer.db import Export, Job, JobStatus, Search

    now = datetime.now(UTC)
    settings = {"accuracy": {"maximal_absolute_accuracy_degradation": 1.0}, "candidates": None}
    with app.state.sessions() as session:
        key = find_key(session, owner_secret)
        assert key is not None
        search = Search(owner_id=key.id, name="bench-search", spec={"settings": settings}, created_at=now)
        session.add(search)
        session.flush()
        for i in range(count):
            latency = 1.0 + i / 4 + (i % 3) / 10
            result = {
                "metric": 88.0 + 4 * (1 - 1 / (1 + i)) - (i % 3) / 2,
                "uncompressed_metric": 92.0,
                "compression_rate": 0.5,
                "latency": {"onnxruntime": {"fp32_ms": 3.0, "compressed_ms": latency, "speedup": 3.0 / latency}},
            }
            job = Job(
                owner_id=key.id,
                name=f"bench-search/c{i:02d}",
                search_id=search.id,
                candidate=f"c{i:02d}",
                status=JobStatus.succeeded,
                spec={},
                epoch=5,
                total_epochs=5,
                result=result,
                created_at=now + timedelta(milliseconds=i),
                started_at=now,
                finished_at=now + timedelta(seconds=10),
            )
            session.add(job)
            session.flush()
            session.add(
                Export(job_id=job.id, kind="onnx", storage_path="-", size_bytes=9000 - 100 * i, sha256="0" * 64)
            )
        session.commit()
        return search.id


def sign_in(page: Any, url: str, secret: str) -> None:
    page.goto(f"{url}/ui/jobs")
    page.fill("#api-key", secret)
    page.click("#sign-in-form button")
    page.wait_for_selector("#page:not([hidden])")


TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const mark = (name) => (performance.getEntriesByName(name)[0] || {}).startTime ?? null;
  return {dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
          ready_ms: mark("squeezer:ready"), history_ms: mark("squeezer:history")};
}"""


def measure(context: Any, url: str, done: str, repeats: int) -> list[dict[str, float]]:
    """`repeats` loads of `url`, each in a new tab of the signed-in context, timed by the page itself."""
    runs = []
    for _ in range(repeats):
        page = context.new_page()
        page.goto(url, wait_until="load")
        page.wait_for_function(f"() => performance.getEntriesByName('{done}').length > 0", timeout=30_000)
        runs.append(page.evaluate(TIMINGS))
        page.close()
    return runs


def benchmark(repeats: int) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home, service(Path(home), ("bench",), worker=False) as running:
        secret = running.keys["bench"]
        job_id = insert_jobs(running.app, secret)
        search_id = insert_search(running.app, secret)
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            # signed in: the key in each new tab's sessionStorage (what the sign-in page stores)
            context.add_init_script(f"sessionStorage.setItem('squeezer.apiKey', {json.dumps(secret)})")
            cases = {
                "job list (50 of 200 jobs)": (f"{running.url}/ui/jobs", "squeezer:ready"),
                "job list, status=succeeded": (f"{running.url}/ui/jobs?status=succeeded", "squeezer:ready"),
                "job page (100 epochs)": (f"{running.url}/ui/jobs/{job_id}", "squeezer:history"),
                "submit page": (f"{running.url}/ui/submit", "squeezer:ready"),
                "search list (1 search)": (f"{running.url}/ui/searches", "squeezer:ready"),
                "search page (16 candidates)": (f"{running.url}/ui/searches/{search_id}", "squeezer:history"),
            }
            for name, (url, done) in cases.items():
                measure(context, url, done, 1)  # warm-up: first compile of scripts, SQLite caches
                runs = measure(context, url, done, repeats)
                pages[name] = {
                    field: statistics.median(r[field] for r in runs)
                    for field in runs[0]
                    if all(r[field] is not None for r in runs)
                } | {"runs": runs}
    return pages


def screenshot(path: Path) -> None:
    """The job page of a digits sparsity job while it runs (a worker on the embedded defaults)."""
    import httpx

    from tests.helpers import write_digits_job_files

    with tempfile.TemporaryDirectory() as home, service(Path(home), ("docs",)) as running:
        secret = running.keys["docs"]
        files = write_digits_job_files(Path(home), trained=True)
        with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {secret}"}) as api:
            ids = {}
            for field, kind in (("model", "model"), ("train", "dataset"), ("val", "dataset")):
                upload = {"file": (files[field].name, files[field].read_bytes())}
                ids[field] = api.post("/v1/artifacts", data={"kind": kind}, files=upload).json()["id"]
            body = {
                "name": "digits-mlp-sparsity",
                "model": ids["model"],
                "train_data": ids["train"],
                "val_data": ids["val"],
                "config": SPARSITY,
                "recipe": {"lr": 3e-3, "batch_size": 16},
            }
            job = api.post("/v1/jobs", json=body).json()
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            sign_in(page, running.url, secret)
            page.goto(f"{running.url}/ui/jobs/{job['id']}")
            page.wait_for_function(
                "() => Number(document.querySelector('#chart-metric').dataset.points) >= 5", timeout=300_000
            )
            time.sleep(0.5)  # the chart's redraw
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        print(f"wrote {path}")


def search_screenshot(path: Path) -> None:
    """The page of the search `bench/bench_search.py` measures (the digits CNN of `make demo`, the six
    default candidates, at most 0.3 points lost, latency at batch 64), run on one worker on the
    embedded defaults: a couple of minutes on two cores."""
    import httpx
    import numpy as np
    import torch

    from squeezer.examples.digits import digits_split, trained_demo_cnn
    from tests.ui.browser import submit_search

    with tempfile.TemporaryDirectory() as home, service(Path(home), ("docs",)) as running:
        secret = running.keys["docs"]
        model, _ = trained_demo_cnn()
        files = {"model": Path(home) / "cnn.pt2", "train": Path(home) / "train.npz", "val": Path(home) / "val.npz"}
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (torch.rand(2, 1, 32, 32),), dynamic_shapes=({0: batch},))
        torch.export.save(program, files["model"])
        for (x, y), name in zip(digits_split(image_size=32), ("train", "val"), strict=True):
            np.savez(files[name], x=x.numpy(), y=y.numpy())
        with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {secret}"}) as api:
            search = submit_search(
                api,
                files,
                "digits-cnn-search",
                list(DEFAULT_CANDIDATES),
                epochs=3,
                batch_size=64,
                accuracy={"maximal_absolute_accuracy_degradation": 0.3},
                early_stopping=True,
                budget={"max_total_epochs": 24},
            )
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            sign_in(page, running.url, secret)
            page.goto(f"{running.url}/ui/searches/{search['id']}")
            page.wait_for_function(
                "() => !['queued', 'running'].includes(document.querySelector('#search-status').textContent)",
                timeout=900_000,
            )
            time.sleep(0.5)  # the scatter's redraw
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of a running job's page here")
    parser.add_argument("--search-screenshot", type=Path, help="also write a PNG of a finished search's page here")
    args = parser.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
    if args.search_screenshot:
        search_screenshot(args.search_screenshot)
    pages = benchmark(args.repeats)
    print(f"{'page':32} {'DOMContentLoaded':>17} {'load':>9} {'data shown':>11}   (median ms of {args.repeats})")
    for name, p in pages.items():
        shown = p.get("history_ms", p.get("ready_ms"))
        print(f"{name:32} {p['dom_content_loaded_ms']:17.0f} {p['load_ms']:9.0f} {shown:11.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "jobs_in_database": 200,
        "search_candidates": 16,
        "repeats": args.repeats,
        "pages": pages,
    }
    (RESULTS / "ui.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'ui.json'}")


if __name__ == "__main__":
    main()
