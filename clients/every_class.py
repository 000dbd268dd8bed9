"""The preferred image of every class of a model: actmax jobs in batches, resumable, with a progress bar and a gallery.

  python clients/every_class.py --model alexnet_viz --out classes/                 # all 1000 classes, 128 steps
  python clients/every_class.py --model shapes_viz --out shapes/ --batch 4 --steps 64 -o size=128 -o seed=3
  python clients/every_class.py --model alexnet_viz --out classes/ --servers http://a:8080,http://b:8080

It asks the model how many classes it has (mode=describe), submits them in batches (--batch classes a job; --jobs
jobs at a time, default one a server), polls each job and, as each batch's answer comes, writes into the folder:
  NNN_label.png   each class's preferred image
  manifest.json   the settings, and per class its label, objective at the start and the end, steps, seconds,
                  stopped_early, file and job (and the worker that ran it, host:pid, when a poll saw it running)
  index.html      the gallery of the classes done so far; a result that stopped early is marked in red
The progress (classes done, elapsed time, ETA from the times measured in this run) is shown on stderr.

Replicas (--servers URL,URL,...): servers that share one job store (VIZ_JOB_STORE=redis://... on each) take jobs
from one queue, so whichever worker of whichever replica has a free job slot runs the next batch. Submissions and
polls go to the servers in turn (any of them answers any job), and to the next one while one cannot be reached. A
server that answers 404 for a job another one knows does not share its store: the run stops and says so.

Interrupted (Ctrl-C, a restarted server, a lost job, --max-batches): run the same command again. It keeps the
classes done, follows the jobs it left running (or submits those batches again when they were lost), and goes on.
A folder made with other settings (--steps, -o options, another model or other weights) is refused: --fresh starts
it over. --redo-early computes again the classes that stopped early (their job's budget ran out).

Batches (--batch, default 16): a batch estimated over the server's job budget would stop early, so the next ones
are made smaller; after one that stopped early, the next ones are sized from the steps it managed; one refused as
over budget (422) is halved and submitted again. The size reached is kept in the manifest and used when the run goes
on, unless --batch is given. A busy server (429) is waited for as its Retry-After says (while jobs are in flight,
they are followed meanwhile).

The token comes from --token, else $VIZ_TOKEN, else key_file.json (as for viz_client.py); with --servers, one
token for all, or one a server in the same order, comma-separated.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery import cell, page, table  # noqa: E402
from viz_client import ROOT, auth, early_mark, endpoint, error_text, extra_fields, unreachable  # noqa: E402

MANIFEST = "manifest.json"
# Fields the command sets itself: the targets are the classes, the answer must be JSON, steps has its own flag.
RESERVED = ("mode", "channel", "layer", "y", "x", "t", "job", "format", "data", "steps")
BATCH = 16  # classes a job, unless --batch or the last run says otherwise
# A poll answered so is polled again (another server first): no job's answer has these statuses. TorchServe answers
# 507 "Worker died." to the request it handed to a worker as it died, 503 while a model has no worker; the server
# 503 StoreDown while its job store cannot be reached.
AGAIN = (502, 503, 504, 507)


class Mismatch(Exception):
    """The folder holds classes made with other settings than this run's."""


class Stop(Exception):
    """The run cannot go on; the message says why (and what to do)."""


