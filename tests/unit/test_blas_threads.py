"""The drift-monitor caps the BLAS pools (numpy/scipy OpenBLAS) process-wide."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from driftloop_drift_monitor.service import limit_blas_threads


def blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_the_cap_applies_to_every_blas_pool_and_zero_leaves_them_alone() -> None:
    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # numpy's BLAS is loaded
    before = blas_threads()
    assert before
    with threadpool_limits(limits=None):  # restores the pools afterwards
        limit_blas_threads(0)
        assert blas_threads() == before
        limit_blas_threads(1)
        assert set(blas_threads()) == {1}
