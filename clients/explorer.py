"""An explorer in the browser: drop an image, pick a model, a mode and a layer, and see what the network sees.

  .venv/bin/python clients/explorer.py                                   # then open the address it prints
  .venv/bin/python clients/explorer.py --server http://127.0.0.1:8080 --port 8090

It serves one page (clients/explorer/: HTML, JavaScript and CSS, nothing fetched from elsewhere) on 127.0.0.1 and
forwards the page's requests to TorchServe, adding the key there, so the key never reaches the browser:

  GET  /api/models                  the served models (TorchServe's management API, with the management key)
  POST /api/predictions/MODEL       forwarded as it is to SERVER/predictions/MODEL (a request, or the poll of an
                                    optimization job: field job=ID, with cancel=true for Stop), answered with
                                    TorchServe's status and body; a refused key (TorchServe's 400
                                    InvalidKeyException, the same for every key problem) with a 401 that says
                                    which problem: none, not the key file's, or expired (and how to renew it)

The page builds its controls from the model's own mode=describe and mode=layers answers. Only the configured
server is ever called, model names are checked (letters, digits, '_', '-', '.': never a path), and a request body
over --max-body bytes is refused (413) before it is read.

The inference key comes from $VIZ_TOKEN, else key_file.json (as for viz_client.py); the management key from
$VIZ_MANAGEMENT_TOKEN, else key_file.json. The file is read at each request, so a rotated key is picked up.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from viz_keys import is_key_refusal, key_problem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATIC = Path(__file__).resolve().parent / "explorer"
#: A model name as TorchServe registers it from an archive's name: no '/', no '..', nothing to escape.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: TorchServe's max_request_size in config.properties (32 MiB): a bigger body would be refused there anyway.
MAX_BODY = 32 * 1024 * 1024
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip
#: What the page may load: itself, and the pictures and files it makes (data: and blob: URLs). No other origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip
#: Response headers of TorchServe passed on to the page (the rest, its own connection headers, are not).
PASSED_HEADERS = ("Content-Type", "Retry-After")
#: The header the page sends with every /api request. A page of another origin cannot send it without a CORS
#: preflight, which this server never grants: so other sites the browser shows cannot use the key through it.
PAGE_HEADER = "X-Explorer"


class Config:
    """Where to forward, and how to find the keys."""

    def __init__(self, server: str, management: str, key_file: Path, max_body: int = MAX_BODY,
                 models: list[str] | None = None, timeout: float = 300.0) -> None:  # fmt: skip
        self.server = server.rstrip("/")
        self.management = management.rstrip("/")
        self.key_file = key_file
        self.max_body = max_body
        self.models = models
        self.timeout = timeout

    def key(self, kind: str) -> str:
        """The ``inference`` or ``management`` key: from the environment, else the key file (read afresh)."""
        env = os.environ.get("VIZ_TOKEN" if kind == "inference" else "VIZ_MANAGEMENT_TOKEN")
        if env:
            return env
        try:
            return json.loads(self.key_file.read_text())[kind]["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return ""  # token authorization off, or no key file: TorchServe says what it thinks of that


class Refused(Exception):
    """A request the explorer answers itself, with a status and a message (never forwarded)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def model_name(name: str) -> str:
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise Refused(400, f"not a model name: {name[:80]!r} (letters, digits, '_', '-' and '.')")
    return name


def scrub(body: bytes, keys: list[str]) -> bytes:
    """The body with every key replaced, should TorchServe ever repeat one: no key reaches the browser."""
    for key in keys:
        if key:
            body = body.replace(key.encode(), b"[key]")
    return body


def list_models(config: Config) -> list[str]:
    """The served models' names, from the management API (every page of its list), or --models."""
    if config.models is not None:
        return list(config.models)
    names: list[str] = []
    token = ""
    headers = {"Authorization": f"Bearer {config.key('management')}"} if config.key("management") else {}
    for _ in range(100):  # pages of 100 models
        params = {"limit": "100", **({"next_page_token": token} if token else {})}
        r = requests.get(f"{config.management}/models", params=params, headers=headers, timeout=30)
        if is_key_refusal(r.status_code, _json(r.content)):
            raise Refused(401, key_problem(config.key("management"), config.key_file, "management", config.management))
        if r.status_code != 200:
            raise Refused(502, f"the management API answered {r.status_code}: {message_of(r.content)}")
        page = r.json()
        names += [m["modelName"] for m in page.get("models", [])]
        token = page.get("nextPageToken") or ""
        if not token:
            break
    return sorted(names)


def _json(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None


def message_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:500]
    except (ValueError, AttributeError):
        return body[:500].decode("utf-8", "replace")


