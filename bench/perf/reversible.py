"""Reversible backward: a stack of coupling blocks against MemCNN 1.5.2, revlib 1.7.2 and plain
autograd, and a RevNet against the ResNet of the same depth and against its algorithmic bound.

All the stacks hold copies of the same F and G (pre-activation basic residuals with BatchNorm),
so they differ only in how backward gets the activations: ours rebuilds them block by block
(`models.revnet._ReversibleFunction`), MemCNN's InvertibleModuleWrapper inverts and re-runs each
block on its own, revlib's ReversibleSequential (its default autograd-function mode) inverts and
re-runs each half-residual F or G on its own, plain autograd stores them all. Before any timing,
each peer's output and gradients are checked against ours in float64 on the same input
(`agreement`): a peer that computes something else gets a row saying so, not a ratio. Memory
comes from a fresh process per contender (`bench.activations.measure_step`); BatchNorm
updates are the number of times one step moved a BatchNorm's running statistics (1 is right:
the forward pass).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import torch
from torch import nn

from models.resnet import BasicResidual, resnet_cifar
from models.revnet import ReversibleBlock, ReversibleSequence, revnet_cifar

from .timing import (
    PeerMissing,
    Settings,
    Timing,
    flops_of,
    interleave,
    missing_row,
    peer_import,
    row,
)

BOUND = (
    "bound = the plain-autograd step of the same network plus one no-grad forward of its"
    " reversible blocks (the recompute the algorithm adds), timed in the same rounds"
)


def sizes(s: Settings) -> dict[str, int]:
    if s.tiny:
        return {"blocks": 3, "batch": 2, "channels": 8, "hw": 8, "units": 1, "net_batch": 2}
    return {"blocks": 54, "batch": 8, "channels": 32, "hw": 16, "units": 3, "net_batch": 16}


PEERS = ("memcnn", "revlib")  # the reversible libraries, each built on the same blocks


def stacks(z: dict[str, int]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The same coupling stack built by ours, plain autograd and each installed peer (same
    blocks, same weights), and why each absent peer is absent."""
    torch.manual_seed(0)
    half = z["channels"] // 2
    blocks = [
        ReversibleBlock(BasicResidual(half, half), BasicResidual(half, half))
        for _ in range(z["blocks"])
    ]
    out: dict[str, nn.Module] = {
        "ours": ReversibleSequence(copy.deepcopy(blocks), memory_saving=True),
        "autograd": ReversibleSequence(copy.deepcopy(blocks), memory_saving=False),
    }
    missing = {}
    for peer, build in (("memcnn", _memcnn_stack), ("revlib", _revlib_stack)):
        try:
            out[peer] = build(peer_import(peer), blocks)
        except PeerMissing as e:
            missing[peer] = str(e)
    return out, missing


def _memcnn_stack(memcnn, blocks: list[ReversibleBlock]) -> nn.Module:
    wrapped = [
        memcnn.InvertibleModuleWrapper(
            memcnn.AdditiveCoupling(Fm=copy.deepcopy(b.f), Gm=copy.deepcopy(b.g)),
            keep_input=False,
            keep_input_inverse=False,
        )
        for b in blocks
    ]
    return nn.Sequential(*wrapped)


def _revlib_stack(revlib, blocks: list[ReversibleBlock]) -> nn.Module:
    """revlib's modules are half-residuals, (x0, x1) -> (x1, x0 + m(x1)): F then G of each block
    give (x1, x2) -> (x2, y1) -> (y1, y2), our block's y1 = x1 + F(x2), y2 = x2 + G(y1)."""
    halves = [m for b in blocks for m in (copy.deepcopy(b.f), copy.deepcopy(b.g))]
    return revlib.ReversibleSequential(*halves, split_dim=1)