class Manifest:
    """manifest.json of an output folder: the settings every image was made with, one entry per class done, the
    jobs in flight (``pending``: so that a run started again follows them), and the runs with their wall times."""

    def __init__(self, folder: Path, settings: dict, classes: dict[int, dict] | None = None,
                 pending: list[dict] | None = None, runs: list[dict] | None = None,
                 batch: int | None = None) -> None:  # fmt: skip
        self.folder, self.settings = folder, settings
        self.classes = classes or {}
        self.pending = list(pending or [])
        self.runs = runs or []
        self.batch = batch  # the last run's batch size at its end (smaller than asked when jobs stopped early)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def open(cls, folder: Path, settings: dict, fresh: bool = False) -> Manifest:
        """The folder's manifest; a new one when there is none or with ``fresh`` (the old pictures are removed).
        Raises :class:`Mismatch` when the folder's classes were made with other settings."""
        path = folder / MANIFEST
        if not path.exists():
            return cls(folder, settings)
        old = json.loads(path.read_text())
        if fresh:
            for entry in old.get("classes", []):
                (folder / entry["file"]).unlink(missing_ok=True)
            path.unlink()
            return cls(folder, settings)
        if old["settings"] != settings:
            raise Mismatch(difference(old["settings"], settings))
        classes = {int(e["class"]): e for e in old.get("classes", [])}
        pending = old.get("pending") or []
        pending = [pending] if isinstance(pending, dict) else pending  # a manifest of one job at a time
        return cls(folder, settings, classes, pending, old.get("runs"), old.get("batch"))

    def to_do(self, redo_early: bool = False) -> list[int]:
        """The classes still to compute, in order (with ``redo_early``, those that stopped early too)."""
        n = self.settings["num_classes"]
        return [c for c in range(n) if c not in self.classes or (redo_early and self.classes[c]["stopped_early"])]

    def record(self, entry: dict, job: str, batch_size: int, worker: str | None = None) -> dict:
        """Save one class's answer (its PNG) and its entry (``worker``: ``host:pid`` that ran it, when known);
        returns the entry."""
        c = int(entry["channel"])
        width = max(3, len(str(self.settings["num_classes"] - 1)))
        label = entry.get("label") or f"class {c}"
        name = f"{c:0{width}d}_{slug(label)}.png"
        (self.folder / name).write_bytes(base64.b64decode(entry["image"]))
        self.classes[c] = {
            "class": c, "label": label, "start": entry["start"], "end": entry["end"], "steps": entry["steps"],
            "seconds": entry["seconds"], "stopped_early": bool(entry["stopped_early"]), "file": name, "job": job,
            "batch_size": batch_size,
        }  # fmt: skip
        if worker:
            self.classes[c]["worker"] = worker
        return self.classes[c]

    def stopped_early(self) -> int:
        return sum(e["stopped_early"] for e in self.classes.values())

    def save(self) -> None:
        body = {
            "settings": self.settings,
            "done": len(self.classes),
            "stopped_early": self.stopped_early(),
            "batch": self.batch,
            "pending": self.pending,
            "runs": self.runs,
            "classes": [self.classes[c] for c in sorted(self.classes)],
        }
        write_atomically(self.path, json.dumps(body, indent=1) + "\n")

    def write_gallery(self) -> Path:
        """index.html with every class done so far, in class order, in rows that wrap to the window."""
        s = self.settings
        cells = [cell(e["file"], f"{c} {e['label']} ({e['end']:.3g})", early_mark(e))
                 for c, e in sorted(self.classes.items())]  # fmt: skip
        options = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("model", "arch", "weights", "num_classes"))
        early = self.stopped_early()
        about = (f"The preferred image of each class of {s['model']} ({s['arch']}, weights {s['weights']}): "
                 f"{len(self.classes)} of {s['num_classes']} classes done; actmax with {options}; the number is the "
                 f"objective at the end (the class score).")  # fmt: skip
        if early:
            about += f" {early} stopped early (their job's budget ran out): marked in red."
        heading = f"{s['model']}: every class"
        path = self.folder / "index.html"
        write_atomically(path, page(heading, about, [table(f"{s['model']}: classes", cells)]))
        return path


def difference(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=lambda k: (k not in old, k))
    changed = [f"{k} {old.get(k, '(default)')} -> {new.get(k, '(default)')}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changed)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")[:60] or "class"


def channel_list(classes: list[int]) -> str:
    """Classes as the server's channel field: runs as ranges (0-15,20,22-23)."""
    parts, start = [], None
    for i, c in enumerate(classes):
        if start is None:
            start = c
        if i + 1 == len(classes) or classes[i + 1] != c + 1:
            parts.append(str(c) if c == start else f"{start}-{c}")
            start = None
    return ",".join(parts)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@contextmanager
