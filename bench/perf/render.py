"""tables/perf.md and tables/perf.png from the records under results/perf/ alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import atomic_write_text

TITLES = {
    "iwae-train": "IWAE training step (Adam) vs pythae 0.1.2's IWAE and a plain batched reference",
    "iwae-nll": "IWAE test NLL, k = 5000, vs pythae's get_nll on the same weights and images",
    "reversible": "Reversible backward: coupling stack vs MemCNN 1.5.2, revlib 1.7.2 and plain"
    " autograd",
    "revnet": "RevNet vs ResNet of the same depth, and vs its algorithmic bound",
    "pixelcnn": "PixelCNN family: training throughput (no peer), cached vs naive sampling",
    "nice": "NICE training step (Adam) vs zuko 1.6.0's NICE on the same architecture and weights",
}

# what a reader needs to trust a section's peer rows: how each peer was built, and why that peer
NOTES = {
    "reversible": "Every stack holds copies of the same F and G: MemCNN wraps each block in an"
    " InvertibleModuleWrapper(AdditiveCoupling), revlib takes F and G as alternating"
    " half-residuals (its default autograd-function mode). Each peer's output and F/G gradients"
    " are checked against ours in float64 before timing (details: largest relative differences)."
    " MemCNN's input gradient differs because it doubles the gradient of a leaf input; MemCNN and"
    " revlib move the BatchNorm statistics more than once per step.",
    "nice": "zuko is the flow peer because its NICE class is the paper's model: additive couplings"
    " (AdditiveTransform) over alternating odd/even units, whose networks see only the units they"
    " keep, as ours. normflows' additive coupling masks by multiplication, so its networks read"
    " and write every unit; nflows matches too but has had no release since 2020. NICE's exp(s)"
    " scaling and logistic prior, which zuko lacks, are added in zuko's own terms"
    " (bench/perf/flows.py); log p(x) and every gradient are checked against ours in float64."
    " Both steps run the same matrix products and the same Adam, so library overhead is all a"
    " ratio can show.",
}

# (benchmark, case prefix, peer, what, target): the targets, checked from the records
TARGETS = [
    ("iwae-train", "train layers=1 k=50", "pythae", "speedup", 1.3),
    ("iwae-train", "train layers=1 k=50", "pythae", "sgemm_fraction", 0.7),
    ("iwae-nll", "nll k=5000", "pythae batch=100", "speedup", 2.0),
    ("iwae-nll", "nll k=5000", "pythae batch=1000", "speedup", 2.0),
    ("reversible", "coupling stack", "memcnn", "speedup", 1.5),  # issue 24 (15 asked 1 / 0.7)
    ("reversible", "coupling stack", "revlib", "speedup", 1.0),
    ("reversible", "coupling stack", "bound", "speedup", 1 / 1.05),
    ("revnet", "RevNet-", "bound", "speedup", 1 / 1.05),
    ("pixelcnn", "pixelcnn sample", "naive sampler", "speedup", 20.0),
    ("pixelcnn", "pixelcnnpp sample", "naive sampler", "speedup", 20.0),
    ("pixelcnn", "pixelsnail sample", "naive sampler", "speedup", 20.0),
    ("nice", "NICE step", "zuko", "speedup", 1.0),
]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def _mib(b: Any) -> str:
    return "—" if b is None else f"{b / 2**20:.1f}"


def _details(row: dict[str, Any]) -> str:
    bits = []
    if "value_diff_nats" in row:
        d = row["value_diff_nats"]
        bits.append(
            f"NLL ours − peer on the same samples: {d['same_noise']['mean']:+.4f} nat"
            f" (max {d['same_noise']['max_abs']:.4f}); on independent samples: mean NLL"
            f" {d['mean_nll_ours']:.2f} vs {d['mean_nll_peer']:.2f}"
        )
    if "memory" in row and "peak_bytes" in row["memory"]:
        bits.append(
            f"peak {_mib(row['memory']['peak_bytes'])} MiB for {row['memory']['images']} images"
        )
    if "recommended" in row:
        c = row["speedup"]["cpu"]
        bits.append(
            "**recommended nll_chunk**"
            if row["recommended"]
            else f"takes {1 / c['median']:.2f}x ({1 / c['max']:.2f}–{1 / c['min']:.2f}) the"
            " recommended chunk's CPU time"
        )
    for who in ("ours", "peer"):
        info = row.get(f"{who}_info")
        if info:
            mem = info["memory"]
            bits.append(
                f"{who}: held {_mib(mem.get('rss_forward_delta_bytes'))} MiB, saved"
                f" {_mib(mem.get('saved_bytes'))} MiB, step peak"
                f" {_mib(mem.get('rss_step_peak_bytes'))} MiB,"
                f" BN updates/step {info['bn_updates_per_step']}"
            )
    if "agreement_float64" in row:
        diffs = ", ".join(f"{k} {v:.0e}" for k, v in row["agreement_float64"].items())
        bits.append(f"float64 check, max relative difference from ours: {diffs}")
    if "load_1min" in row:
        bits.append(_load(row["load_1min"]))
    if row.get("note"):
        bits.append(row["note"])
    return "; ".join(bits)


def _load(load: dict[str, Any]) -> str:
    """The 1-minute load over a row's rounds; rounds at a load above the cores are flagged."""
    text = f"load {load['median']:.2f} ({load['min']:.2f}–{load['max']:.2f})"
    over = load["rounds_over_cores"]
    if over:
        text += f", **{over}/{load['n']} rounds at load > {load['cores']} cores**"
    return text