def residuals(name: str, net: nn.Module) -> list[nn.Module]:
    """F and G of every block of one contender's stack, in block order (MemCNN registers G
    before F, so parameter order alone would pair the wrong gradients)."""
    if name == "memcnn":
        return [m for w in net for m in (w._fn.Fm, w._fn.Gm)]
    if name == "revlib":
        return [m.wrapped_module.wrapped_module for m in net]
    return [m for b in net.blocks for m in (b.f, b.g)]


def agreement(nets: dict[str, nn.Module], peer: str, x: torch.Tensor) -> dict[str, float]:
    """Largest |ours - peer| of one training-mode step in float64, on copies, for the output, the
    parameter gradients (F and G of each block paired) and the gradient of the leaf input the
    timed step also feeds, each over the largest |ours|. Same computation: ~1e-15."""
    got = {}
    for name in ("ours", peer):
        net = copy.deepcopy(nets[name]).double().train()
        xi = x.double().clone().requires_grad_()
        y = net(xi)
        (y**2).mean().backward()
        grads = [p.grad.flatten() for m in residuals(name, net) for p in m.parameters()]
        got[name] = {"output": y.detach(), "param_grads": torch.cat(grads), "input_grad": xi.grad}
    ours, theirs = got["ours"], got[peer]
    return {k: float((ours[k] - theirs[k]).abs().max() / ours[k].abs().max()) for k in ours}


AGREE = 1e-10  # float64: the same computation differs by rounding (~1e-15) only


def train_step(net: nn.Module, x: torch.Tensor):
    """One SGD step of `net` on a copy of x, as a call (what every contender is timed on)."""
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        # a fresh input each step: MemCNN frees the storage of the input it was given
        (net(x.clone().requires_grad_()) ** 2).mean().backward()
        opt.step()

    return step


def bn_updates(net: nn.Module, x: torch.Tensor) -> int:
    """How many times one training step (of a copy) moved the first BatchNorm's statistics."""
    net = copy.deepcopy(net)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    before = int(bn.num_batches_tracked)
    train_step(net, x)()
    return int(bn.num_batches_tracked) - before


def memory(name: str, z: dict[str, int]) -> dict[str, Any]:
    """measure_step's memory of one contender, in a fresh process (see bench.probe)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    args = [sys.executable, "-m", "bench.perf.reversible", json.dumps([name, z])]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_probe(name: str, z: dict[str, int]) -> dict[str, Any]:
    from bench.activations import measure_step

    torch.set_num_threads(1)
    net = stacks(z)[0][name].train()
    x = torch.randn(z["batch"], z["channels"], z["hw"], z["hw"])
    train_step(net, x)()  # warm-up
    report = measure_step(
        lambda: (net(x.clone().requires_grad_()) ** 2).mean(), net.parameters(), torch.device("cpu")
    )
    keep = ("saved_bytes", "rss_forward_delta_bytes", "rss_step_peak_bytes")
    return {k: report[k] for k in keep}


def bench_stack(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    z = sizes(s)
    shape = f"[{z['batch']}, {z['channels']}, {z['hw']}, {z['hw']}]"
    case = f"coupling stack: {z['blocks']} blocks, x {shape}"
    x = torch.randn(z["batch"], z["channels"], z["hw"], z["hw"])
    nets, missing = stacks(z)
    agree = {peer: agreement(nets, peer, x) for peer in PEERS if peer in nets}
    for peer, diffs in agree.items():
        # time only the same computation; a wrong input gradient (MemCNN doubles a leaf's) is
        # the same work, so it is reported in the row, not a reason to leave the row out
        if max(diffs["output"], diffs["param_grads"]) > AGREE:
            missing[peer] = f"{peer} disagrees with ours in float64 ({_shown(diffs)}): not timed"
            del nets[peer]
    fns = {name: train_step(net, x) for name, net in nets.items()}
    forward_net = copy.deepcopy(nets["autograd"])
    fns["forward"] = torch.no_grad()(lambda: forward_net(x))
    # FlopCounterMode cannot follow autograd.grad inside a backward: count the plain step and
    # the one forward that rebuilding the activations adds
    flops = flops_of(fns["autograd"]) + flops_of(torch.no_grad()(lambda: nets["autograd"](x)))
    t = interleave(fns, s)
    info = {
        name: {"bn_updates_per_step": bn_updates(net, x), "memory": memory(name, z)}
        for name, net in nets.items()
    }
    rows = []
    for peer in (*PEERS, "autograd"):
        if peer not in t:
            rows.append(missing_row(case, peer, missing.get(peer, "not run")))
            continue
        rows.append(
            row(
                case,
                t["ours"],
                t[peer],
                peer,
                items=z["batch"],
                flops=flops,
                sgemm=sgemm,
                ours_info=info["ours"],
                peer_info=info[peer],
                **({"agreement_float64": agree[peer]} if peer in agree else {}),
            )
        )
    rows.append(
        row(
            case,
            t["ours"],
            _sum(t["autograd"], t["forward"]),
            "bound",
            items=z["batch"],
            flops=flops,
            sgemm=sgemm,
            note=BOUND,
        )
    )
    return rows


def _shown(diffs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())


def _sum(a: Timing, b: Timing) -> Timing:
    """Two contenders' times added round by round (they ran in the same rounds)."""
    return Timing(
        [x + y for x, y in zip(a.wall, b.wall, strict=True)],
        [x + y for x, y in zip(a.cpu, b.cpu, strict=True)],
        a.load,
    )


