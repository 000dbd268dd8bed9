"""Errors for bad requests: what was asked, what is allowed, and the HTTP status the edge should answer with."""

from __future__ import annotations

__all__ = ["VizError", "InvalidOption", "UnknownLayer", "InvalidInput", "InputTooLarge"]


class VizError(ValueError):
    """A problem with what the caller asked for (never a bug in the server).

    ``status`` is the HTTP status an edge should answer with; ``type`` is a stable name for clients.
    """

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def message(self) -> str:
        return str(self)

    def as_dict(self) -> dict:
        return {"code": self.status, "type": self.type, "message": self.message}


class InvalidOption(VizError):
    """An option has an unknown name or a value outside what is allowed."""


class UnknownLayer(VizError):
    """A layer name that is not among the model's ``named_modules()``, or one that cannot serve the mode."""


class InvalidInput(VizError):
    """The image or array could not be read, or has a shape the model cannot take."""


class InputTooLarge(VizError):
    """The input, or the response it would produce, is over a configured cap."""

    status = 413
