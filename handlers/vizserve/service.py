"""The request pipeline, independent of any model server: fields in, (status, content type, body) out.

A batch of requests is checked one by one (a bad request fails only itself), then the inputs of one shape run
through the model as a single forward pass that both classifies and captures every feature map asked for.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import torch
from torch import nn

from cnnviz import (
    GradCAM,
    GradCAMPlusPlus,
    InputTooLarge,
    LayerTable,
    Settings,
    Target,
    VizError,
    actmax,
    attribution_map,
    deconv_projection,
    featuremap_tiles,
    forward,
    invert,
    kernel_matrix,
    rgb_filter_tiles,
    saliency,
)

from . import render
from .decode import NPY_MAGIC, read_image, read_npy
from .request import VizRequest, fields_of, parse_request

__all__ = ["Limits", "Reply", "VizService", "smallest_input_side"]

log = logging.getLogger(__name__)

#: Deeper filters are drawn as a matrix of at most this many rows (output filters) and columns (input channels).
MAX_MATRIX = 128


@dataclass(frozen=True)
class Limits:
    """Caps an operator may change (model-config.yaml, ``handler:`` section)."""

    max_image_pixels: int = 50_000_000  # refused from the image header, before decoding
    max_input_side: int = 1024  # largest H or W of a .npy input
    max_response_bytes: int = 64 * 1024 * 1024  # keep equal to TorchServe's max_response_size
    # Optimizations (actmax, invert) of one batch stop after this many seconds and answer with what they have;
    # keep it well below TorchServe's responseTimeout (120 s), which would kill the worker instead.
    max_busy_seconds: int = 90

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Limits:
        known = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in cfg.items() if k in known})


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    modes: tuple[str, ...] = ()  # what the request asked for (empty when it could not be read)

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase

    @classmethod
    def error(cls, err: VizError) -> Reply:
        return cls(err.status, json.dumps(err.as_dict()).encode())


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX for oneDNN)."""
    try:
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def smallest_input_side(model: nn.Module, device: torch.device, upper: int = 224) -> int:
    """The smallest square input side the model accepts, by bisection (pooling layers set a floor)."""

    def runs(side: int) -> bool:
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 3, side, side, device=device))
            return True
        except RuntimeError:
            return False

    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid + 1, hi)
    return lo


