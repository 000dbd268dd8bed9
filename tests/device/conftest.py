"""The fake CUDA lane's fixture: one lane for a whole module (its services are built once)."""

from __future__ import annotations

import pytest

from tests.fakecuda import fake_cuda


@pytest.fixture(scope="module")
def lane():
    """Two fake CUDA devices with native bfloat16 (compute capability 9.0), for the whole module."""
    with fake_cuda(count=2, capability=(9, 0)) as lane:
        yield lane
