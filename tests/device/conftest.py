"""The device lanes' fixtures: the fake CUDA lane (one lane for a whole module: its services are built once).

``VIZ_FAKE_CUDA=1 pytest tests/device/test_cuda_lane.py`` runs the real CUDA lane on the fake device instead: a
dry run of its code (not of a GPU) on a machine without one, slow since the fake computes on the CPU.
"""

from __future__ import annotations

import os

import pytest

from tests.fakecuda import fake_cuda

_DRY_RUN = fake_cuda(count=2) if os.environ.get("VIZ_FAKE_CUDA") == "1" else None
_DRY_LANE = _DRY_RUN.__enter__() if _DRY_RUN is not None else None  # before test_cuda_lane's skipif is read


@pytest.fixture(scope="module")
def lane():
    """Two fake CUDA devices with native bfloat16 (compute capability 9.0), for the whole module."""
    if _DRY_LANE is not None:
        yield _DRY_LANE
        return
    with fake_cuda(count=2, capability=(9, 0)) as lane:
        yield lane