def locked(folder: Path):
    """Only one run writes a folder at a time."""
    try:
        import fcntl
    except ImportError:  # not on this system: no lock
        yield
        return
    with open(folder / ".every_class.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            sys.exit(f"{folder}: another every_class run is writing this folder")
        yield


class Progress:
    """The progress line on stderr: classes done of all, the batch's step, elapsed time, and an ETA from the time
    this run has taken per class so far (the current batch counted by its steps). Redrawn in place on a terminal;
    elsewhere (a log) one line per batch."""

    def __init__(self, total: int, done: int, to_do: int, stream=None, clock=time.monotonic) -> None:
        self.total, self.done, self.to_do = total, done, to_do
        self.made = 0
        self.jobs: dict = {}  # job -> (classes, step, steps) of the jobs in flight, as last polled
        self.stream = stream or sys.stderr
        self.clock, self.t0 = clock, clock()
        self.tty = self.stream.isatty()

    @property
    def partial(self) -> float:
        """Classes' worth of the steps done by the jobs in flight."""
        return sum(size * step / max(1, steps) for size, step, steps in self.jobs.values())

    @property
    def batch(self) -> str:
        if len(self.jobs) == 1:
            [(size, step, steps)] = self.jobs.values()
            return f"batch of {size}: step {step}/{steps}"
        return f"{len(self.jobs)} jobs: steps " + ", ".join(f"{st}/{n}" for _, st, n in self.jobs.values()) if (
            self.jobs) else ""  # fmt: skip

    def line(self) -> str:
        now = (self.done + self.partial) / max(1, self.total)
        bar = "#" * int(30 * now) + "." * (30 - int(30 * now))
        elapsed = self.clock() - self.t0
        made = self.made + self.partial
        eta = duration(elapsed / made * (self.to_do - made)) if made > 0 else "?"
        batch = f"  {self.batch}" if self.batch else ""
        return f"[{bar}] {self.done}/{self.total} classes{batch}  {duration(elapsed)} elapsed, ETA {eta}"

    def _write(self, text: str, end: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + end)
        self.stream.flush()

    def show(self) -> None:
        if self.tty:
            self._write(self.line(), "")

    def step(self, size: int, state: dict, job: str | None = None) -> None:
        """Job ``job``'s progress state (202) for a batch of ``size`` classes."""
        self.jobs[job] = (size, int(state.get("step") or 0), int(state.get("steps") or 1))
        self.show()

    def drop(self, job: str | None) -> None:
        """A job no longer in flight (lost: its classes are submitted again)."""
        self.jobs.pop(job, None)

    def add(self, n: int, job: str | None = None) -> None:
        """``n`` classes done (job ``job``'s answer came)."""
        self.jobs.pop(job, None)
        self.done, self.made = self.done + n, self.made + n
        self._write(self.line(), "" if self.tty else "\n")

    def note(self, text: str) -> None:
        self._write(text, "\n")
        self.show()

    def close(self) -> None:
        if self.tty:  # leave the last line drawn standing
            self.stream.write("\n")
            self.stream.flush()


class Remote:
    """The model's endpoint on each server (the tests put a fake in its place): describe, submit a batch, poll a
    job once. With several servers (``--servers``), submissions and polls go to them in turn, and to the next one
    while one cannot be reached: servers that share one job store answer any job."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.servers = list(args.servers)
        self._turn = 0
        self._submitted_to: dict[str, int] = {}  # job -> the server that took it (this run's jobs)

    def _at(self, i: int) -> argparse.Namespace:
        """The arguments as viz_client's helpers read them, for server ``i``: its URL and its token."""
        return argparse.Namespace(**{**vars(self.args), "url": self.servers[i], "token": self.args.tokens[i]})

    def describe(self) -> dict:
        """The first reachable server's description (``mode=describe``); every other one that answers must
        describe the same model (a server that cannot be reached now is left for the submissions to find)."""
        outs = {}
        for i, url in enumerate(self.servers):
            at = self._at(i)
            try:
                r = requests.post(endpoint(at), data={"mode": "describe"}, headers=auth(at), timeout=60)
            except (requests.ConnectionError, requests.Timeout):
                continue
            if r.status_code != 200:
                raise Stop(f"{url}: {error_text(r, Path(self.args.key_file))}")
            outs[url] = r.json()
        if not outs:
            sys.exit(unreachable(self.args))

        def facts(out: dict) -> str:
            return f"{out['model']} ({out['arch']}, weights {out['weights']}, {out['describe']['num_classes']} classes)"

        (first, out), *others = outs.items()
        for url, other in others:
            if facts(other) != facts(out):
                raise Stop(f"{url} serves {facts(other)}, {first} serves {facts(out)}: --servers must be replicas of "
                           "one model")  # fmt: skip
        return out

    def _post(self, fields: dict, timeout: float, server: int | None = None) -> tuple[requests.Response, int]:
        """POST ``fields`` to ``server`` (default: the next in turn), else to the others in turn while it cannot be
        reached; raises the last ConnectionError or Timeout when none can."""
        n = len(self.servers)
        if server is None:
            server, self._turn = self._turn, (self._turn + 1) % n
        failed: requests.RequestException | None = None
        for k in range(n):
            i = (server + k) % n
            at = self._at(i)
            try:
                return requests.post(endpoint(at), data=fields, headers=auth(at), timeout=timeout), i
            except (requests.ConnectionError, requests.Timeout) as exc:
                failed = exc
        raise failed

    def submit(self, fields: dict) -> requests.Response:
        r, i = self._post(fields, 300)
        if r.status_code == 202:
            self._submitted_to[r.json()["job"]] = i
        return r

    def poll(self, job: str) -> requests.Response:
        """One poll of ``job``; answered by one of :data:`AGAIN`, the other servers are asked in turn (a replica
        whose worker died, or that cannot reach the store, while another can answer). A 404 from a server other
        than the one that took the job, which knows it: the servers do not share a job store (:class:`Stop`)."""
        r, i = self._post({"job": job}, 60)
        for _ in range(1, len(self.servers) if r.status_code in AGAIN else 0):
            r, i = self._post({"job": job}, 60, server=(i + 1) % len(self.servers))
            if r.status_code not in AGAIN:
                break
        j = self._submitted_to.get(job)
        if r.status_code == 404 and j is not None and j != i:
            other, _ = self._post({"job": job}, 60, server=j)
            if other.status_code != 404:
                raise Stop(f"{self.servers[i]} does not know job {job}, which {self.servers[j]} took: the "
                           "servers of --servers must share one job store (VIZ_JOB_STORE=redis://HOST:PORT/DB on "
                           "each)")  # fmt: skip
        return r


class EveryClass:
    """One run over an output folder: the classes still to do, in batches, up to ``--jobs`` jobs in flight at once,
    each answer saved as it comes."""

    def __init__(self, args: argparse.Namespace, remote, extra: dict | None = None, stream=None, clock=time.monotonic,
                 sleep=time.sleep, pace=None) -> None:  # fmt: skip
        self.args, self.remote, self.clock, self.sleep = args, remote, clock, sleep
        # between rounds of polls of the jobs in flight
        self.pace = pace or (lambda: time.sleep(args.poll))
        self.jobs = args.jobs or len(getattr(args, "servers", None) or [None])
        self.extra = dict(sorted((extra or {}).items()))
        self.stream = stream or sys.stderr
        self.hold = float("-inf")  # no submission before this clock (a 429 while jobs are in flight)
        self.failing: dict[str, float] = {}  # job -> since when its polls are answered one of AGAIN

    def settings(self) -> dict:
        """What every image of the folder is made with: the model as the server describes it, and the options."""
        out = self.remote.describe()
        return {"model": out["model"], "arch": out["arch"], "weights": out["weights"],
                "num_classes": int(out["describe"]["num_classes"]), "steps": self.args.steps, **self.extra}  # fmt: skip

    def reach(self, what, *args):
        """``what(*args)``, tried again every 5 s while the server cannot be reached (a restart), up to --wait s."""
        deadline = self.clock() + self.args.wait
        while True:
            try:
                return what(*args)
            except (requests.ConnectionError, requests.Timeout):
                if self.clock() > deadline:
                    raise
                self.sleep(5)

    def run(self) -> int:
        folder = Path(self.args.out)
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder):
            try:
                self.manifest = Manifest.open(folder, self.settings(), self.args.fresh)
            except Mismatch as err:
                sys.exit(f"{folder} holds classes made with other settings ({err}): run with the same settings to "
                         f"go on, with --fresh to start over there, or with another --out")  # fmt: skip
            except Stop as stop:
                sys.exit(str(stop))
            return self._run()

    def _run(self) -> int:
        m = self.manifest
        todo = m.to_do(self.args.redo_early)
        if not todo:
            m.write_gallery()
            self._summary(None, todo)
            return 0
        n = m.settings["num_classes"]
        self.progress = Progress(n, n - len(todo), len(todo), self.stream, self.clock)
        self.batch = self.args.batch or m.batch or BATCH
        if not self.args.batch and m.batch and m.batch != BATCH:
            self.progress.note(f"batches of {m.batch}, as the last run reached (--batch sets another size)")
        run = {"started": now(), "seconds": 0.0, "classes": 0, "batches": 0, "ended": "running"}
        m.runs.append(run)
        self.t0 = self.clock()
        try:
            todo = self._batches(todo, run)
        except KeyboardInterrupt:
            self._save(run, "interrupted")
            jobs = [p["job"] for p in m.pending]
            held = (f"; job {jobs[0]} is left to finish and will be followed" if len(jobs) == 1 else
                    f"; jobs {', '.join(jobs)} are left to finish and will be followed" if jobs else "")  # fmt: skip
            print(f"interrupted: {len(m.classes)}/{n} classes done in {m.folder}{held}; run the same command again "
                  f"to go on")  # fmt: skip
            return 130
        except requests.RequestException:
            self._save(run, "unreachable")
            sys.exit(f"{unreachable(self.args)} (waited {self.args.wait:.0f} s); run the same command again to go on")
        except Stop as stop:
            if m.classes or m.path.exists():  # a start refused before its first job leaves no folder behind
                self._save(run, "error")
            else:
                self.progress.close()
            sys.exit(str(stop))
        self._save(run, "done" if not todo else f"stopped after {run['batches']} batches (--max-batches)")
        self._summary(run, todo)
        return 0

    def _enough(self, run: dict) -> bool:
        """--max-batches reached, counting the jobs in flight."""
        most = self.args.max_batches
        return bool(most) and run["batches"] + len(self.manifest.pending) >= most

    def _batches(self, todo: list[int], run: dict) -> list[int]:
        """Keep up to ``self.jobs`` batches in flight, polling each in turn, until none is left (or --max-batches);
        returns the classes left."""
        m = self.manifest
        m.pending = [p for p in m.pending if set(p["classes"]) <= set(todo)]
        for p in m.pending:
            self.progress.note(f"following job {p['job']} ({len(p['classes'])} classes), left by the last run")
        flying = {c for p in m.pending for c in p["classes"]}
        queue = [c for c in todo if c not in flying]  # classes not in any job yet
        losses = 0
        while True:
            while queue and len(m.pending) < self.jobs and not self._enough(run) and self.clock() >= self.hold:
                batch = queue[: self.batch]
                if self._submit(batch):
                    queue = queue[len(batch) :]
            if not m.pending:
                if not queue or self._enough(run):
                    return queue
                if self.clock() < self.hold:  # a 429 came while jobs were in flight; none is now: wait it out
                    self.sleep(self.hold - self.clock())
                    self.hold = float("-inf")
                continue  # refused: submit again (a smaller batch, or after the wait the server asked for)
            self.pace()
            for p in list(m.pending):
                job, size = p["job"], len(p["classes"])
                r = self.reach(self.remote.poll, job)
                if r.status_code in AGAIN:  # polled again next round, for --wait seconds at most
                    since = self.failing.setdefault(job, self.clock())
                    if self.clock() - since > self.args.wait:
                        raise Stop(f"job {job}: {error_text(r, Path(self.args.key_file))} for {self.args.wait:.0f} "
                                   "s; run the same command again to go on")  # fmt: skip
                    continue
                self.failing.pop(job, None)
                if r.status_code == 202:
                    state = r.json()
                    if state.get("state") == "running" and state.get("pid"):
                        p["worker"] = f"{state.get('host', '?')}:{state['pid']}"  # the worker that runs it now
                    self.progress.step(size, state, job)
                    continue
                if r.status_code in (404, 410):
                    losses += 1
                    if losses > 3:
                        why = error_text(r, Path(self.args.key_file))
                        raise Stop(f"job {job} lost again ({why}): giving up; run the same command later")
                    self.progress.drop(job)
                    self.progress.note(f"job {job} was lost ({_type(r)}): submitting its {size} classes again")
                    m.pending.remove(p)
                    queue = sorted(set(queue) | set(p["classes"]))
                    continue
                if r.status_code != 200:
                    if "Token" not in r.text:  # the job itself failed: submitted anew when run again
                        m.pending.remove(p)
                    raise Stop(f"{error_text(r, Path(self.args.key_file))}; run the same command again to go on")
                losses = 0
                self._keep(p, r.json().get("actmax", []), run)

    def _submit(self, classes: list[int]) -> bool:
        """Submit a batch; True when it became a job (in the manifest's pending ones), False when it was refused
        for now (its size or the server's load: try again; a 429 while jobs are in flight holds submissions for
        its Retry-After while those are followed)."""
        fields = {"mode": "actmax", "steps": str(self.args.steps), **self.extra, "channel": channel_list(classes)}
        r = self.reach(self.remote.submit, fields)
        if r.status_code == 422 and _type(r) == "OverBudget":
            if len(classes) == 1:
                raise Stop(f"not even one class fits the server's job budget at --steps {self.args.steps} "
                           f"({r.json()['message']}); use fewer --steps or a smaller size, with --fresh or another "
                           f"--out")  # fmt: skip
            self._resize(max(1, len(classes) // 2), f"a batch of {len(classes)} classes is over the server's job "
                         f"budget (422)")  # fmt: skip
            return False
        if r.status_code in (429, 503):  # busy, or its job store cannot be reached now: after its Retry-After
            wait = retry_after(r)
            if self.manifest.pending:
                self.hold = self.clock() + wait
                return False
            why = "holds its most jobs" if r.status_code == 429 else "cannot take jobs now"
            self.progress.note(f"the server {why} ({r.status_code}): waiting {wait:.0f} s as it asks")
            self.sleep(wait)
            return False
        if r.status_code != 202:
            raise Stop(error_text(r, Path(self.args.key_file)))
        state = r.json()
        self.manifest.pending.append({"job": state["job"], "classes": classes, "submitted": now()})
        self.manifest.save()
        self._fit(len(classes), state)
        return True

    def _fit(self, size: int, state: dict) -> None:
        """Smaller batches from now on when this one is estimated over the server's budget (it would stop early)."""
        estimate, budget = state.get("estimate_s"), state.get("budget", {}).get("compute_s")
        if not estimate or not budget or estimate <= budget:
            return
        fit = max(1, int(size * budget / estimate))
        if fit < self.batch:
            self._resize(fit, f"a batch of {size} classes is estimated at {estimate:.0f} s of compute, over the job "
                              f"budget of {budget:.0f} s, so it may stop early (marked)")  # fmt: skip

    def _keep(self, pending: dict, entries: list[dict], run: dict) -> None:
        """Save a job's answer: its pictures, their entries, the gallery."""
        m = self.manifest
        job, classes = pending["job"], pending["classes"]
        got = sorted(int(e["channel"]) for e in entries)
        if got != sorted(classes):
            raise Stop(f"job {job} answered classes {channel_list(got)} for {channel_list(sorted(classes))}")
        for entry in entries:
            m.record(entry, job, len(classes), pending.get("worker"))
        m.pending.remove(pending)
        run.update(classes=run["classes"] + len(classes), batches=run["batches"] + 1)
        self._save(run)
        self.progress.add(len(classes), job)
        early = [e for e in entries if e["stopped_early"]]
        if early:
            # the steps it managed in its budget tell how many classes would have fitted (less a margin: a smaller
            # batch costs more per class), and fewer than it had
            least = min(e["steps"] for e in early)
            fit = max(1, min(len(classes) - 1, int(len(classes) * least / max(1, self.args.steps) * 0.9)))
            if fit < self.batch:
                self._resize(fit, f"{len(early)} of {len(classes)} classes stopped early after {least} of "
                                  f"{self.args.steps} steps (their job's budget ran out; marked)")  # fmt: skip

    def _resize(self, batch: int, why: str) -> None:
        """Batches of ``batch`` from now on, and why."""
        self.batch = batch
        self.progress.note(f"{why}: batches of {batch} from now on")

    def _save(self, run: dict, ended: str = "running") -> None:
        if ended != "running":
            self.progress.close()
        run.update(seconds=round(self.clock() - self.t0, 1), ended=ended)
        self.manifest.batch = self.batch  # where a run that goes on starts
        self.manifest.save()
        self.manifest.write_gallery()

    def _summary(self, run: dict | None, todo: list[int]) -> None:
        m = self.manifest
        s = m.settings
        total = sum(r["seconds"] for r in m.runs)
        this = (f"this run: {run['classes']} classes in {run['batches']} batch{'es' * (run['batches'] != 1)}, "
                f"{duration(run['seconds'])}" if run else "nothing left to do")  # fmt: skip
        print(f"{len(m.classes)}/{s['num_classes']} classes of {s['model']} in {m.folder} (index.html, "
              f"{MANIFEST}); {this}; all runs: {duration(total)}")  # fmt: skip
        early = m.stopped_early()
        if early:
            print(f"{early} classes stopped early (their job's budget ran out; marked in the gallery and the "
                  f"manifest): --redo-early computes them again (with a smaller --batch)")  # fmt: skip
        if todo:
            print(f"{len(todo)} classes to go: run the same command again")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _type(r: requests.Response) -> str:
    try:
        return r.json().get("type", "")
    except ValueError:
        return ""


def retry_after(r: requests.Response) -> float:
    """Seconds a 429 or 503 asks to wait (its Retry-After header, else its retry_after_s), between 1 and 300."""
    try:
        wait = float(r.headers.get("Retry-After") or r.json().get("retry_after_s", 5))
    except ValueError:
        wait = 5.0
    return min(300.0, max(1.0, wait))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alexnet_viz")
    p.add_argument("--url", help="the server (default http://127.0.0.1:8080)")
    p.add_argument(
        "--servers", metavar="URL,URL",
        help="replicas that share one job store (VIZ_JOB_STORE), instead of --url: jobs go to whichever worker of "
        "whichever replica has a free job slot; submissions and polls go to them in turn",
    )  # fmt: skip
    p.add_argument("--jobs", type=int, help="jobs in flight at once (default: one a server)")
    p.add_argument("--out", required=True, help="the folder for the pictures, manifest.json and index.html")
    p.add_argument("--batch", type=int, help="classes a job, at most 64 (default 16, or the size the last run reached)")
    p.add_argument("--steps", type=int, default=128, help="optimization steps (default 128, the server's)")
    p.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE",
        help="any other actmax option, e.g. -o size=128 -o class_score=logit -o seed=3",
    )  # fmt: skip
    p.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (run again to go on)")
    p.add_argument("--fresh", action="store_true", help="start the folder over, removing its pictures")
    p.add_argument("--redo-early", action="store_true", help="compute again the classes that stopped early")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls of a job")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to keep trying an unreachable server")
    p.add_argument("--token", help="the inference key; with --servers, one for all or one a server, comma-separated")
    p.add_argument("--key-file", default=str(ROOT / "key_file.json"))
    return p


