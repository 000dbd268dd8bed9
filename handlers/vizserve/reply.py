"""One answer of the service, with its payload kept as data until an edge encodes it, once.

A JSON answer's payload is a dict whose pictures and arrays are still ``bytes``; the TorchServe edge sends
:attr:`Reply.body` (the JSON text, pictures as base64), the KServe edge :meth:`Reply.jsonable` (the same values as
JSON objects, for its envelope to encode). A picture or animation answer (``format=png``, ``webp``...) and an
answer read back from the job store are ``bytes`` already: their body is the payload itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from cnnviz import VizError

from .render import b64

__all__ = ["Reply", "json_size"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return b64(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def json_size(value: Any) -> int:
    """The length of ``value``'s JSON text as :attr:`Reply.body` writes it, without encoding its bytes: each
    ``bytes`` counts as its base64 text and two quotes."""
    if isinstance(value, (bytes, bytearray)):
        return 4 * ((len(value) + 2) // 3) + 2
    if isinstance(value, Mapping):
        inner = sum(len(json.dumps(str(k))) + 2 + json_size(v) for k, v in value.items())  # "key": value
        return 2 + inner + 2 * max(0, len(value) - 1)  # braces, ", " between items
    if isinstance(value, (list, tuple)):
        return 2 + sum(json_size(v) for v in value) + 2 * max(0, len(value) - 1)
    return len(json.dumps(value))


@dataclass(frozen=True)
class Reply:
    """``status`` and ``payload`` (a dict for JSON, else ``bytes`` of ``content_type``); ``modes``: what the
    request asked for (empty when it could not be read, ``("job",)`` for a poll), for metrics; ``headers``: extra
    response headers (``Retry-After``)."""

    status: int
    payload: Any
    content_type: str = "application/json"
    modes: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase

    @functools.cached_property
    def body(self) -> bytes:
        """The bytes an HTTP edge sends, encoded once (cached)."""
        if isinstance(self.payload, (bytes, bytearray)):
            return bytes(self.payload)
        return json.dumps(self.payload, default=b64).encode()

    @property
    def size(self) -> int:
        """The length of :attr:`body`, without encoding it when it is not encoded yet."""
        if "body" in self.__dict__ or isinstance(self.payload, (bytes, bytearray)):
            return len(self.body)
        return json_size(self.payload)

    def jsonable(self) -> Any:
        """A JSON answer as JSON values (pictures as base64 text), for an edge whose envelope encodes it."""
        if isinstance(self.payload, (bytes, bytearray)):
            return json.loads(self.payload)
        return _jsonable(self.payload)

    @classmethod
    def error(cls, err: VizError) -> Reply:
        headers = (("Retry-After", str(round(err.extra["retry_after_s"]))),) if "retry_after_s" in err.extra else ()
        return cls(err.status, err.as_dict(), headers=headers)

    @classmethod
    def internal_error(cls) -> Reply:
        message = "the server failed on this request; see its log"
        return cls(500, {"code": 500, "type": "InternalError", "message": message})
