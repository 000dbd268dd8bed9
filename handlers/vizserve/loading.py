"""Build a :class:`VizService` from an unpacked model archive (or any folder laid out the same way).

An archive holds ``spec.json`` (the :class:`cnnviz.ModelSpec`), the weights, and for a user's own model the Python
file of its class. ``model-config.yaml``'s ``handler:`` section adds the caps of :class:`Limits` and may override
the spec's default layers (``featuremap_layers``, ``filter_layers``, ``cam_layer``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cnnviz import ModelSpec, build_model, load_weights, model_from_file, read_state_dict

from .jobs import JobLimits, JobScheduler, JobStore, default_job_dir
from .served import Limits
from .service import VizService

__all__ = ["SPEC_FILE", "job_scheduler", "load_service", "model_for", "split_threads"]

SPEC_FILE = "spec.json"


def model_for(spec: ModelSpec, folder: Path | None) -> torch.nn.Module:
    """The untrained model of ``spec``: torchvision's architecture, or the class in ``folder / spec.model_file``."""
    if spec.model_file:
        return model_from_file(folder / spec.model_file)
    return build_model(spec.arch, spec.builder)


def job_scheduler(
    name: str, limits: Limits, folder: str | Path | None = None, device: torch.device | None = None, **kw
) -> JobScheduler:
    """The job scheduler of one worker of model ``name``: states and answers in ``folder`` (default
    ``$VIZ_JOB_DIR/<name>``, see :func:`vizserve.jobs.default_job_dir`), the job thread with
    ``limits.job_threads`` torch threads and, for a CUDA ``device``, that device as its current one (a new thread's
    is cuda:0, where a worker given another GPU would make a CUDA context of its own for anything that uses the
    current device)."""
    job_limits = JobLimits(
        max_jobs=limits.max_jobs,
        compute_seconds=float(limits.max_busy_seconds),
        wall_seconds=float(limits.job_wall_seconds),
        keep_seconds=float(limits.job_keep_seconds),
    )
    store = JobStore(Path(folder) if folder else default_job_dir(name), job_limits)
    threads, _ = split_threads(limits)

    def on_thread_start() -> None:
        torch.set_num_threads(threads)
        if device is not None and device.type == "cuda":
            torch.cuda.set_device(device)

    return JobScheduler(store, job_limits, on_thread_start=on_thread_start, **kw)


def split_threads(limits: Limits, cores: int | None = None) -> tuple[int, int]:
    """torch's intra-op threads for the job thread and for the request thread: ``limits.job_threads`` (0: half
    of the cores, at least 1) and the rest (at least 1). ``torch.set_num_threads`` in a thread sets that thread's
    OpenMP team (and the default of threads started after it), not that of threads already running (checked in
    this build: README, "Optimizations are jobs"), so each thread sets its own."""
    cores = cores or torch.get_num_threads()
    job = limits.job_threads or max(1, cores // 2)
    return job, max(1, cores - job)


def load_service(
    model_dir: str | Path, cfg: Mapping[str, Any], *, device: torch.device, name: str, jobs: bool = False
) -> VizService:
    """The service for the archive in ``model_dir``; ``cfg`` is the ``handler:`` section of model-config.yaml
    (``weights_file``: the state dict inside the archive, default ``weights.pt``; ``job_dir``: the folder of
    the jobs' states and answers). ``jobs``: optimizations run as jobs (:mod:`vizserve.jobs`), calibrated now."""
    model_dir = Path(model_dir)
    spec = ModelSpec.from_dict(json.loads((model_dir / SPEC_FILE).read_text())).overridden(cfg)
    model = model_for(spec, model_dir)
    weights_file = model_dir / cfg.get("weights_file", "weights.pt")
    load_weights(model, read_state_dict(weights_file), source=str(weights_file.name))
    model.to(device).eval()
    limits = Limits.from_config(cfg)
    scheduler = job_scheduler(name, limits, cfg.get("job_dir"), device) if jobs else None
    service = VizService(model, spec, device=device, name=name, limits=limits, jobs=scheduler)
    if jobs:
        cores = torch.get_num_threads()
        job_threads, request_threads = split_threads(limits, cores)
        torch.set_num_threads(job_threads)  # measured as the job thread will run
        try:
            service.calibrate()
        finally:
            torch.set_num_threads(request_threads)  # this (the request) thread, from now on
        service.request_threads = (cores, request_threads)  # every core while no job runs
    return service
