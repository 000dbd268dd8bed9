"""A fake CUDA device for machines without a GPU: tensors that say ``cuda:N`` and compute on the CPU.

Why: no GPU was ever lent to the project's CI, so a device mistake (a CPU tensor meeting a CUDA one, ``.numpy()`` on
a device tensor, a hard-coded ``cuda:0`` while TorchServe gave ``cuda:1``, a CPU generator for a device draw,
bfloat16 autocast where the device has none) would reach the first user with a GPU. Inside :func:`fake_cuda`:

- ``torch.cuda.is_available()`` is true, ``device_count()`` is 2 (or what you ask), each device has the compute
  capability you ask (bfloat16 is native from 8.0, emulated below it, as ``is_bf16_supported`` says on CUDA);
  ``synchronize``, ``empty_cache``, ``current_device``/``set_device``/``device(...)`` (per thread, as CUDA's), the
  RNG state functions, the memory statistics (the bytes of the live fake tensors of each device) are answered, and
  the lane records which devices were used (a worker given ``cuda:1`` that touches ``cuda:0`` shows there).
- Factories given ``device="cuda:N"`` (``torch.zeros``, ``torch.tensor``, ``torch.fft.fftfreq``...), ``.to``,
  ``.cuda()`` and ``Module.to("cuda:1")`` make :class:`FakeCudaTensor`: a real CPU tensor inside that reports
  ``device=cuda:N``, ``is_cuda`` True, and computes its ops on the CPU, so tests still assert values (and get the
  CPU's exact results).
- An op raises as CUDA would (a ``RuntimeError`` that names both devices) when it mixes ``cuda:N`` with a CPU
  tensor that is not a 0-dim scalar (CUDA allows those, and CPU index tensors), or ``cuda:0`` with ``cuda:1``; in
  a backward pass only two devices are caught, not the CPU (the C++ backward formulas make CPU temporaries here).
  ``.numpy()`` (and ``np.asarray``) of a device tensor raises CUDA's ``TypeError``; a device with no such index is
  an invalid ordinal; a CPU ``torch.Generator`` used for a device draw raises CUDA's error; each fake device has
  its own default generator (``torch.cuda.manual_seed`` seeds it, ``torch.manual_seed`` all of them).
- ``torch.autocast("cuda", dtype=torch.bfloat16)`` raises CUDA's error where the fake device cannot compute
  bfloat16 at all (``emulate_bf16=False``), and otherwise runs the CPU's autocast (its op lists are close to
  CUDA's); a CPU autocast does not cast device tensors, as on a GPU.
- Threads started inside (the job scheduler's) see the same fake device.

Design: a wrapper subclass (``torch.Tensor._make_wrapper_subclass`` with ``__torch_dispatch__``, as PyTorch's own
``LoggingTensor`` and ``FakeTensor`` are made) whose C++ device stays ``cpu`` and whose Python ``device`` property
says ``cuda:N`` (``FakeTensor``'s trick). A wrapper with real CUDA dispatch keys cannot run on a CUDA build without
a driver (torch aborted the process in its device guard), and ``FakeTensorMode`` checks devices but computes no
values (every ``.item()`` and picture would fail). Transfers and factories are caught a level above, by a
``TorchFunctionMode``. It is a test double of the CUDA *semantics* of placement, not of CUDA: kernels, real device
memory, streams, asynchrony and speed are never exercised (docs/development.md, "The GPU path").
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["FakeCudaTensor", "FakeGenerator", "Lane", "fake_cuda", "is_fake"]

_REAL_AUTOCAST = torch.amp.autocast
_REAL_GENERATOR = torch._C.Generator
_DEFAULT_SEED = 67280421310721  # CUDA's default seed (c10/core/GeneratorImpl.h)
_TOTAL_MEMORY = 80 * 2**30

#: Ops that take a CPU tensor with a CUDA one on a real GPU: cross-device copies, and CPU index tensors.
_COPIES = {"aten.copy_.default", "aten._copy_from.default", "aten._copy_from_and_resize.default",
           "aten._to_copy.default", "aten.lift_fresh.default"}  # fmt: skip
_INDEXING = {"aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default",
             "aten._index_put_impl_.default", "aten._unsafe_index.Tensor"}  # fmt: skip
_RANDOM_FACTORIES = {"rand", "randn", "randint", "randperm", "normal", "rand_like", "randn_like", "randint_like"}


@dataclass
class Lane:
    """The fake devices of one :func:`fake_cuda` block; tests read its counters (and may change ``capabilities``)."""

    count: int = 2
    capabilities: list[tuple[int, int]] = field(default_factory=list)  # per device; bfloat16 is native from 8.0
    emulate_bf16: bool = True  # below 8.0, whether bfloat16 works at all (CUDA emulates it from 5.3)
    used: set[int] = field(default_factory=set)  # devices that got a tensor, a synchronize or a memory query
    generators: list[FakeGenerator] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)
    syncs: list[int] = field(default_factory=list)  # the device of each torch.cuda.synchronize call
    empty_cache_calls: int = 0
    live: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (device, storage) -> [bytes, wrappers]

    def index(self, device: Any = None) -> int:
        """The device index of ``device`` (``None``, ``"cuda"``: the current one); an invalid ordinal raises."""
        if device is None:
            i = current_device()
        elif isinstance(device, int):
            i = device
        else:
            d = torch.device(device)
            if d.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {d}")
            i = current_device() if d.index is None else d.index
        if not 0 <= i < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal (fake CUDA: device {i} of {self.count})")
        self.used.add(i)
        return i

    def bf16(self, device: Any = None, including_emulation: bool = True) -> bool:
        native = self.capabilities[self.index(device)] >= (8, 0)
        return native or (including_emulation and self.emulate_bf16)


_lane: Lane | None = None
_tls = threading.local()  # current device, fake-autocast depth: per thread, as CUDA's are


def _active() -> Lane:
    if _lane is None:
        raise RuntimeError("fake CUDA tensors exist only inside tests.fakecuda.fake_cuda()")
    return _lane


def current_device() -> int:
    return getattr(_tls, "device", 0)


def _cuda(device: Any) -> torch.device | None:
    """``device`` as ``cuda:N`` when it names a CUDA device (an int does), else ``None``."""
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cuda", _active().index(device))
    d = torch.device(device)
    return torch.device("cuda", _active().index(d)) if d.type == "cuda" else None


def is_fake(t: Any) -> bool:
    return isinstance(t, FakeCudaTensor)


class FakeGenerator(_REAL_GENERATOR):
    """A CPU generator that reports a CUDA device: each fake device's default one, and ``torch.Generator("cuda")``
    inside the lane."""

    def __new__(cls, device: Any = "cuda"):
        return _REAL_GENERATOR.__new__(cls)

    def __init__(self, device: Any = "cuda") -> None:
        self._fake_device = torch.device("cuda", _active().index(device))

    @property
    def device(self) -> torch.device:
        return self._fake_device


class _GeneratorMeta(type):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, _REAL_GENERATOR)

    def __subclasscheck__(cls, sub) -> bool:
        return issubclass(sub, _REAL_GENERATOR)


class _LaneGenerator(metaclass=_GeneratorMeta):
    """``torch.Generator`` inside the lane: a :class:`FakeGenerator` for a CUDA device, a real one otherwise."""

    def __new__(cls, device: Any = "cpu"):
        return FakeGenerator(device) if _cuda(device) is not None else _REAL_GENERATOR(device)


# -- memory accounting: the bytes of the storages that live fake tensors hold, per device ------------------------------


def _track(t: FakeCudaTensor) -> None:
    lane = _lane
    if lane is None:
        return
    storage = t.elem.untyped_storage()
    nbytes = storage.nbytes()
    if nbytes == 0:
        return
    key = (t.fake_device.index, storage.data_ptr())
    lane.used.add(key[0])
    entry = lane.live.get(key)
    if entry is None:
        lane.live[key] = [nbytes, 1]
        i = key[0]
        lane.allocated[i] += nbytes
        lane.peak[i] = max(lane.peak[i], lane.allocated[i])
    else:
        entry[1] += 1
    t._fc_untrack = weakref.finalize(t, _release, lane, key)


def _release(lane: Lane, key: tuple[int, int]) -> None:
    entry = lane.live.get(key)
    if entry is not None:
        entry[1] -= 1
        if entry[1] == 0:
            del lane.live[key]
            lane.allocated[key[0]] -= entry[0]


# -- the tensor ------------------------------------------------------------------------------------------------------


def _mixing_error(func, a: Any, b: Any) -> RuntimeError:
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, {a} and {b}! "
        f"(fake CUDA, in {func})"
    )


def _numpy_error(t: FakeCudaTensor) -> TypeError:
    return TypeError(
        f"can't convert {t.fake_device} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host "
        "memory first."
    )


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor (``elem``) that reports ``device`` = ``cuda:N``; its ops run on ``elem`` (see the module)."""

    elem: torch.Tensor
    fake_device: torch.device

    @staticmethod
    def __new__(cls, elem: torch.Tensor, device: torch.device, requires_grad: bool = False):
        assert not isinstance(elem, FakeCudaTensor) and elem.device.type == "cpu"
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            layout=elem.layout, device=elem.device, requires_grad=requires_grad,
        )  # fmt: skip
        r.elem = elem
        r.fake_device = device
        _track(r)
        return r

    @property
    def device(self) -> torch.device:
        return self.fake_device

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return self.fake_device.index

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"FakeCudaTensor({self.elem!r}, device='{self.fake_device}')"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handled = _tensor_function(func, args, kwargs)
        if handled is not NotImplemented:
            return handled
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = str(func)
        devices: set[torch.device] = set()
        flat, _ = tree_flatten((args, kwargs))
        for a in flat:
            if isinstance(a, FakeCudaTensor):
                devices.add(a.fake_device)
        if len(devices) > 1:
            a, b = sorted(devices, key=str)[:2]
            raise _mixing_error(name, a, b)
        device = next(iter(devices))
        # In a backward pass, C++ formulas make temporaries from a wrapper's options (C++ device: the CPU), as
        # at::zeros(sizes, grad.options()) in max's backward (torch 2.11): on a GPU those are device tensors.
        # So mixing is checked in forward passes only (a backward hook of the user's that mixes is missed).
        if name not in _COPIES and torch._C._current_graph_task_id() == -1:
            checked = flat if name not in _INDEXING else tree_flatten((args[:1], args[2:], kwargs))[0]
            for a in checked:
                if isinstance(a, torch.Tensor) and not isinstance(a, FakeCudaTensor) and a.dim() > 0:
                    raise _mixing_error(name, device, a.device)
        target = _cuda(kwargs["device"]) if kwargs.get("device") is not None else None
        if target is not None:  # an explicit CUDA device (C++ fills in "cpu", the wrappers' own device: ignored)
            device = target
        if kwargs.get("device") is not None:
            kwargs["device"] = torch.device("cpu")
        if _takes_generator(func):
            kwargs["generator"] = _generator_for(kwargs.get("generator"), device)
        elems = {id(a.elem): a for a in flat if isinstance(a, FakeCudaTensor)}
        plain = {id(a): a for a in flat if isinstance(a, torch.Tensor) and not isinstance(a, FakeCudaTensor)}
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))

        # In inference mode a view of a normal tensor is a normal tensor (autograd shares its version counter)
        normal = torch.is_inference_mode_enabled() and _is_view(func) and not args[0].is_inference()

        def wrap(t):
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) in elems:  # an in-place op returns its own argument
                return elems[id(t)]
            if id(t) in plain:
                return plain[id(t)]
            if normal:
                with torch.inference_mode(False):
                    return FakeCudaTensor(t, device)
            return FakeCudaTensor(t, device)

        return tree_map(wrap, out)


