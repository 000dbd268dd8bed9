"""TorchServe's refusal of a key, said plainly: which key, where key_file.json is, and how to get a fresh one.

TorchServe's front end checks the key before any handler sees the request and answers every key problem (none sent,
a wrong one, an expired one) alike: ``400 {"type": "InvalidKeyException", "message": "Token Authorization failed.
Token either incorrect, expired, or not provided correctly"}``. No setting or plugin of TorchServe 0.12 changes that
answer (its plugins are called after the check), so the clients tell the cases apart themselves, from the key they
sent and the key file: viz_client.py and the tools built on it print :func:`key_problem`, the explorer answers it as
a 401.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["KEY_REFUSED", "is_key_refusal", "key_problem"]

#: The ``type`` of TorchServe's answer to a missing, wrong or expired key.
KEY_REFUSED = "InvalidKeyException"


def is_key_refusal(status: int, body: Any) -> bool:
    """Whether a response (its status and parsed JSON body) is TorchServe refusing the key."""
    return status == 400 and isinstance(body, dict) and body.get("type") == KEY_REFUSED


def _read(key_file: Path) -> tuple[dict | None, str]:
    try:
        keys = json.loads(key_file.read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    return (keys, "") if isinstance(keys, dict) else (None, "not a key file")


def key_problem(
    sent: str, key_file: Path, kind: str = "inference", management: str = "http://127.0.0.1:8081",
    now: datetime | None = None,
) -> str:  # fmt: skip
    """Why TorchServe refused the ``kind`` key (``inference`` or ``management``) ``sent`` (``""``: none), as one
    message for the user: no key, not the key of ``key_file``, expired (when, and the two ways to a new one), or
    the file's own key, unexpired (then another server wrote the file)."""
    keys, why = _read(key_file)
    where = (
        f"{key_file} (TorchServe writes key_file.json in the folder it was started from; ./serve.sh: the repository)"
    )
    renew = (
        f"A new one: curl -H \"Authorization: Bearer $api\" '{management}/token?type={kind}' with $api the "
        f'file\'s "API" key (TorchServe rewrites the file), or restart TorchServe (./serve.sh stop; ./serve.sh)'
    )
    lead = f"TorchServe refused the {kind} key (its 400 InvalidKeyException, answered before the model sees a request)"
    if keys is None:  # nothing to compare with: say every reason a key is refused
        stale = "" if not sent else " (keys expire after token_expiration_min minutes, 60 in config.properties: a " \
                                    "key kept from before may be stale, or be another server's)"  # fmt: skip
        return (f"{lead}{stale}: {'no key was sent, and ' if not sent else ''}the key file {where} is {why}; "
                f"{_sources(kind)}")  # fmt: skip
    entry = keys.get(kind) if isinstance(keys.get(kind), dict) else {}
    if not sent:
        return f"{lead}: no key was sent; the {kind} key is in {where}; {_sources(kind)}"
    if sent != entry.get("key"):
        return (f"{lead}: the key sent is not the {kind} key of {where}: a key of an earlier start (TorchServe makes "
                f"new ones each time it starts) or of another server; {_sources(kind)}")  # fmt: skip
    expires = _when(entry.get("expiration time"))
    now = now or datetime.now(timezone.utc)
    if expires is not None and expires <= now:
        seconds = (now - expires).total_seconds()
        ago = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
        return (f"{lead}: the {kind} key of {key_file} expired at {expires:%Y-%m-%d %H:%M:%S} UTC ({ago} ago; "
                f"keys last token_expiration_min minutes, 60 in config.properties). {renew}")  # fmt: skip
    return (f"{lead}: the key sent is the {kind} key of {key_file}, not expired by the file: the server called is "
            f"probably another TorchServe than the one that wrote that file")  # fmt: skip


def _sources(kind: str) -> str:
    env = "VIZ_TOKEN" if kind == "inference" else "VIZ_MANAGEMENT_TOKEN"
    return f"the clients take ${env} (viz_client.py: --token), else --key-file (default: the repository's one)"


def _when(text: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