class Handler(BaseHTTPRequestHandler):
    server_version = "explorer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    config: Config  # set on the class made by make_server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if os.environ.get("VIZ_EXPLORER_LOG"):
            super().log_message(format, *args)

    # -- answers ---------------------------------------------------------------------------------------------
    def answer(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, status: int, message: str) -> None:
        body = json.dumps({"code": status, "type": HTTPStatus(status).phrase.replace(" ", ""), "message": message})
        self.close_connection = True  # the request's body may be unread
        challenge = {"WWW-Authenticate": 'Bearer realm="TorchServe"'} if status == 401 else None  # RFC 6750
        self.answer(status, body.encode(), "application/json", challenge)

    # -- checks ----------------------------------------------------------------------------------------------
    def check_host(self) -> None:
        """Only a Host header naming a loopback address or localhost: a page of another site whose name was made
        to point at 127.0.0.1 (DNS rebinding) sends its own name and is refused."""
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok and host != self.server.server_address[0]:
            raise Refused(403, f"Host {host[:80]!r} is not this explorer's address")

    def check_page(self) -> None:
        """An /api request must come from the page: its header, and its origin when the browser says one."""
        if self.headers.get(PAGE_HEADER) != "1":
            raise Refused(403, f"the API answers the explorer's page only (header {PAGE_HEADER})")
        origin = self.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != self.headers.get("Host"):
            raise Refused(403, f"origin {origin[:80]!r} is not the explorer's")

    def body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise Refused(411, "send the body with a Content-Length (no chunked bodies)")
        if length is None or not length.isdigit():
            raise Refused(411, "a POST needs a Content-Length")
        if int(length) > self.config.max_body:
            raise Refused(413, f"the request is {int(length):,} bytes; the explorer forwards at most "
                               f"{self.config.max_body:,} (--max-body)")  # fmt: skip
        return self.rfile.read(int(length))

    # -- routes ----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        self.route(get=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self.route(get=True)

    def do_POST(self) -> None:  # noqa: N802
        self.route(get=False)

    def route(self, get: bool) -> None:
        path = urlsplit(self.path).path
        try:
            self.check_host()
            if get and path in ("/", "/index.html"):
                return self.static("index.html")
            if get and path.startswith("/static/"):
                return self.static(path.removeprefix("/static/"))
            if get and path == "/api/models":
                self.check_page()
                return self.models()
            if not get and path.startswith("/api/predictions/"):
                self.check_page()
                if urlsplit(self.path).query:
                    raise Refused(400, "no query string: options go in the body (TorchServe passes none to handlers)")
                return self.forward(model_name(path.removeprefix("/api/predictions/")))
            if path.startswith("/api/") or path in ("/", "/index.html") or path.startswith("/static/"):
                raise Refused(405, f"{self.command} is not answered at {path[:80]}")
            raise Refused(404, f"nothing at {path[:80]}")
        except Refused as exc:
            self.refuse(exc.status, str(exc))
        except requests.RequestException as exc:
            self.refuse(502, f"cannot reach TorchServe ({type(exc).__name__}): is it running? (./serve.sh)")

    def static(self, name: str) -> None:
        """One of the page's own files: a plain name in clients/explorer/, nothing else."""
        if not re.fullmatch(r"[a-z0-9_-]+\.[a-z]+", name) or Path(name).suffix not in STATIC_TYPES:
            raise Refused(404, f"nothing at /static/{name[:80]}")
        path = STATIC / name
        if not path.is_file():
            raise Refused(404, f"nothing at /static/{name}")
        self.answer(200, path.read_bytes(), STATIC_TYPES[path.suffix])

    def models(self) -> None:
        names = list_models(self.config)
        body = {"models": names, "server": self.config.server}
        self.answer(200, json.dumps(body).encode(), "application/json")

    def forward(self, model: str) -> None:
        body = self.body()
        key = self.config.key("inference")
        headers = {"Content-Type": self.headers.get("Content-Type") or "application/octet-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        r = requests.post(f"{self.config.server}/predictions/{model}", data=body, headers=headers,
                          timeout=self.config.timeout)  # fmt: skip
        if is_key_refusal(r.status_code, _json(r.content)):  # TorchServe's 400 for any key problem: which one, 401
            raise Refused(401, key_problem(key, self.config.key_file, "inference", self.config.management))
        passed = {k: r.headers[k] for k in PASSED_HEADERS[1:] if k in r.headers}
        content = scrub(r.content, [key, self.config.key("management")])
        self.answer(r.status_code, content, r.headers.get("Content-Type", "application/octet-stream"), passed)


def make_server(config: Config, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("ExplorerHandler", (Handler,), {"config": config})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:8080", help="TorchServe's inference address")
    p.add_argument("--management", help="TorchServe's management address (default: the server's host, port 8081)")
    p.add_argument("--host", default="127.0.0.1", help="where the page is served (default: loopback only)")
    p.add_argument("--port", type=int, default=8090, help="the page's port (0: a free one)")
    p.add_argument("--key-file", default=str(ROOT / "key_file.json"))
    p.add_argument("--models", help="comma list of models to offer, instead of asking the management API")
    p.add_argument("--max-body", type=int, default=MAX_BODY, help=f"bytes a request may have (default {MAX_BODY})")
    args = p.parse_args(argv)
    server_url = urlsplit(args.server)
    if server_url.scheme not in ("http", "https") or not server_url.hostname:
        p.error(f"--server must be an http(s) URL, got {args.server!r}")
    management = args.management or f"{server_url.scheme}://{server_url.hostname}:8081"
    models = [m for m in (args.models or "").split(",") if m] if args.models else None
    for m in models or ():
        try:
            model_name(m)
        except Refused as exc:
            p.error(str(exc))
    config = Config(args.server, management, Path(args.key_file), args.max_body, models)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"warning: serving on {args.host}: whoever reaches it can use TorchServe with your key",
              file=sys.stderr)  # fmt: skip
    server = make_server(config, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"explorer: http://{host}:{port}/  (TorchServe {config.server}; Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
