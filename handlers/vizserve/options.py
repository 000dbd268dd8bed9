"""Options a request may carry: each declared once, with its type, default, allowed range and one line of help.

Modes list the options they read (:mod:`vizserve.modes`); the request parser (:mod:`vizserve.request`) is generic
over these declarations, docs/usage.md's options table is generated from them (``scripts/options_table.py``), and
``mode=describe`` reports them. An option name means one thing in every mode that reads it; a mode may only change
its default (``Option.but``).

Values arrive as text (multipart and url-encoded fields, as ``bytes``) or as JSON values; both are read the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cnnviz import InvalidOption, clip_text

__all__ = ["Option", "as_bool", "as_choice", "as_float", "as_int", "as_names", "as_text"]

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


def as_text(name: str, value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InvalidOption(f"option {name!r} is not UTF-8 text") from exc
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    raise InvalidOption(f"option {name!r} must be text or a number, got {type(value).__name__}")


def as_names(name: str, value: Any) -> list[str]:
    """A comma list (or a JSON list) of names, blanks dropped."""
    items = value if isinstance(value, list) else as_text(name, value).split(",")
    return [t for t in (as_text(name, v) for v in items) if t]


def as_int(name: str, value: Any, lo: int, hi: int, alternative: str = "") -> int:
    text = as_text(name, value)
    if not re.fullmatch(r"[+]?\d{1,9}", text) or not lo <= int(text) <= hi:
        raise InvalidOption(
            f"option {name!r} must be a whole number in {lo}..{hi}{alternative}, got {clip_text(text, 40)!r}"
        )
    return int(text)


def as_float(name: str, value: Any, lo: float, hi: float) -> float:
    text = as_text(name, value)
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and lo <= x <= hi):
        raise InvalidOption(f"option {name!r} must be a number in {lo}..{hi}, got {clip_text(text, 40)!r}")
    return x


def as_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    text = as_text(name, value).lower()
    if text not in allowed:
        raise InvalidOption(f"option {name!r} must be one of {', '.join(allowed)}; got {clip_text(text, 40)!r}")
    return text


def as_bool(name: str, value: Any) -> bool:
    text = as_text(name, value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidOption(f"option {name!r} must be true or false, got {clip_text(text, 40)!r}")


@dataclass(frozen=True)
class Option:
    """One request option.

    Attributes:
        name: the field name.
        kind: ``int``, ``float``, ``bool``, ``choice``, ``names`` (a comma list), ``count`` (a whole number or
            ``all``), or ``text`` (read by its mode: layers, classes, channel lists).
        default: the value when the field is absent; a callable of the served model for defaults that depend on it
            (the model's input size); ``None``: absent (the mode decides, as ``default_text`` says).
        help: one line.
        lo, hi: the allowed range of ``int``, ``float`` and ``count``.
        choices: the allowed values of ``choice``.
        default_text: how the default reads in the docs and ``describe`` when it depends on the model.
        above: ``float`` values must be strictly above ``lo`` (a learning rate).
        allowed_text: the allowed values in words, for kinds the mode reads itself (``text``, ``names``).
        modality: ``video``: only video models take it (``mode=describe`` of an image model leaves it out, and the
            mode refuses it there); ``None``: every model.
    """

    name: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    default_text: str | None = None
    above: bool = False
    allowed_text: str = ""
    modality: str | None = None

    def taken_by(self, served: Any) -> bool:
        """Whether the served model takes this option (its modality)."""
        return self.modality is None or self.modality == served.spec.modality

    def but(self, default: Any, default_text: str | None = None) -> Option:
        """The same option with another default (for one mode)."""
        return replace(self, default=default, default_text=default_text)

    def parse(self, value: Any) -> Any:
        """The field's value, checked against the declared type and range."""
        if self.kind == "int":
            return as_int(self.name, value, int(self.lo), int(self.hi))
        if self.kind == "count":
            text = as_text(self.name, value).lower()
            return None if text == "all" else as_int(self.name, text, int(self.lo), int(self.hi), " or 'all'")
        if self.kind == "float":
            x = as_float(self.name, value, self.lo, self.hi)
            if self.above and x <= self.lo:
                raise InvalidOption(f"option {self.name!r} must be above {self.lo:g}")
            return x
        if self.kind == "bool":
            return as_bool(self.name, value)
        if self.kind == "choice":
            return as_choice(self.name, value, self.choices)
        if self.kind == "names":
            return as_names(self.name, value)
        return as_text(self.name, value)

    def default_for(self, served: Any) -> Any:
        return self.default(served) if callable(self.default) else self.default

    def allowed(self) -> str:
        """The allowed values, in words."""
        if self.kind == "int":
            return f"{int(self.lo)} .. {int(self.hi)}"
        if self.kind == "float":
            lo = f"above {self.lo:g}" if self.above else f"{self.lo:g}"
            return f"{lo} .. {self.hi:g}"
        if self.kind == "count":
            return f"{int(self.lo)} .. {int(self.hi)}, or all"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return ", ".join(self.choices)
        return self.allowed_text

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return "" if self.default is None else f"{self.default}"

    def describe(self, served: Any) -> dict[str, Any]:
        """The declaration for ``mode=describe``, its default resolved for ``served``."""
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "default": self.default_for(served),
            "help": self.help,
        }
        if self.lo is not None:
            d["min"], d["max"] = self.lo, self.hi
        if self.choices:
            d["choices"] = list(self.choices)
        if self.default_text is not None:
            d["default_text"] = self.default_text
        return d


Resolver = Callable[[Any], Any]
