"""The server's configuration: one object, read once, in sections, that refuses what it does not know by name.

``model-config.yaml``'s ``handler:`` section (TorchServe hands it to the handler; ``archive.sh`` writes it) holds:

.. code-block:: yaml

    handler:
      arch: alexnet                 # the archive's own facts
      weights: IMAGENET1K_V1
      weights_file: weights.pt
      limits: {max_image_pixels: 50000000, fast_seconds: 1.0, ...}   # Limits: what one request may cost
      jobs: {max_jobs: 4, wall_seconds: 300, ...}                     # JobSettings: slow work beside the requests
      video: {max_frames: 64, max_decoded_frames: 2000, ...}          # VideoLimits: what one video may cost to read
      spec: {cam_layer: layer3, featuremap_layers: [layer1, layer2]}  # SpecOverrides: the model's default layers

Every key is checked: an unknown one is refused with its name and the closest known ones (a typo or a key in the
wrong section would otherwise be dropped without a word). Two environment variables are read here and nowhere else:
``VIZ_JOB_DIR`` (the default of ``jobs.dir``) and ``VIZ_JOB_STORE`` (the default of ``jobs.store``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnviz import MAX_PASSES

from .video import VideoLimits

__all__ = ["ConfigError", "JobSettings", "Limits", "ServerConfig", "SpecOverrides"]


class ConfigError(ValueError):
    """A configuration an operator wrote that cannot be read: the message names the key and what it takes."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost (the ``limits`` section).

    Admission (:mod:`vizserve.cost`): every request is estimated before any work, in seconds of compute on this
    worker and in bytes of memory. At most ``fast_seconds`` and ``fast_memory_mb`` it runs in the request (inline),
    and a batch runs at most ``batch_seconds`` of estimated work inline (the rest of it become jobs too: a batch is
    one queue). Above, it becomes a job when the server has jobs, or is refused (422) with its estimate; a job gets
    ``max_busy_seconds`` of compute and ``job_memory_mb`` of memory, and is refused (422) when its estimate is over
    ``refuse_factor`` times the first or over the second.
    """

    max_image_pixels: int = 50_000_000  # refused from the image header, before decoding
    max_input_side: int = 1024  # largest H or W of a .npy input
    max_response_bytes: int = 64 * 1024 * 1024  # keep equal to TorchServe's max_response_size
    # KServe's protocols (vizserve.kserve): instances (v2: image inputs) one request may carry, as many as one batch
    # of the plain API's archives holds, and the decoded size of one base64 image in them (TorchServe's
    # max_request_size bounds the whole body as well)
    max_instances: int = 8
    max_instance_bytes: int = 32 * 1024 * 1024
    # saliency by occlusion or feature ablation: the most forward passes (patches) one input may cost; more is
    # refused (413) before the first pass
    max_perturbations: int = 1024
    # a job's compute (its steps' time, summed; in-process use without jobs: the request's wall time); the job stops
    # early with what it has when the next step and the final encoding would not fit
    max_busy_seconds: int = 90
    # gradcam's Score-CAM and Ablation-CAM run a forward pass per channel of 'layer' and input (aug_smooth: 6 inputs
    # an image): a request over this many is refused (413), a batch runs in parts of at most this many
    max_cam_passes: int = MAX_PASSES
    fast_seconds: float = 1.0  # a request estimated at most this runs inline; more is a job (or a 422 without jobs)
    fast_memory_mb: int = 256  # ... and at most this much memory
    batch_seconds: float = 1.0  # inline work of one batch, estimated, in all
    job_memory_mb: int = 512  # the most memory one job may take at once
    refuse_factor: int = 3  # a job estimated at more than this many times max_busy_seconds is refused (422)


@dataclass(frozen=True)
class JobSettings:
    """Slow work as jobs beside the request path (the ``jobs`` section; :mod:`vizserve.jobs`)."""

    max_jobs: int = 4  # jobs one worker runs at once (interleaved step by step); more wait in the queue
    max_queued: int = 16  # jobs waiting in the whole queue (every worker of every replica); one more is answered 429
    wall_seconds: int = 300  # a job's answer is ready at most this long after its submission
    keep_seconds: int = 600  # a finished job's answer is kept this long after it ends
    # torch's intra-op threads of the job thread; the request thread gets the rest of the cores. 0: half the cores
    # (at least 1). Oversubscribed (1 + 2 threads on 2 cores) a classify beside a job took 4x longer (docs/jobs.md).
    threads: int = 0
    # the job thread's CPU priority below the request thread's (Linux's nice, per thread: 0..19): on a machine whose
    # cores are all busy with jobs (two models' job threads on two cores), fast requests still get a core at once
    nice: int = 10
    dir: str | None = None  # states and answers: DIR/<model>; default $VIZ_JOB_DIR, else <temp dir>/cnnviz-jobs
    store: str | None = None  # a shared job store (redis://HOST:PORT/DB); default $VIZ_JOB_STORE, else the folder


@dataclass(frozen=True)
class SpecOverrides:
    """The model's default layers, as an operator overrides them (the ``spec`` section): names from
    ``model.named_modules()``, a list or a comma-separated text."""

    featuremap_layers: tuple[str, ...] | None = None
    filter_layers: tuple[str, ...] | None = None
    cam_layer: str | None = None

    def as_mapping(self) -> dict[str, Any]:
        """What :meth:`cnnviz.ModelSpec.overridden` reads."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


