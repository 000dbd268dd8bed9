"""Errors for bad requests: what was asked, what is allowed, and the HTTP status the edge should answer with."""

from __future__ import annotations

__all__ = ["VizError", "InvalidOption", "UnknownLayer", "InvalidInput", "InputTooLarge", "OverBudget", "TooManyJobs"]


class VizError(ValueError):
    """A problem with what the caller asked for (never a bug in the server).

    ``status`` is the HTTP status an edge should answer with; ``type`` is a stable name for clients.
    """

    status = 400

    def __init__(self, message: str, *, status: int | None = None, **extra) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if extra:
            self.extra = extra

    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def message(self) -> str:
        return str(self)

    #: Facts a client can act on, added to the JSON (estimates, limits, when to retry): the keyword arguments.
    extra: dict = {}

    def as_dict(self) -> dict:
        return {"code": self.status, "type": self.type, "message": self.message, **self.extra}


class InvalidOption(VizError):
    """An option has an unknown name or a value outside what is allowed."""


class UnknownLayer(VizError):
    """A layer name that is not among the model's ``named_modules()``, or one that cannot serve the mode."""


class InvalidInput(VizError):
    """The image or array could not be read, or has a shape the model cannot take."""


class InputTooLarge(VizError):
    """The input, or the response it would produce, is over a configured cap."""

    status = 413


class OverBudget(VizError):
    """An optimization whose estimated compute is far over the job budget (refused before it starts)."""

    status = 422


class TooManyJobs(VizError):
    """The worker holds its maximum of jobs; ``retry_after_s`` says when to try again."""

    status = 429