class VizService:
    """Answers visualization requests for one model.

    Args:
        model: classifier in eval mode, already on ``device``.
        labels: class names, index -> text.
        transform: PIL image -> normalized ``[3, H, W]`` tensor (the weights' own eval transform).
        name, arch, weights: reported in every response (``weights``: ``IMAGENET1K_V1``, ``random``,
            ``file:<name>``).
        input_shape: ``(3, H, W)`` the transform produces; the ``layers`` table is computed for it.
        mean, std: the normalization the transform applies, to show inputs as the network saw them and to build
            the black and white baselines of integrated gradients. Default ImageNet's.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        labels: Sequence[str],
        transform: Callable[[Any], torch.Tensor],
        device: torch.device,
        name: str,
        arch: str,
        weights: str,
        input_shape: Sequence[int] = (3, 224, 224),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        limits: Limits = Limits(),
    ) -> None:
        self.model, self.labels, self.transform, self.device = model, list(labels), transform, device
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.name, self.arch, self.weights, self.limits = name, arch, weights, limits
        self.table = LayerTable(model, input_shape)
        self.layer_list = [info.as_dict() for info in self.table]
        self.min_side = smallest_input_side(model, device, upper=max(input_shape[1:]))
        self.modules = dict(model.named_modules())
        self._bf16 = bf16_is_fast(device)

    # -- the batch ----------------------------------------------------------------------------------------------

    def handle(
        self,
        items: Sequence[Mapping[str, Any]],
        explain: Sequence[bool] | None = None,
        emit: Callable[[int, bytes], None] | None = None,
    ) -> list[Reply]:
        """One reply per item, in order. Never raises for a bad request; an unexpected failure of one request
        becomes its own 500 reply. ``explain[i]`` (an ``/explanations`` call) adds mode gradcam to item ``i``.
        ``emit(i, chunk)`` sends a progress chunk of request ``i`` ahead of its reply (``stream=true``)."""
        deadline = time.monotonic() + self.limits.max_busy_seconds
        replies: list[Reply | None] = [None] * len(items)
        jobs: dict[int, tuple[VizRequest, torch.Tensor | None]] = {}
        for i, item in enumerate(items):
            try:
                req = parse_request(fields_of(item), self.table, self.labels, explain=bool(explain and explain[i]))
                jobs[i] = (req, self._input(req.data) if req.data is not None else None)
            except VizError as err:
                replies[i] = Reply.error(err)
            except Exception:
                log.exception("request %d: unexpected failure while reading it", i)
                replies[i] = self._internal_error()

        explained, predicted = self._run_gradients(jobs, replies)
        # A gradient pass already classified its requests: only feature maps need the plain forward pass then.
        # Requests whose gradient pass failed already have their 500 and need no forward pass at all.
        plain = {
            i: job
            for i, job in jobs.items()
            if replies[i] is None and (i not in predicted or job[0].wants("featuremaps"))
        }
        outputs = self._run_batches(plain, replies)
        for i, (req, x) in jobs.items():
            if req.optimization is not None and replies[i] is None:
                try:
                    explained.setdefault(i, {}).update(self._optimize(req, x, deadline, emit, i))
                except Exception:
                    log.exception("request %d: optimization failed", i)
                    replies[i] = self._internal_error()
        for i, (req, _) in jobs.items():
            if replies[i] is not None:
                continue
            try:
                probs, acts = outputs.get(i, (predicted.get(i), {}))
                replies[i] = self._reply(req, probs, acts, explained.get(i, {}))
            except VizError as err:
                replies[i] = Reply.error(err)
            except Exception:
                log.exception("request %d: unexpected failure while answering", i)
                replies[i] = self._internal_error()
        done = [r if r is not None else self._internal_error() for r in replies]
        return [replace(r, modes=jobs[i][0].modes) if i in jobs else r for i, r in enumerate(done)]

    def _input(self, data: bytes) -> torch.Tensor:
        if data.startswith(NPY_MAGIC):
            return read_npy(data, min_side=self.min_side, max_side=self.limits.max_input_side)
        return self.transform(read_image(data, max_pixels=self.limits.max_image_pixels))

    def _run_batches(self, jobs, replies) -> dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Forward passes, one per input shape: probabilities and the feature maps each request asked for."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, x) in jobs.items():
            if x is not None:
                groups[tuple(x.shape)].append(i)
        results = {}
        for members in groups.values():
            layers = sorted({name for i in members if jobs[i][0].wants("featuremaps") for name in jobs[i][0].layers})
            try:
                batch = torch.stack([jobs[i][1] for i in members]).to(self.device, non_blocking=True)
                probs, acts = forward(self.model, batch, layers)
                probs, acts = probs.cpu(), {k: v.cpu() for k, v in acts.items()}
            except Exception:
                log.exception("forward pass failed for requests %s", members)
                for i in members:
                    replies[i] = self._internal_error()
                continue
            for k, i in enumerate(members):
                results[i] = (probs[k], {name: acts[name][k] for name in jobs[i][0].layers if name in acts})
        return results

    def _run_gradients(self, jobs, replies) -> tuple[dict[int, dict[str, dict[str, Any]]], dict[int, torch.Tensor]]:
        """The gradient modes, one pass per group of requests that share method, layer, options and input shape;
        each row keeps its own target. Returns ``{request: {mode: entry}}`` and the class probabilities the passes
        computed on the way, ``{request: [K]}``."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (req, x) in jobs.items():
            a = req.attribution
            if a is None or x is None:
                continue
            shape = tuple(x.shape)
            if req.wants("gradcam"):
                groups[("gradcam", a.cam_method, a.layer, shape)].append(i)
            if req.wants("saliency"):
                groups[("saliency", a.saliency_method, a.samples, a.noise, a.steps, a.baseline, shape)].append(i)
            if req.wants("deconv"):
                groups[("deconv", a.layer, shape)].append(i)
        results: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        predicted: dict[int, torch.Tensor] = {}
        for key, members in groups.items():
            reqs = [jobs[i][0] for i in members]
            try:
                x = torch.stack([jobs[i][1] for i in members]).to(self.device, non_blocking=True)
                entries = {"gradcam": self._gradcam, "saliency": self._saliency, "deconv": self._deconv}[key[0]](
                    reqs, x
                )
            except Exception:
                log.exception("%s failed for requests %s", key[0], members)
                for i in members:
                    replies[i] = self._internal_error()
                continue
            for i, (entry, probs) in zip(members, entries, strict=True):
                results[i][key[0]] = entry
                if probs is not None:
                    predicted[i] = probs
        return results, predicted

    def _targets(self, reqs: Sequence[VizRequest], logits: torch.Tensor) -> torch.Tensor:
        asked = torch.tensor([r.attribution.target for r in reqs], device=logits.device)
        return torch.where(asked < 0, logits.argmax(1), asked)

    # Each gradient mode returns, per request, its entry and the class probabilities it computed (or None).
    def _gradcam(self, reqs: Sequence[VizRequest], x: torch.Tensor) -> list[tuple[dict, torch.Tensor | None]]:
        a = reqs[0].attribution
        cam = (GradCAMPlusPlus if a.cam_method == "gradcam++" else GradCAM)(self.model, a.layer)
        asked = torch.tensor([r.attribution.target for r in reqs], device=x.device)
        result = cam(x, asked)
        maps = result.cams
        if a.cam_method == "guided_gradcam":  # Selvaraju et al.: guided backprop times the (upsampled) CAM
            guided = saliency(self.model, x, result.targets, "guided_backprop")
            maps = attribution_map(guided, "guided_backprop") * maps
        probs = result.logits.softmax(-1).cpu()
        return [
            (
                self._attribution_entry(
                    r, x[k], maps[k], int(result.targets[k]), probs[k], method=a.cam_method, layer=a.layer
                ),
                probs[k],
            )
            for k, r in enumerate(reqs)
        ]

    def _saliency(self, reqs: Sequence[VizRequest], x: torch.Tensor) -> list[tuple[dict, torch.Tensor | None]]:
        a = reqs[0].attribution
        with torch.inference_mode():
            logits = self.model(x)
        targets = self._targets(reqs, logits)
        baseline = {"black": 0.0, "white": 1.0}.get(a.baseline)
        base = None if baseline is None else ((baseline - self.mean) / self.std).to(x.device)[None]
        attributions = saliency(
            self.model, x, targets, a.saliency_method, samples=a.samples, noise=a.noise, steps=a.steps, baseline=base
        )
        maps = attribution_map(attributions, a.saliency_method)
        probs = logits.softmax(-1).cpu()
        return [
            (self._attribution_entry(r, x[k], maps[k], int(targets[k]), probs[k], method=a.saliency_method), probs[k])
            for k, r in enumerate(reqs)
        ]

    def _deconv(self, reqs: Sequence[VizRequest], x: torch.Tensor) -> list[tuple[dict, torch.Tensor | None]]:
        layer = reqs[0].attribution.layer
        asked = torch.tensor([r.attribution.channel for r in reqs], device=x.device)
        projection, channels, peaks = deconv_projection(self.model, x, layer, asked)
        entries = []
        for k, r in enumerate(reqs):
            heat = attribution_map(projection[k : k + 1], "deconvnet")[0]
            top = float(heat.max())
            entry = {
                "layer": layer,
                "channel": int(channels[k]),
                "activation": float(peaks[k]),
                "max": top,
                "image": render.rgb_png(projection[k]),
                "heatmap": render.heatmap_png(heat / top if top > 0 else heat),
            }
            if r.raw:
                entry["raw"] = render.npy_bytes(projection[k])
            entries.append((entry, None))
        return entries

    def _optimize(self, req: VizRequest, x: torch.Tensor | None, deadline: float, emit, i: int) -> dict[str, Any]:
        """actmax (all targets of the request as one batch) and invert, within what is left of the time budget."""
        o = req.optimization
        base = dict(o.settings, mean=tuple(self.mean.flatten().tolist()), std=tuple(self.std.flatten().tolist()))
        if base["precision"] == "auto":
            base["precision"] = "bfloat16" if self._bf16 else "float32"
        seen = None if x is None else (x * self.std + self.mean).clamp(0, 1)  # the uploaded image in [0, 1]
        if o.init == "image":
            base["init"] = seen
        elif o.init == "zeros":
            base["init_noise"] = 0.0
        elif base["param"] == "pixel":
            base["init_noise"] = 0.1  # fft's default noise is Lucid's 0.01
        out: dict[str, Any] = {}
        progress = self._streamer(req, emit, i) if (o.stream and emit is not None) else None
        if o.targets:
            targets = [Target(layer, c, y, xx) for layer, c, y, xx in o.targets]
            settings = Settings(**base, budget_s=max(0.0, deadline - time.monotonic()))
            result = actmax(self.model, targets, settings, progress and progress("actmax"))
            out["actmax"] = [
                self._optimized_entry(
                    req,
                    result,
                    k,
                    layer=t.layer or "classes",
                    channel=t.channel,
                    **({"label": self.labels[t.channel]} if not t.layer else {}),
                    **({"y": t.y, "x": t.x} if t.y is not None else {}),
                )  # fmt: skip
                for k, t in enumerate(targets)
            ]
        if o.invert_layer:
            settings = Settings(**base, budget_s=max(0.0, deadline - time.monotonic()))
            result = invert(self.model, x.to(self.device), o.invert_layer, settings, progress and progress("invert"))
            # invert maximizes minus the relative error: report the error itself
            out["invert"] = self._optimized_entry(req, result, 0, names=("start_error", "error"), sign=-1.0,
                                                  layer=o.invert_layer)  # fmt: skip
        return out

    def _optimized_entry(
        self, req: VizRequest, result, k: int, names=("start", "end"), sign: float = 1.0, **about
    ) -> dict[str, Any]:
        entry = {
            **about,
            names[0]: sign * float(result.start[k]),
            names[1]: sign * float(result.end[k]),
            "steps": result.steps,
            "seconds": round(result.seconds, 3),
            "stopped_early": result.stopped_early,
            "image": render.image_png(result.images[k]),
        }
        if req.raw:
            entry["raw"] = render.npy_bytes(result.images[k])
        return entry

    def _streamer(self, req: VizRequest, emit, i: int):
        """Progress chunks (newline-delimited JSON): the objective every ~1/32 of the steps, a preview every ~1/8."""
        total = req.optimization.settings["steps"]
        every, preview_every = max(1, total // 32), max(1, total // 8)

        def for_mode(mode: str):
            def progress(step: int, values: torch.Tensor, images) -> None:
                if step % every and step != total:
                    return
                chunk: dict[str, Any] = {"mode": mode, "step": step, "steps": total, "objective": values.tolist()}
                if step % preview_every == 0:
                    with torch.no_grad():
                        chunk["preview"] = render.b64(render.preview_png(images()[:16].detach()))
                emit(i, (json.dumps(chunk) + "\n").encode())

            return progress

        return for_mode

    def _attribution_entry(self, req, x, heat, target, probs, **about) -> dict[str, Any]:
        """Pictures and numbers for one map ``heat [H, W]`` (>= 0) of input ``x [3, H, W]``."""
        top = float(heat.max())
        scaled = heat / top if top > 0 else heat
        seen = (x.cpu() * self.std + self.mean).clamp(0, 1)  # the input as the network saw it
        entry = {
            **about,
            "target": target,
            "label": self.labels[target],
            "score": float(probs[target]),
            "max": top,
            "image": render.overlay_png(seen, scaled.cpu()),
            "heatmap": render.heatmap_png(scaled.cpu()),
        }
        if req.raw:
            entry["raw"] = render.npy_bytes(heat)
        return entry

    # -- one reply ----------------------------------------------------------------------------------------------

    def _reply(
        self,
        req: VizRequest,
        probs: torch.Tensor | None,
        acts: dict[str, torch.Tensor],
        explained: dict[str, dict[str, Any]],
    ) -> Reply:
        out: dict[str, Any] = {
            "model": self.name,
            "arch": self.arch,
            "weights": self.weights,
            "device": str(self.device),
        }
        if probs is not None:
            scores, idx = probs.topk(req.topk)
            out["predictions"] = [
                {"index": j, "label": self.labels[j], "score": s}
                for s, j in zip(scores.tolist(), idx.tolist(), strict=True)
            ]
        if req.wants("featuremaps"):
            out["featuremaps"] = [self._featuremap(req, name, acts[name]) for name in req.layers]
        if req.wants("filters"):
            out["filters"] = [self._filters(req, name) for name in req.layers]
        if req.wants("layers"):
            out["layers"] = self.layer_list
        out.update(explained)
        if req.format == "png":
            picture = out[req.picture_mode]
            return Reply(200, (picture[0] if isinstance(picture, list) else picture)["image"], "image/png")
        body = json.dumps(out, default=render.b64).encode()  # pictures and arrays are bytes until here
        if req.optimization is not None and req.optimization.stream:
            body += b"\n"  # the last line of a newline-delimited JSON stream
        if len(body) > self.limits.max_response_bytes:
            raise InputTooLarge(
                f"the response would be {len(body) / 2**20:.1f} MiB, over this server's limit of "
                f"{self.limits.max_response_bytes / 2**20:.1f} MiB (max_response_size); ask for fewer layers or "
                f"channels, or leave out raw=true"
            )
        return Reply(200, body)

    def _featuremap(self, req: VizRequest, name: str, fmap: torch.Tensor) -> dict[str, Any]:
        tiles, idx = featuremap_tiles(fmap, req.channels, req.normalize)
        title = f"{self.arch} {name} feature maps {list(fmap.shape)}, channels {idx[0]}-{idx[-1]}"
        entry = {
            "layer": name,
            "shape": list(fmap.shape),
            "image": render.grid_png(tiles, [str(i) for i in idx], title),
        }
        if req.raw:
            entry["raw"] = render.npy_bytes(fmap)
        return entry

    def _filters(self, req: VizRequest, name: str) -> dict[str, Any]:
        weight = self.modules[name].weight.detach().cpu()
        shape = list(weight.shape)
        if weight.shape[1] == 3:
            tiles, idx = rgb_filter_tiles(weight, req.channels)
            title = f"{self.arch} {name} filters {shape} as RGB, {idx[0]}-{idx[-1]}"
            png = render.grid_png(tiles, [str(i) for i in idx], title)
        else:
            n = min(req.channels or MAX_MATRIX, MAX_MATRIX)
            cells, rows, cols = kernel_matrix(weight, n, n)
            title = f"{self.arch} {name} filters {shape}: rows out, columns in; blue<0<red"
            png = render.matrix_png(cells, rows, cols, title)
        return {"layer": name, "shape": shape, "image": png}

    @staticmethod
    def _internal_error() -> Reply:
        body = {"code": 500, "type": "InternalError", "message": "the server failed on this request; see its log"}
        return Reply(500, json.dumps(body).encode())
