"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw from a fixed seed by default, so a run of the suite is reproducible and CI
# answers the same on the same commit. LRDOCTOR_HYPOTHESIS=explore draws fresh examples on every
# run (what to do, many times over, after touching a detector or a reader: see README).
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("LRDOCTOR_HYPOTHESIS", "fixed"))


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models on a shared 2-core box: one thread is ~20x faster than torch's default pool."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