def servers(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.servers`` (the URLs, --url's alone without --servers) and ``args.tokens`` (one a server; ``None``:
    key_file.json, read afresh at each request)."""
    if args.servers and args.url:
        p.error("--url or --servers, not both")
    urls = [u.strip().rstrip("/") for u in (args.servers or args.url or "http://127.0.0.1:8080").split(",")]
    if not all(u.startswith(("http://", "https://")) for u in urls) or len(set(urls)) != len(urls):
        p.error(f"--servers takes distinct http(s) URLs, comma-separated; got {args.servers!r}")
    args.servers, args.url = urls, ", ".join(urls)  # --url: what the messages name (unreachable: any of them)
    raw = args.token or os.environ.get("VIZ_TOKEN") or ""
    tokens = [t.strip() for t in raw.split(",")] if raw else [None]
    if len(tokens) == 1:
        tokens *= len(urls)
    if len(tokens) != len(urls):
        p.error(f"{len(tokens)} tokens for {len(urls)} servers: give one token for all, or one a server in order")
    args.tokens = tokens


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.batch is not None and not 1 <= args.batch <= 64:
        p.error("--batch takes 1 to 64 classes (the server's most targets a request)")
    if args.jobs is not None and not 1 <= args.jobs <= 64:
        p.error("--jobs takes 1 to 64 jobs in flight")
    servers(p, args)
    extra = extra_fields(p, args.option)
    taken = sorted(set(extra) & set(RESERVED))
    if taken:
        p.error(f"-o {', '.join(taken)}: set by this command (--steps for steps; the targets are the classes)")
    return EveryClass(args, Remote(args), extra).run()


if __name__ == "__main__":
    sys.exit(main())
