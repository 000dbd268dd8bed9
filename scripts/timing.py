"""Interleaved timing for the benchmarks: every variant once (or a block of calls) per round, in a shuffled order, so
that drift of the machine (frequency, other load) falls on all of them alike."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any


def interleaved(
    variants: dict[str, Callable[[], Any]],
    rounds: int,
    *,
    warmup: int = 0,
    check: Callable[[str, Any], None] | None = None,
    seed: int = 0,
    block: int = 1,
    settle: int = 0,
) -> dict[str, list[float]]:
    """Milliseconds per call of each variant over ``rounds`` rounds, after ``warmup`` untimed rounds.
    ``check(name, result)`` sees every result (and may raise). Each round calls a variant ``settle`` times untimed,
    then ``block`` times timed, before the next one: blocks for servers whose workers keep a core busy a while after
    a request (OpenMP threads spinning), which would otherwise slow whichever variant comes next."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(seed)
    for i in range(warmup + rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            for k in range(settle + block):
                t0 = time.perf_counter()
                result = variants[name]()
                ms = (time.perf_counter() - t0) * 1000
                if check is not None:
                    check(name, result)
                if i >= warmup and k >= settle:
                    times[name].append(ms)
    return times


def ok_200(name: str, response) -> None:
    if response.status_code != 200:
        raise SystemExit(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
