"""Load generator for a running TorchServe: concurrent clients, mixed modes, bounded in count and time.

Used by the CI load test (a few hundred requests) and by bench/load.py (the full run). Loopback only: the server is
one started by scripts/local_torchserve.py.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import requests

#: Mixed requests: (mode fields, whether an image is sent). Chosen to touch every cheap-to-moderate path.
MIX = [
    ({"mode": "classify"}, True),
    ({"mode": "featuremaps", "channels": "16"}, True),
    ({"mode": "filters", "layers": "features.0"}, False),
    ({"mode": "gradcam"}, True),
    ({"mode": "saliency"}, True),
    ({"mode": "layers"}, False),
    ({"mode": "featuremaps", "layers": "nope"}, True),  # a 400 now and then, as real traffic has
]


@dataclass
class LoadResult:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    rss_mb: dict[int, float] = field(default_factory=dict)  # worker resident size after N requests
    seconds: float = 0.0
    #: A 202 is a request the cost model made a job (over the batch's inline budget, say): followed to its answer,
    #: whose status is counted here.
    job_statuses: dict[int, int] = field(default_factory=dict)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(self.requests / self.seconds, 2),
            "statuses": dict(sorted(self.statuses.items())),
            "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "rss_mb": self.rss_mb,
            "job_statuses": dict(sorted(self.job_statuses.items())),
        }


def follow(server, model: str, submitted, session, seconds: float = 120.0) -> int:
    """The status a job's answer came with (polled every 0.2 s, at most ``seconds``; 504 when it never came)."""
    job, deadline = submitted.json()["job"], time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = server.post(model, data={"job": job}, session=session)
        if r.status_code != 202:
            return r.status_code
        time.sleep(0.2)
    return 504


def run_load(server, model: str, image: bytes, *, total: int, clients: int, max_seconds: float,
             rss_after: tuple[int, ...] = (), seed: int = 0) -> LoadResult:  # fmt: skip
    """``total`` requests from ``clients`` threads, stopping early after ``max_seconds``. ``rss_after``: request
    counts after which the worker's resident memory is read."""
    [pid] = server.worker_pids(model)[:1]
    worker = psutil.Process(pid)
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds
    started = time.monotonic()
    marks = sorted(rss_after)

    def client(n: int) -> None:
        rng = random.Random(seed + n)
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if result.requests >= total:
                    return
                result.requests += 1
            fields, with_image = rng.choice(MIX)
            files = {"data": ("x.jpg", image)} if with_image else None
            t0 = time.perf_counter()
            r = server.post(model, files=files, data=fields, session=session)
            ms = (time.perf_counter() - t0) * 1000
            answer = follow(server, model, r, session) if r.status_code == 202 else None
            with lock:
                if answer is not None:
                    result.job_statuses[answer] = result.job_statuses.get(answer, 0) + 1
                result.latencies_ms.append(ms)
                result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
                done = len(result.latencies_ms)
                while marks and done >= marks[0]:
                    result.rss_mb[marks.pop(0)] = round(worker.memory_info().rss / 2**20, 1)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    result.seconds = time.monotonic() - started
    return result
