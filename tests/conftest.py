"""Fixtures shared by every test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Intra-op threads spin against the other jobs sharing a 2-core machine: one thread runs
    these small-batch passes many times faster than two under load, and makes bit-for-bit
    comparisons independent of the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