def bench_revnet(s: Settings, sgemm: float) -> list[dict[str, Any]]:
    """RevNet (memory-saving) against the ResNet of the same depth, and against its bound: the
    same RevNet's plain-autograd step plus one forward of its reversible runs (the recompute
    the algorithm adds), timed in the same rounds."""
    z = sizes(s)
    units = z["units"]
    torch.manual_seed(0)
    rev = revnet_cifar(units, "basic")
    plain = copy.deepcopy(rev)
    plain.memory_saving = False
    res = resnet_cifar(2 * units, "basic")  # RevNet depth 12n+2 = ResNet depth 6(2n)+2
    x = torch.randn(z["net_batch"], 3, 32, 32)
    y = torch.randint(0, 10, (z["net_batch"],))

    def step_of(net):
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        return step

    recompute_net = copy.deepcopy(rev)
    inputs: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, a, out: inputs.append((m, a[0].detach())))
        for m in recompute_net.modules()
        if isinstance(m, ReversibleSequence)
    ]
    with torch.no_grad():
        recompute_net(x)
    for h in hooks:
        h.remove()

    def recompute():
        with torch.no_grad():
            for m, a in inputs:
                m(a)

    fns = {
        "revnet": step_of(rev),
        "resnet": step_of(res),
        "revnet-autograd": step_of(plain),
        "recompute": recompute,
    }
    flops = flops_of(fns["revnet-autograd"]) + flops_of(recompute)  # as in bench_stack
    t = interleave(fns, s)
    depth = 12 * units + 2
    bound = _sum(t["revnet-autograd"], t["recompute"])
    case = f"RevNet-{depth} vs ResNet-{depth}, batch {z['net_batch']}"
    return [
        row(
            case,
            t["revnet"],
            t["resnet"],
            f"ResNet-{depth}",
            items=z["net_batch"],
            flops=flops,
            sgemm=sgemm,
        ),
        row(
            f"RevNet-{depth} vs its bound",
            t["revnet"],
            bound,
            "bound",
            items=z["net_batch"],
            flops=flops,
            sgemm=sgemm,
            note=BOUND,
        ),
    ]


BENCHES = {"reversible": bench_stack, "revnet": bench_revnet}  # name -> its benchmark


if __name__ == "__main__":
    name_, z_ = json.loads(sys.argv[1])
    print(json.dumps(_memory_probe(name_, z_)))