#: Section name -> its class; the top level holds the archive's facts besides.
SECTIONS = {"limits": Limits, "jobs": JobSettings, "video": VideoLimits, "spec": SpecOverrides}
TOP_LEVEL = ("arch", "weights", "weights_file")


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"


def _everywhere() -> dict[str, str]:
    """Every key of every section -> its dotted name (``max_jobs`` -> ``jobs.max_jobs``)."""
    return {f.name: f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _value(where: str, f: dataclasses.Field, value: Any) -> Any:
    kind = type(f.default) if f.default is not None else None
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if kind is float:
            return float(value)
        if f.name in ("featuremap_layers", "filter_layers"):
            names = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(n).strip() for n in names if str(n).strip())
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        want = {int: "a whole number", float: "a number"}.get(kind, "text")
        raise ConfigError(f"{where}: {f.name} must be {want}, got {value!r}") from None


def _section(name: str, cls: type, given: Any, where: str) -> Any:
    if given is None:
        return cls()
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: section {name!r} must be a mapping of keys to values, got {type(given).__name__}")
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    for key in given:
        if key not in fields_:
            elsewhere = _everywhere().get(str(key))
            hint = (
                f"; it belongs to section {elsewhere.split('.')[0]!r}"
                if elsewhere
                else _suggest(str(key), list(fields_))
            )
            raise ConfigError(f"{where}: unknown key {name}.{key}{hint}")  # fmt: skip
    return cls(**{k: _value(f"{where}, section {name!r}", fields_[k], v) for k, v in given.items()})


@dataclass(frozen=True)
class ServerConfig:
    """Everything a served model is configured with, by section. Build it with :meth:`read`."""

    limits: Limits = field(default_factory=Limits)
    jobs: JobSettings = field(default_factory=JobSettings)
    video: VideoLimits = field(default_factory=VideoLimits)
    spec: SpecOverrides = field(default_factory=SpecOverrides)
    arch: str | None = None
    weights: str | None = None
    weights_file: str = "weights.pt"

    @classmethod
    def read(
        cls, cfg: Mapping[str, Any] | None, env: Mapping[str, str] | None = None, where: str = "model-config.yaml"
    ) -> ServerConfig:
        """The configuration from ``model-config.yaml``'s ``handler:`` section (``cfg``) and the environment
        (``env``, default ``os.environ``). Raises :class:`ConfigError` for an unknown key (with the section it
        belongs to, or the closest names) or a value of the wrong type."""
        cfg = dict(cfg or {})
        env = os.environ if env is None else env
        where = f"{where} (handler section)"
        known = [*SECTIONS, *TOP_LEVEL]
        for key in cfg:
            if key not in known:
                elsewhere = _everywhere().get(str(key))
                hint = f"; it belongs to section {elsewhere.split('.')[0]!r} ({elsewhere})" if elsewhere else (
                    _suggest(str(key), known))  # fmt: skip
                raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        sections = {name: _section(name, sec, cfg.get(name), where) for name, sec in SECTIONS.items()}
        jobs = sections["jobs"]
        jobs = dataclasses.replace(
            jobs,
            dir=jobs.dir or env.get("VIZ_JOB_DIR") or None,
            store=jobs.store or env.get("VIZ_JOB_STORE") or None,
        )
        top = {k: cfg[k] for k in TOP_LEVEL if k in cfg}
        for k, v in top.items():
            if not isinstance(v, str):
                raise ConfigError(f"{where}: {k} must be text, got {v!r}")
        if sections["limits"].max_busy_seconds > jobs.wall_seconds:
            raise ConfigError(f"{where}: limits.max_busy_seconds (the compute a job gets) cannot exceed "
                              "jobs.wall_seconds (its wall-clock ceiling)")  # fmt: skip
        return cls(**{**sections, "jobs": jobs}, **top)
