"""A model spec: everything the server must know about a model besides its weights, in one JSON-able record.

An archive carries its spec (``spec.json``); a user's own model writes it as ``model.json``; torchvision's
architectures get theirs from the weights' own metadata (:func:`cnnviz.torchvision_spec`). Code that once assumed
a 2-D, 224 px ImageNet input reads the spec instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .layers import LayerTable

__all__ = ["MODALITIES", "ModelSpec", "Preprocess"]

MODALITIES = ("image", "video")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """The eval transform, as torchvision's weights define it: resize the short side to ``resize`` (or, given
    ``(H, W)``, to exactly that size, as torchvision's video weights do) with ``interpolation`` (antialiased),
    centre-crop to ``crop`` ``(H, W)``, scale to [0, 1], normalize by ``mean`` and ``std`` (one value per input
    channel). Video adds ``frames`` (the clip length the weights were trained on) and ``fps`` (its frame rate)."""

    resize: int | tuple[int, int]
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    frames: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"preprocess.mean and .std need one value per channel, std > 0: {self.mean} {self.std}")
        if min(self.resize_sizes) < 1 or min(self.crop) < 1:
            raise ValueError(f"preprocess.resize and .crop must be positive, got {self.resize} and {self.crop}")

    @property
    def resize_sizes(self) -> tuple[int, ...]:
        """``resize`` as a tuple: ``(short side,)`` or ``(H, W)``."""
        return (self.resize,) if isinstance(self.resize, int) else tuple(self.resize)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        crop = d["crop"]
        crop = (int(crop), int(crop)) if isinstance(crop, (int, float)) else tuple(int(c) for c in crop)
        resize = d.get("resize", max(crop))
        return cls(
            resize=int(resize) if isinstance(resize, (int, float)) else tuple(int(r) for r in resize),
            crop=crop,
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            interpolation=str(d.get("interpolation", "bilinear")),
            frames=int(d["frames"]) if d.get("frames") is not None else None,
            fps=float(d["fps"]) if d.get("fps") is not None else None,
        )


@dataclass(frozen=True)
class ModelSpec:
    """One served model.

    Attributes:
        arch: torchvision's name (``densenet121``) or the user's model's name.
        input_shape: one input without the batch dimension: ``(C, H, W)``, or ``(C, T, H, W)`` for video.
        preprocess: the eval transform (:class:`Preprocess`).
        labels: class names, index -> text.
        modality: ``"image"`` or ``"video"``.
        weights: what responses report: ``IMAGENET1K_V1``, ``random``, ``file:<name>``.
        weights_entry: the torchvision weights entry the preprocessing came from (``IMAGENET1K_V1``), or ``None``.
        builder: keyword arguments of torchvision's builder (Inception-v3: ``transform_input``, no aux logits).
        model_file: a user's model: the Python file (inside the archive) that defines its one ``nn.Module`` class.
        min_side: the smallest spatial side the model accepts (pooling sets a floor); ``None``: unknown.
        featuremap_layers, filter_layers, cam_layer: defaults of the modes; empty or ``None`` means "from the layer
            table" (:meth:`with_defaults`).
    """

    arch: str
    input_shape: tuple[int, ...]
    preprocess: Preprocess
    labels: tuple[str, ...]
    modality: str = "image"
    weights: str = "unknown"
    weights_entry: str | None = None
    builder: dict[str, Any] = field(default_factory=dict)
    model_file: str | None = None
    min_side: int | None = None
    featuremap_layers: tuple[str, ...] = ()
    filter_layers: tuple[str, ...] = ()
    cam_layer: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        rank = 3 if self.modality == "image" else 4
        if len(self.input_shape) != rank or min(self.input_shape) < 1:
            raise ValueError(
                f"input_shape of an {self.modality} model is {'(C, H, W)' if rank == 3 else '(C, T, H, W)'}, "
                f"got {list(self.input_shape)}"
            )
        if tuple(self.input_shape[-2:]) != tuple(self.preprocess.crop):
            raise ValueError(
                f"input_shape {list(self.input_shape)} does not end in the crop {list(self.preprocess.crop)}"
            )
        if not self.labels:
            raise ValueError("labels: the model needs at least one class name")

    @property
    def spatial_rank(self) -> int:
        """2 for images, 3 for video (``T, H, W``)."""
        return len(self.input_shape) - 1

    def with_defaults(self, table: LayerTable) -> ModelSpec:
        """This spec with every empty default layer filled from ``table`` and every given one checked against it."""
        cam = self.cam_layer or table.cam_layer
        spec = replace(
            self,
            featuremap_layers=tuple(self.featuremap_layers) or tuple(table.featuremap_defaults(cam)),
            filter_layers=tuple(self.filter_layers) or tuple(table.filter_layers),
            cam_layer=cam,
        )
        table.resolve(spec.featuremap_layers, need="spatial")
        table.resolve(spec.filter_layers, need="filters")
        if spec.cam_layer:
            table.resolve([spec.cam_layer], need="spatial")
        return spec

    def overridden(self, overrides: Mapping[str, Any]) -> ModelSpec:
        """Defaults an operator set in model-config.yaml (``featuremap_layers``, ``filter_layers``, ``cam_layer``)."""
        changes: dict[str, Any] = {}
        for key in ("featuremap_layers", "filter_layers"):
            if overrides.get(key):
                value = overrides[key]
                changes[key] = tuple(value.split(",") if isinstance(value, str) else value)
        if overrides.get("cam_layer"):
            changes["cam_layer"] = str(overrides["cam_layer"])
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["labels"] = list(self.labels)
        d["preprocess"]["crop"] = list(self.preprocess.crop)
        if not isinstance(self.preprocess.resize, int):
            d["preprocess"]["resize"] = list(self.preprocess.resize)
        for key in ("featuremap_layers", "filter_layers"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **changes: Any) -> ModelSpec:
        """A spec from its JSON form (``spec.json``, or a user's ``model.json``: extra keys such as ``weights`` (a
        file name there) and ``description`` are ignored). ``changes`` override fields. Raises ``ValueError`` that
        names the missing or bad key."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values.update(changes)
        try:
            pre = Preprocess.from_dict(values["preprocess"])
            modality = str(values.get("modality", "image"))
            shape = values.get("input_shape")
            if shape is None:  # model.json of an image model may give only the crop
                shape = (len(pre.mean), *pre.crop) if modality == "image" else (len(pre.mean), pre.frames, *pre.crop)
            values.update(
                preprocess=pre,
                input_shape=tuple(int(s) for s in shape),
                labels=tuple(str(v) for v in values["labels"]),
                featuremap_layers=tuple(values.get("featuremap_layers") or ()),
                filter_layers=tuple(values.get("filter_layers") or ()),
                builder=dict(values.get("builder") or {}),
            )
            return cls(**values)
        except KeyError as exc:
            raise ValueError(f"model spec: missing key {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model spec: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """What ``mode=describe`` shows of the spec (labels by count and the first few)."""
        d = self.to_dict()
        d.pop("labels")
        d.pop("builder")
        d.pop("model_file")
        d["num_classes"] = len(self.labels)
        d["labels_first"] = list(self.labels[:10])
        return d


def labels_sequence(labels: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """Labels from a list, or from TorchServe's ``index_to_name.json`` mapping (``{"0": name or [wnid, name]}``)."""
    if isinstance(labels, Mapping):
        labels = [labels[str(i)] for i in range(len(labels))]
    return [v[-1] if isinstance(v, list) else str(v) for v in labels]