def _unwrap(t: Any) -> Any:
    return t.elem if isinstance(t, FakeCudaTensor) else t


_VIEWS: dict[Any, bool] = {}


def _is_view(func) -> bool:
    known = _VIEWS.get(func)
    if known is None:
        returns = func._schema.returns
        alias = returns[0].alias_info if returns else None
        known = _VIEWS[func] = alias is not None and not alias.is_write
    return known


_GENERATOR_ARG: dict[Any, bool] = {}


def _takes_generator(func) -> bool:
    known = _GENERATOR_ARG.get(func)
    if known is None:
        known = _GENERATOR_ARG[func] = any(a.name == "generator" for a in func._schema.arguments)
    return known


def _generator_for(gen: Any, device: torch.device) -> torch.Generator:
    """The generator a draw on ``device`` uses: the given one if it is a device generator (a CPU one raises, as on
    CUDA), else the fake device's default one."""
    if gen is None:
        return _active().generators[device.index]
    if not isinstance(gen, FakeGenerator):
        raise RuntimeError(f"Expected a 'cuda' device type for generator but found '{gen.device.type}' (fake CUDA)")
    return gen


# -- transfers -------------------------------------------------------------------------------------------------------


class _Move(torch.autograd.Function):
    """A copy to ``device`` (``None``: the CPU) that autograd sees: the gradient goes back to where it came from."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, device: torch.device | None):
        ctx.source = t.fake_device if isinstance(t, FakeCudaTensor) else None
        elem = _unwrap(t).detach().clone()
        return elem if device is None else FakeCudaTensor(elem, device)

    @staticmethod
    def backward(ctx, grad):
        return _move(grad, ctx.source), None


def _move(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    here = t.fake_device if isinstance(t, FakeCudaTensor) else None
    if here == device:
        return t
    return _Move.apply(t, device)


def _to_args(args, kwargs) -> tuple[torch.device | None, bool, dict]:
    """``Tensor.to``'s target: (the device, or None for one that is not asked for, whether it was asked for,
    the rest of the arguments as keywords)."""
    rest, kw = args[1:], dict(kwargs)
    copy_ = kw.pop("copy", False)
    if rest and isinstance(rest[0], torch.Tensor):
        other = rest[0]
        return other.device, True, {"dtype": other.dtype, "copy": copy_}
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **kw)
    return device, device is not None, {"dtype": dtype, "copy": copy_, "memory_format": memory_format}


def _to(self: torch.Tensor, device: torch.device | None, dtype=None, copy: bool = False, memory_format=None):
    """``self`` on ``device`` (``None``: the CPU), then in ``dtype``."""
    target = _cuda(device) if device is not None else None
    out = _move(self, target)
    if copy and out is self:
        out = out.clone()
    if dtype is not None and dtype != out.dtype:
        out = out.to(dtype)
    if memory_format is not None and memory_format != torch.preserve_format:
        out = out.contiguous(memory_format=memory_format)
    return out


def _tensor_function(func, args, kwargs) -> Any:
    """What the lane does itself at the Python level: transfers, NumPy, copies; ``NotImplemented`` for the rest."""
    if func is torch.Tensor.to:
        device, asked, rest = _to_args(args, kwargs)
        if asked:  # C++ would compare with the wrappers' own device, the CPU
            return _to(args[0], device, **rest)
        return NotImplemented
    if func is torch.Tensor.cuda:
        device = args[1] if len(args) > 1 else kwargs.get("device")
        return _to(args[0], torch.device("cuda", _active().index(device)))
    if func is torch.Tensor.cpu:
        return _to(args[0], None, memory_format=kwargs.get("memory_format"))
    self = args[0] if args else None
    if not is_fake(self):
        return NotImplemented
    if func is torch.Tensor.numpy:
        if kwargs.get("force") or (len(args) > 1 and args[1]):
            return self.elem.detach().clone().numpy()
        raise _numpy_error(self)
    if func is torch.Tensor.__array__:
        raise _numpy_error(self)
    if func is torch.Tensor.tolist:
        return self.elem.tolist()
    if func is torch.Tensor.__repr__ or func is torch.Tensor.__str__:
        return FakeCudaTensor.__repr__(self)
    if func is torch.Tensor.__format__:
        return self.elem.__format__(*args[1:]) if self.dim() == 0 else FakeCudaTensor.__repr__(self)
    if func is torch.Tensor.pin_memory:
        raise RuntimeError(f"cannot pin '{self.type()}' only dense CPU tensors can be pinned (fake CUDA)")
    if func is torch.Tensor.is_pinned:
        return False
    if func is torch.Tensor.new_tensor:
        out = torch.Tensor.new_tensor(self.elem, *args[1:], **{k: v for k, v in kwargs.items() if k != "device"})
        return FakeCudaTensor(out, _cuda(kwargs.get("device")) or self.fake_device)
    if func is torch.Tensor.__deepcopy__:
        memo = args[1]
        if id(self) in memo:
            return memo[id(self)]
        new = FakeCudaTensor(self.elem.detach().clone(), self.fake_device, requires_grad=self.requires_grad)
        memo[id(self)] = new
        for k, v in vars(self).items():
            if k not in ("elem", "fake_device", "_fc_untrack"):
                setattr(new, k, copy.deepcopy(v, memo))
        return new
    if func == torch.Tensor.data.__set__:
        value = args[1]
        if not is_fake(value) or value.fake_device != self.fake_device:
            raise RuntimeError(f"fake CUDA: .data of a {self.fake_device} tensor set to one on {value.device}")
        with torch._C.DisableTorchFunctionSubclass():
            torch._C.TensorBase.data.__set__(self, value)
        self._fc_untrack()
        self.elem = value.elem
        _track(self)
        return None
    return NotImplemented


class _Mode(TorchFunctionMode):
    """Factories on a CUDA device, transfers of CPU tensors to one, and CPU autocast kept off device tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cuda) and args and not is_fake(args[0]):
            handled = _tensor_function(func, args, kwargs)
            if handled is not NotImplemented:
                return handled
        device = kwargs.get("device")
        if device is not None and func not in (torch.Tensor.to, torch.Tensor.cuda):
            target = _cuda(device)
            if target is not None:
                return _factory(func, args, kwargs, target)
            if any(is_fake(a) for a in tree_flatten(args)[0]):  # zeros_like(x, device="cpu"): made on the CPU
                return func(*tree_map(_unwrap, args), **kwargs)
        if torch.is_autocast_enabled("cpu") and not getattr(_tls, "autocast", 0):
            if any(is_fake(a) for a in tree_flatten((args, kwargs))[0]):
                with _REAL_AUTOCAST("cpu", enabled=False):  # a CPU autocast leaves CUDA tensors alone
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


