"""The request pipeline, independent of any model server: fields in, (status, content type, body) out.

The service only orchestrates: it parses each request of a batch (a bad one fails only itself), decodes the
inputs, runs the modes by their kind (:mod:`vizserve.modes.base`) and assembles one reply per request.
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

from cnnviz import InputTooLarge, InvalidInput, LayerTable, ModelSpec, VizError, forward

from . import render
from .decode import NPY_MAGIC, read_image, read_npy
from .modes import MODES, BatchedMode, ForwardMode, OptimizeMode, StaticMode
from .modes.optimizing import streamer
from .preprocess import decode_fit, image_transform
from .request import ANIMATED, VizRequest, fields_of, parse_request
from .served import Limits, Served, smallest_input_side
from .video import VideoLimits, is_video, read_clip, video_transform

__all__ = ["Reply", "VizService"]

log = logging.getLogger(__name__)


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

    @classmethod
    def internal_error(cls) -> Reply:
        body = {"code": 500, "type": "InternalError", "message": "the server failed on this request; see its log"}
        return cls(500, json.dumps(body).encode())


class VizService:
    """Answers visualization requests for one model.

    Args:
        model: classifier in eval mode, already on ``device``.
        spec: its :class:`cnnviz.ModelSpec`; empty default layers are filled from the model's layer table.
        device: where the model is.
        name: the served name, reported in every response.
        transform: decoded image -> normalized input; default: the spec's preprocessing
            (:func:`vizserve.preprocess.image_transform`).
        limits: caps (:class:`Limits`).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        device: torch.device,
        name: str,
        transform: Callable[[Any], torch.Tensor] | None = None,
        limits: Limits = Limits(),
    ) -> None:
        table = LayerTable(model, spec.input_shape)
        spec = spec.with_defaults(table)
        if spec.min_side is None:
            spec = replace(spec, min_side=smallest_input_side(model, spec.input_shape, device))
        self.served = Served(model, spec, table, transform or image_transform(spec.preprocess), device, name, limits)
        # decode no more than the transform keeps (reduced-size JPEG decoding, extreme shapes cropped first);
        # None: a transform of the caller's own, which gets the whole image
        self._fit = decode_fit(spec.preprocess) if transform is None else None
        self._video_limits = VideoLimits()
        if spec.modality == "video":
            pre = spec.preprocess
            self._video_transform = video_transform(pre.resize, pre.crop, pre.mean, pre.std, pre.interpolation)

    # the attributes tests and tools read
    @property
    def model(self) -> nn.Module:
        return self.served.model

    @property
    def spec(self) -> ModelSpec:
        return self.served.spec

    @property
    def table(self) -> LayerTable:
        return self.served.table

    @property
    def limits(self) -> Limits:
        return self.served.limits

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
        inputs: dict[int, dict[str, Any]] = defaultdict(dict)  # what was read of each video input
        for i, item in enumerate(items):
            try:
                req = parse_request(fields_of(item), self.served, explain=bool(explain and explain[i]))
                jobs[i] = (req, self._input(req, inputs[i]) if req.data is not None else None)
            except VizError as err:
                replies[i] = Reply.error(err)
            except Exception:
                log.exception("request %d: unexpected failure while reading it", i)
                replies[i] = Reply.internal_error()

        results: dict[int, dict[str, Any]] = defaultdict(dict)
        predicted = self._run_batched(jobs, replies, results)
        # A batched (gradient) pass already classified its requests: the shared forward pass is needed only for
        # feature maps then. Requests that already failed need no forward pass at all.
        plain = {
            i: job
            for i, job in jobs.items()
            if replies[i] is None and job[1] is not None and (i not in predicted or self._captures(job[0]))
        }
        captured = self._run_forward(plain, replies, predicted)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if replies[i] is not None:
                    break
                try:
                    if isinstance(mode, ForwardMode):
                        acts = captured.get(i, {})
                        results[i][name] = mode.present(self.served, req.values[name], predicted[i], acts)
                    elif isinstance(mode, StaticMode):
                        results[i][name] = mode.present(self.served, req.values[name])
                    elif isinstance(mode, OptimizeMode):
                        results[i][name] = self._optimize(mode, req, x, deadline, emit, i)
                except VizError as err:
                    replies[i] = Reply.error(err)
                except Exception:
                    log.exception("request %d: %s failed", i, name)
                    replies[i] = Reply.internal_error()
        for i, (req, _) in jobs.items():
            if replies[i] is None:
                try:
                    replies[i] = self._reply(req, results[i], inputs.get(i))
                except VizError as err:
                    replies[i] = Reply.error(err)
                except Exception:
                    log.exception("request %d: unexpected failure while answering", i)
                    replies[i] = Reply.internal_error()
        done = [r if r is not None else Reply.internal_error() for r in replies]
        return [replace(r, modes=jobs[i][0].modes) if i in jobs else r for i, r in enumerate(done)]

    def _input(self, req: VizRequest, info: dict[str, Any]) -> torch.Tensor:
        """The normalized input of ``req``: an image ``[3, H, W]``, or for a video model a clip ``[3, T, H, W]``
        (``info`` gets what was read of a video file)."""
        limits, spec, data = self.limits, self.spec, req.data
        if spec.modality == "video":
            if data.startswith(NPY_MAGIC):
                return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side, rank=4,
                                max_frames=self._video_limits.max_frames)  # fmt: skip
            if not is_video(data):
                raise InvalidInput(
                    f"{spec.arch} takes a video (MP4, WebM, AVI, MKV, MOV, animated GIF, WebP or PNG) or a .npy "
                    f"float32 clip [3, T, H, W]; field 'data' is neither (first bytes {bytes(data[:8])!r})"
                )
            pre = spec.preprocess
            frames, start, seconds = req.clip["frames"], req.clip["start"], req.clip["clip"]
            clip, read = read_clip(
                data, frames=frames, start=start, clip=seconds, fps=pre.fps, limits=self._video_limits
            )
            info.update(read)
            return self._video_transform(clip)
        if data.startswith(NPY_MAGIC):
            return read_npy(data, min_side=spec.min_side or 1, max_side=limits.max_input_side)
        return self.served.transform(read_image(data, max_pixels=limits.max_image_pixels, **(self._fit or {})))

    @staticmethod
    def _captures(req: VizRequest) -> list[str]:
        return [n for m in req.modes if isinstance(MODES[m], ForwardMode) for n in MODES[m].captures(req.values[m])]

    def _run_forward(self, jobs, replies, predicted) -> dict[int, dict[str, torch.Tensor]]:
        """One forward pass per input shape that classifies and captures every layer any request asked for; fills
        ``predicted`` and returns each request's captured outputs."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, x) in jobs.items():
            groups[tuple(x.shape)].append(i)
        captured: dict[int, dict[str, torch.Tensor]] = {}
        for members in groups.values():
            layers = sorted({name for i in members for name in self._captures(jobs[i][0])})
            try:
                batch = torch.stack([jobs[i][1] for i in members]).to(self.served.device, non_blocking=True)
                probs, acts = forward(self.model, batch, layers)
                probs, acts = probs.cpu(), {k: v.cpu() for k, v in acts.items()}
            except Exception:
                log.exception("forward pass failed for requests %s", members)
                for i in members:
                    replies[i] = Reply.internal_error()
                continue
            for k, i in enumerate(members):
                predicted[i] = probs[k]
                captured[i] = {name: acts[name][k] for name in self._captures(jobs[i][0])}
        return captured

    def _run_batched(self, jobs, replies, results) -> dict[int, torch.Tensor]:
        """The batched modes, one pass per group of requests that share the mode's group key and the input shape;
        each row keeps its own target. Returns the class probabilities the passes computed on the way."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (req, x) in jobs.items():
            for name in req.modes:
                mode = MODES[name]
                if isinstance(mode, BatchedMode) and x is not None:
                    groups[(name, mode.group(req.values[name]), tuple(x.shape))].append(i)
        predicted: dict[int, torch.Tensor] = {}
        for (name, _, _), members in groups.items():
            members = [i for i in members if replies[i] is None]
            if not members:
                continue
            try:
                x = torch.stack([jobs[i][1] for i in members]).to(self.served.device, non_blocking=True)
                entries = MODES[name].run(self.served, x, [jobs[i][0].values[name] for i in members])
            except Exception:
                log.exception("%s failed for requests %s", name, members)
                for i in members:
                    replies[i] = Reply.internal_error()
                continue
            for i, (entry, probs) in zip(members, entries, strict=True):
                results[i][name] = entry
                if probs is not None:
                    predicted[i] = probs
        return predicted

    def _optimize(self, mode: OptimizeMode, req: VizRequest, x, deadline: float, emit, i: int) -> Any:
        """One optimization, within what is left of the batch's time budget."""
        values = req.values[mode.name]
        progress = None
        if values["stream"] and emit is not None:
            progress = streamer(mode.name, values["steps"], lambda chunk: emit(i, chunk))
        return mode.run(self.served, values, x, deadline - time.monotonic(), progress)

    # -- one reply ----------------------------------------------------------------------------------------------

    def _reply(self, req: VizRequest, results: dict[str, Any], read: dict[str, Any] | None = None) -> Reply:
        out: dict[str, Any] = self.served.header()
        if read:
            out["input"] = read  # what was read of a video: container, codec, size, frames sampled and when
        for name in req.modes:
            if name in results:
                out["predictions" if name == "classify" else name] = results[name]
        if req.format == "png":
            picture = out[req.picture_mode]
            return Reply(200, (picture[0] if isinstance(picture, list) else picture)["image"], "image/png")
        if req.format != "json":  # an animation format (the parser checked a video model and an animated mode)
            picture = out[next(m for m in ANIMATED if m in out)]
            picture = picture[0] if isinstance(picture, list) else picture
            return Reply(200, picture["animation"], picture["animation_type"])
        body = json.dumps(out, default=render.b64).encode()  # pictures and arrays are bytes until here
        if req.stream:
            body += b"\n"  # the last line of a newline-delimited JSON stream
        if len(body) > self.limits.max_response_bytes:
            raise InputTooLarge(
                f"the response would be {len(body) / 2**20:.1f} MiB, over this server's limit of "
                f"{self.limits.max_response_bytes / 2**20:.1f} MiB (max_response_size); ask for fewer layers or "
                f"channels, or leave out raw=true"
            )
        return Reply(200, body)