def section(record: dict[str, Any]) -> str:
    name = record["benchmark"]
    lines = [f"## {name}: {TITLES.get(name, name)}", ""]
    if name in NOTES:
        lines += [NOTES[name], ""]
    lines.append(
        "| case | peer | ours ms (CPU) | peer ms (CPU) | speedup, CPU time | speedup, wall"
        " | % of sgemm | ours items/s (CPU) | details |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in record["rows"]:
        if r.get("missing"):
            lines.append(f"| {r['case']} | {r['peer']} | — | — | — | — | — | — | {r['note']} |")
            continue
        peer_ms = _ms(r["peer_s"]["cpu_s"]) if "peer_s" in r else "—"
        cpu = _ratio(r["speedup"]["cpu"]) if "speedup" in r else "—"
        wall = _ratio(r["speedup"]["wall"]) if "speedup" in r else "—"
        frac = f"{100 * r['sgemm_fraction']:.0f}%" if "sgemm_fraction" in r else "—"
        lines.append(
            f"| {r['case']} | {r['peer']} | {_ms(r['ours']['cpu_s'])} | {peer_ms} | {cpu}"
            f" | {wall} | {frac} | {r['ours']['items_per_s_cpu']:.0f} | {_details(r)} |"
        )
    sg = record["sgemm_gflops"]
    lines += [
        "",
        f"sgemm (1024², one thread, CPU time): {sg['before']['median']:.1f} GFLOP/s before,"
        f" {sg['after']['median']:.1f} after; load average {record['loadavg']['before']} before,"
        f" {record['loadavg']['after']} after, on {record['cpu_count']} cores; {record['device']};"
        f" {record['wall_s']:.0f} s wall, {record['cpu_s']:.0f} s CPU;"
        f" commit {record['commit'][:10]}{' (modified)' if record['dirty'] else ''};"
        f" `{record['command']}`; started {record['started']}"
        + ("; **quick mode: one round, not numbers to quote**" if record["quick"] else ""),
        "",
    ]
    return "\n".join(lines)


def targets(records: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Targets (issues 15 and 24), checked on the CPU-time medians above",
        "",
        "| benchmark | case | against | measured | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for bench, prefix, peer, what, target in TARGETS:
        rows = [
            r
            for r in records.get(bench, {}).get("rows", [])
            if not r.get("missing") and r["case"].startswith(prefix) and r["peer"] == peer
        ]
        for r in rows:
            value = r["speedup"]["cpu"]["median"] if what == "speedup" else r[what]
            shown = f"{value:.3f}x faster" if what == "speedup" else f"{100 * value:.1f}% of sgemm"
            want = f">= {target:.2f}x" if what == "speedup" else f">= {100 * target:.0f}%"
            met = "yes" if value >= target else "no"
            if r.get("load_1min", {}).get("rounds_over_cores"):
                met += f" ({_load(r['load_1min'])})"
            lines.append(f"| {bench} | {r['case']} | {peer} | {shown} | {want} | {met} |")
    return lines


def render(records: dict[str, dict[str, Any]]) -> str:
    any_record = next(iter(records.values()))
    versions = ", ".join(f"{k} {v}" for k, v in any_record["versions"].items() if k != "platform")
    head = [
        "# Performance against peers (`bench perf`)",
        "",
        "Each benchmark times ours and the peer in one process, interleaved (A, B, B, A, ... over"
        " rounds), on one thread. speedup = peer time / our time per round: median (min–max) over"
        " rounds; > 1 means ours is faster. The CPU-time ratio is the one to quote: **this run was"
        " on a shared machine** (load averages in each footer), where wall time includes waiting"
        " for a core. % of sgemm = the step's FLOPs (torch.utils.flop_counter) per CPU second over"
        " the one-thread sgemm rate measured in the same run.",
        "",
        f"Versions: {versions}.",
        "",
    ]
    body = [section(records[name]) for name in TITLES if name in records]
    return "\n".join(head + body + targets(records)) + "\n"


def write_perf_table(records: dict[str, dict[str, Any]], tables: Path, name: str = "perf") -> Path:
    path = tables / f"{name}.md"
    atomic_write_text(path, render(records))
    return path


def plot_perf(records: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Horizontal bars: each comparison's CPU-time speedup with its min–max over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, med, lo, hi = [], [], [], []
    for name in TITLES:
        for r in records.get(name, {}).get("rows", []):
            if "speedup" not in r or r["peer"].startswith("ours"):
                continue
            c = r["speedup"]["cpu"]
            label = f"{r['case']} vs {r['peer']}"
            labels.append(label if len(label) <= 70 else label[:69] + "…")
            med.append(c["median"])
            lo.append(c["median"] - c["min"])
            hi.append(c["max"] - c["median"])
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(labels) + 1.2))
    y = range(len(labels))
    ax.barh(y, med, xerr=[lo, hi], color="#4c72b0", ecolor="#333", capsize=2)
    ax.axvline(1.0, color="k", lw=0.8)
    if max(med) > 10:
        ax.set_xscale("log")  # samplers' 20-100x beside peers' 1-3x
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup = peer CPU time / our CPU time (median, min–max over rounds)")
    ax.set_title("bench perf: ours vs peers, one thread, shared machine", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