def _factory(func, args, kwargs, device: torch.device):
    """``func`` (a factory, or a ``*_like``) on the CPU, its result on the fake ``device``."""
    name = getattr(func, "__name__", "")
    kwargs = dict(kwargs)
    kwargs["device"] = "cpu"
    kwargs.pop("pin_memory", None)
    requires_grad = bool(kwargs.pop("requires_grad", False))
    if func in (torch.as_tensor, torch.asarray) and args and isinstance(args[0], torch.Tensor):
        dtype = kwargs.get("dtype")
        return _to(args[0], device, dtype=dtype)
    if name in _RANDOM_FACTORIES or "generator" in kwargs:
        kwargs["generator"] = _generator_for(kwargs.get("generator"), device)
    out = func(*tree_map(_unwrap, args), **kwargs)
    return tree_map(
        lambda t: FakeCudaTensor(t, device, requires_grad) if isinstance(t, torch.Tensor) else t, out
    )  # fmt: skip


# -- autocast ----------------------------------------------------------------------------------------------------------


class _Autocast:
    """``torch.autocast`` inside the lane: ``"cuda"`` checks bfloat16 as CUDA does, then runs the CPU's autocast."""

    def __init__(self, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:  # fmt: skip
        self.fake = device_type == "cuda"
        if self.fake:
            dtype = dtype or torch.float16
            if enabled and dtype == torch.bfloat16 and not _active().bf16():
                raise RuntimeError("Current CUDA Device does not support bfloat16. Please switch dtype to float16.")
            device_type = "cpu"
        self.inner = _REAL_AUTOCAST(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    def __enter__(self):
        if self.fake:
            _tls.autocast = getattr(_tls, "autocast", 0) + 1
        return self.inner.__enter__()

    def __exit__(self, *exc):
        try:
            return self.inner.__exit__(*exc)
        finally:
            if self.fake:
                _tls.autocast -= 1


# -- torch.cuda ------------------------------------------------------------------------------------------------------


class _DeviceContext:
    """``torch.cuda.device(d)``: the current device within."""

    def __init__(self, device: Any) -> None:
        self.index = -1 if device is None or (isinstance(device, int) and device < 0) else _active().index(device)

    def __enter__(self):
        self.before = current_device()
        if self.index >= 0:
            _tls.device = self.index

    def __exit__(self, *exc):
        _tls.device = self.before


def _set_device(device: Any) -> None:
    _tls.device = _active().index(device)


def _synchronize(device: Any = None) -> None:
    lane = _active()
    lane.syncs.append(lane.index(device))


def _properties(device: Any = None) -> SimpleNamespace:
    i = _active().index(device)
    major, minor = _active().capabilities[i]
    return SimpleNamespace(name=f"fake CUDA device {i}", total_memory=_TOTAL_MEMORY, multi_processor_count=108,
                           major=major, minor=minor)  # fmt: skip


def _memory_stats(device: Any = None) -> dict[str, int]:
    lane, i = _active(), _active().index(device)
    return {"allocated_bytes.all.current": lane.allocated[i], "allocated_bytes.all.peak": lane.peak[i],
            "reserved_bytes.all.current": lane.allocated[i]}  # fmt: skip


def _reset_peak(device: Any = None) -> None:
    lane, i = _active(), _active().index(device)
    lane.peak[i] = lane.allocated[i]


def _empty_cache() -> None:
    _active().empty_cache_calls += 1


def _manual_seed(seed: int) -> None:
    _active().generators[current_device()].manual_seed(int(seed))


def _manual_seed_all(seed: int) -> None:
    for g in _active().generators:
        g.manual_seed(int(seed))


class _Stream:
    """The default stream of a fake device: never capturing, always done."""

    def __init__(self, device: Any = None) -> None:
        self.device = torch.device("cuda", _active().index(device))

    def is_capturing(self) -> bool:
        return False

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        _synchronize(self.device)

    def wait_stream(self, stream) -> None:
        pass


def _accelerator_functions(lane: Lane) -> dict[str, Any]:
    return {
        "current_stream": _Stream,
        "current_device_index": current_device,
        "set_device_index": _set_device,
        "device_index": _DeviceContext,
        "synchronize": _synchronize,
        "device_count": lambda: lane.count,
    }


def _cuda_functions(lane: Lane) -> dict[str, Any]:
    def allocated(device=None):
        return lane.allocated[lane.index(device)]

    def peak(device=None):
        return lane.peak[lane.index(device)]

    def seed_all() -> None:
        for g in lane.generators:
            g.seed()

    def set_rng_state_all(states) -> None:
        for g, state in zip(lane.generators, states, strict=True):
            g.set_state(state)

    return {
        "is_available": lambda: True,
        "is_initialized": lambda: True,
        "init": lambda: None,
        "_lazy_init": lambda: None,
        "device_count": lambda: lane.count,
        "current_device": current_device,
        "set_device": _set_device,
        "device": _DeviceContext,
        "synchronize": _synchronize,
        "is_bf16_supported": lambda including_emulation=True: lane.bf16(None, including_emulation),
        "get_device_name": lambda device=None: _properties(device).name,
        "get_device_properties": _properties,
        "get_device_capability": lambda device=None: lane.capabilities[lane.index(device)],
        "mem_get_info": lambda device=None: (_TOTAL_MEMORY - allocated(device), _TOTAL_MEMORY),
        "memory_allocated": allocated,
        "max_memory_allocated": peak,
        "memory_reserved": allocated,
        "max_memory_reserved": peak,
        "memory_stats": _memory_stats,
        "reset_peak_memory_stats": _reset_peak,
        "empty_cache": _empty_cache,
        "manual_seed": _manual_seed,
        "manual_seed_all": _manual_seed_all,
        "seed": lambda: lane.generators[current_device()].seed(),
        "seed_all": seed_all,
        "initial_seed": lambda: lane.generators[current_device()].initial_seed(),
        "get_rng_state": lambda device="cuda": lane.generators[lane.index(device)].get_state(),
        "set_rng_state": lambda state, device="cuda": lane.generators[lane.index(device)].set_state(state),
        "get_rng_state_all": lambda: [g.get_state() for g in lane.generators],
        "set_rng_state_all": set_rng_state_all,
        "default_generators": tuple(lane.generators),
        "current_stream": _Stream,
        "default_stream": _Stream,
        "is_current_stream_capturing": lambda: False,  # optimizers ask (torch 2.11)
    }


@contextlib.contextmanager
def fake_cuda(
    count: int = 2, capability: tuple[int, int] | list[tuple[int, int]] = (9, 0), emulate_bf16: bool = True
) -> Iterator[Lane]:
    """Within: ``count`` fake CUDA devices of compute ``capability`` (one for all, or one each: ``(9, 0)`` an H100,
    ``(7, 5)`` a T4 without native bfloat16), in this thread and in the threads started here. Not reentrant.
    Yields the :class:`Lane` (memory, synchronize counts, the devices used)."""
    global _lane
    if _lane is not None:
        raise RuntimeError("fake_cuda() is already active")
    caps = [tuple(c) for c in capability] if isinstance(capability, list) else [tuple(capability)] * count
    lane = Lane(count=count, capabilities=caps, emulate_bf16=emulate_bf16, allocated=[0] * count, peak=[0] * count)
    _lane = lane
    lane.generators = [FakeGenerator(i) for i in range(count)]
    for g in lane.generators:
        g.manual_seed(_DEFAULT_SEED)
    saved: list[tuple[Any, str, Any]] = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name, None)))
        setattr(obj, name, value)

    run = threading.Thread.run

    def run_in_lane(thread):
        with _Mode():
            run(thread)

    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    device_before = getattr(_tls, "device", 0)
    try:
        for name, value in _cuda_functions(lane).items():
            patch(torch.cuda, name, value)
        for name, value in _accelerator_functions(lane).items():
            patch(torch.accelerator, name, value)
        patch(torch.cuda.graphs, "is_current_stream_capturing", lambda: False)
        patch(torch, "autocast", _Autocast)
        patch(torch.amp, "autocast", _Autocast)
        patch(torch, "Generator", _LaneGenerator)
        patch(threading.Thread, "run", run_in_lane)
        # Module.to() keeps a parameter object when the new tensor's C++ type matches (ours never does); new
        # Parameter objects either way, as modules on a real GPU may get them too
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        _tls.device = 0
        with _Mode():
            yield lane
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        _tls.device = device_before
        _lane = None
