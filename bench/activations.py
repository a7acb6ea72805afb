"""Memory measurements for one training step.

Three views, because each answers a different question:
- `saved_bytes`: the bytes autograd keeps for backward (the activation memory the RevNet paper is
  about). Counted exactly with `saved_tensors_hooks`, each storage once, parameters excluded. It is
  the same on every device, so CPU runs can check the paper's memory claims.
- CUDA: the allocator's peak (`max_memory_allocated`) and what NVML says the process holds.
- CPU: the process's resident set: before the step, and the peak the step adds above it.
A measurement that cannot be taken here is `None` with the reason in `notes`, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return (str(t.device), storage.data_ptr())


def count_saved_bytes(
    fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()
) -> tuple[int, int, object]:
    """Run `fn` and return (bytes, tensors, fn's result) of what autograd saved for backward.

    Each storage counts once however many views of it are saved; tensors in `exclude`
    (the parameters) are not activations and are left out.
    """
    skip = {k for k in (_storage_key(p) for p in exclude) if k is not None}
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key not in skip and key not in seen:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return sum(seen.values()), len(seen), result


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that across fork and exec, so a probe process
    started by a large parent would report the parent's peak as its own.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so a peak belongs to what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def nvml_process_bytes(device: torch.device) -> tuple[int | None, str | None]:
    """Device memory NVML attributes to this process, or (None, why not)."""
    if device.type != "cuda":
        return None, "not a CUDA device"
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory), None
            return None, "NVML lists no memory for this process (containerised PID namespace?)"
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        return None, f"NVML: {e}"


def measure_step(
    step: Callable[[], torch.Tensor], params: Iterable[torch.Tensor], device: torch.device
) -> dict:
    """Measure one training step: `step()` runs the forward pass and returns the loss.

    The backward pass is run here so that CUDA peaks include gradients, as in training.
    """
    params = list(params)
    notes: dict[str, str] = {}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_bytes()
    reset = reset_peak_rss()
    saved, n_saved, loss = count_saved_bytes(step, exclude=params)
    rss_forward = rss_bytes() - rss_before
    loss.backward()
    peak = peak_rss_bytes()
    report = {
        "saved_bytes": saved,
        "saved_tensors": n_saved,
        "rss_before_bytes": rss_before,
        "rss_forward_delta_bytes": rss_forward,
        "rss_peak_bytes": peak,
        # What one step adds to the resident set at its peak: activations, gradients, workspace.
        "rss_step_peak_bytes": peak - rss_before if reset else None,
        "cuda_peak_bytes": None,
        "nvml_process_bytes": None,
    }
    if not reset:
        notes["rss_step_peak_bytes"] = "cannot reset the peak RSS here (/proc/self/clear_refs)"
    if cuda:
        torch.cuda.synchronize(device)
        report["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        report["nvml_process_bytes"], why = nvml_process_bytes(device)
        if why:
            notes["nvml_process_bytes"] = why
    else:
        notes["cuda_peak_bytes"] = notes["nvml_process_bytes"] = "no CUDA device in this run"
    for p in params:
        p.grad = None
    report["notes"] = notes
    return report
