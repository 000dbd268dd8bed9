"""Build a :class:`VizService` from an unpacked model archive (or any folder laid out the same way).

An archive holds ``spec.json`` (the :class:`cnnviz.ModelSpec`), the weights, and for a user's own model the Python
file of its class. ``model-config.yaml``'s ``handler:`` section is the server's configuration
(:class:`vizserve.config.ServerConfig`: limits, jobs, video, and the spec's default layers).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cnnviz import ModelSpec, build_model, load_weights, model_from_file, read_state_dict

from .config import JobSettings, ServerConfig
from .jobs import JobLimits, JobScheduler, make_store
from .pipeline import VizService

__all__ = ["SPEC_FILE", "job_scheduler", "load_service", "model_for", "split_threads"]

SPEC_FILE = "spec.json"

log = logging.getLogger(__name__)


def model_for(spec: ModelSpec, folder: Path | None) -> torch.nn.Module:
    """The untrained model of ``spec``: torchvision's architecture, or the class in ``folder / spec.model_file``."""
    if spec.model_file:
        return model_from_file(folder / spec.model_file)
    return build_model(spec.arch, spec.builder)


def job_scheduler(name: str, config: ServerConfig, device: torch.device | None = None, **kw) -> JobScheduler:
    """The job scheduler of one worker of model ``name``, the job thread with ``config.jobs.threads`` torch threads
    and, for a CUDA ``device``, that device as its current one (a new thread's is cuda:0, where a worker given
    another GPU would make a CUDA context of its own for anything that uses the current device); each job with
    ``config.limits.max_busy_seconds`` of compute. Its store: ``config.jobs.store`` (``redis://HOST:PORT/DB``:
    shared by every server that names it, :mod:`vizserve.redisstore`), else the folder ``config.jobs.dir/<name>``
    (default ``<system temp dir>/cnnviz-jobs/<name>``), shared by the model's workers on this machine."""
    jobs = config.jobs
    job_limits = JobLimits(
        max_jobs=jobs.max_jobs,
        max_queued=jobs.max_queued,
        compute_seconds=float(config.limits.max_busy_seconds),
        wall_seconds=float(jobs.wall_seconds),
        keep_seconds=float(jobs.keep_seconds),
    )
    base = Path(jobs.dir) if jobs.dir else Path(tempfile.gettempdir()) / "cnnviz-jobs"
    store = make_store(jobs.store, name, job_limits, folder=base / name)
    threads, _ = split_threads(jobs)

    def on_thread_start() -> None:
        torch.set_num_threads(threads)
        lower_priority(jobs.nice)
        if device is not None and device.type == "cuda":
            torch.cuda.set_device(device)

    return JobScheduler(store, job_limits, on_thread_start=on_thread_start, **kw)


def lower_priority(nice: int) -> None:
    """Give the calling thread (and the compute threads it starts) ``nice`` more than it has (Linux schedules
    threads, so this is the thread's own); nothing where the system has no per-thread priority."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):  # not Linux, or not allowed: the job thread keeps its priority
        log.warning("the job thread's priority could not be lowered")


def split_threads(jobs: JobSettings, cores: int | None = None) -> tuple[int, int]:
    """torch's intra-op threads for the job thread and for the request thread: ``jobs.threads`` (0: half
    of the cores, at least 1) and the rest (at least 1). ``torch.set_num_threads`` in a thread sets that thread's
    OpenMP team (and the default of threads started after it), not that of threads already running (checked in
    this build: docs/jobs.md, "Slow requests are jobs"), so each thread sets its own."""
    cores = cores or torch.get_num_threads()
    job = jobs.threads or max(1, cores // 2)
    return job, max(1, cores - job)


def load_service(
    model_dir: str | Path, cfg: Mapping[str, Any] | ServerConfig, *, device: torch.device, name: str,
    jobs: bool = False,
) -> VizService:  # fmt: skip
    """The service for the archive in ``model_dir``; ``cfg`` is the ``handler:`` section of model-config.yaml, or
    the :class:`ServerConfig` read from it (an unknown key raises :class:`vizserve.config.ConfigError`). ``jobs``:
    slow requests run as jobs (:mod:`vizserve.jobs`), calibrated now."""
    model_dir = Path(model_dir)
    config = cfg if isinstance(cfg, ServerConfig) else ServerConfig.read(cfg)
    spec = ModelSpec.from_dict(json.loads((model_dir / SPEC_FILE).read_text())).overridden(config.spec.as_mapping())
    model = model_for(spec, model_dir)
    weights_file = model_dir / config.weights_file
    load_weights(model, read_state_dict(weights_file), source=str(weights_file.name))
    model.to(device).eval()
    scheduler = job_scheduler(name, config, device) if jobs else None
    service = VizService(model, spec, device=device, name=name, limits=config.limits, video=config.video,
                         jobs=scheduler)  # fmt: skip
    if jobs:
        cores = torch.get_num_threads()
        job_threads, request_threads = split_threads(config.jobs, cores)
        torch.set_num_threads(job_threads)  # measured as the job thread will run
        try:
            service.cost.calibrate()
        finally:
            torch.set_num_threads(request_threads)  # this (the request) thread, from now on
        service.request_threads = (cores, request_threads)  # every core while no job runs
    return service
