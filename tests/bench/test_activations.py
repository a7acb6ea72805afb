"""bench.activations: exact counts of the bytes autograd saves for backward, and a step report whose
CUDA fields are None with a reason on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.activations import count_saved_bytes, measure_step, peak_rss_bytes


def test_a_product_saves_its_other_factor():
    x = torch.randn(1000)  # 4,000 bytes of float32
    w = nn.Parameter(torch.randn(1000))
    # d/dw sum(x * w) = x: autograd keeps x, and w is not needed since x needs no gradient.
    nbytes, n, y = count_saved_bytes(lambda: (x * w).sum(), exclude=[w])
    assert (nbytes, n) == (4000, 1)
    assert torch.equal(y, (x * w).sum())


def test_parameters_are_excluded():
    x = torch.randn(250, dtype=torch.float64, requires_grad=True)  # 2,000 bytes
    w = nn.Parameter(torch.randn(250, dtype=torch.float64))
    # Both factors need gradients, so both are saved; only x is an activation.
    assert count_saved_bytes(lambda: (x * w).sum())[:2] == (4000, 2)
    assert count_saved_bytes(lambda: (x * w).sum(), exclude=[w])[:2] == (2000, 1)


def test_a_tensor_saved_twice_counts_once():
    x = torch.randn(1000)
    w1, w2 = nn.Parameter(torch.randn(1000)), nn.Parameter(torch.randn(1000))
    nbytes, n, _ = count_saved_bytes(lambda: (x * w1).sum() + (x * w2).sum(), exclude=[w1, w2])
    assert (nbytes, n) == (4000, 1)


def test_views_of_one_storage_count_it_once():
    base = torch.randn(2, 500)
    w = nn.Parameter(torch.randn(500))
    # Two views of one 4,000-byte storage are saved; the storage is what memory holds.
    fn = lambda: (base[0] * w).sum() + (base[1] * w).sum()  # noqa: E731
    assert count_saved_bytes(fn, exclude=[w])[:2] == (4000, 1)


def test_nothing_is_saved_without_grad():
    w = nn.Parameter(torch.randn(100))
    with torch.no_grad():
        assert count_saved_bytes(lambda: (torch.randn(100) * w).sum(), exclude=[w])[:2] == (0, 0)


def test_a_linear_layer_saves_its_input():
    layer = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    nbytes, n, _ = count_saved_bytes(lambda: layer(x).sum(), exclude=layer.parameters())
    assert (nbytes, n) == (8 * 64 * 4, 1)


def test_measure_step_on_the_cpu():
    layer = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    report = measure_step(lambda: layer(x).square().sum(), layer.parameters(), torch.device("cpu"))
    assert set(report) == {
        "saved_bytes",
        "saved_tensors",
        "rss_before_bytes",
        "rss_forward_delta_bytes",
        "rss_peak_bytes",
        "rss_step_peak_bytes",
        "cuda_peak_bytes",
        "nvml_process_bytes",
        "notes",
    }
    # Saved: x (2,048 bytes) for the weight gradient, layer(x) (1,024 bytes) for square.
    assert (report["saved_bytes"], report["saved_tensors"]) == (8 * 64 * 4 + 8 * 32 * 4, 2)
    assert report["rss_peak_bytes"] >= report["rss_before_bytes"] > 0
    assert report["rss_step_peak_bytes"] is not None and report["rss_step_peak_bytes"] >= 0
    assert report["cuda_peak_bytes"] is None and report["nvml_process_bytes"] is None
    assert report["notes"]["cuda_peak_bytes"] and report["notes"]["nvml_process_bytes"]
    assert all(p.grad is None for p in layer.parameters())  # the step leaves no gradients behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measure_step_on_a_gpu():
    device = torch.device("cuda")
    layer = nn.Linear(64, 32).to(device)
    x = torch.randn(8, 64, device=device)
    report = measure_step(lambda: layer(x).square().sum(), layer.parameters(), device)
    assert report["saved_bytes"] == 8 * 64 * 4 + 8 * 32 * 4  # the same count as on the CPU
    assert report["cuda_peak_bytes"] >= report["saved_bytes"]
    assert report["nvml_process_bytes"] is not None or report["notes"]["nvml_process_bytes"]


def test_peak_rss_belongs_to_the_process_not_its_parent():
    """A probe process must not report its (large) parent's peak: ru_maxrss would."""
    import subprocess
    import sys

    ballast = torch.ones(200 * 2**20, dtype=torch.uint8)  # 200 MiB resident in this process
    ballast += 1
    code = "from bench.activations import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert child < peak_rss_bytes() - 150 * 2**20
    del ballast
