"""Compare two pytest-benchmark JSON files of benchmarks/ by their sgemm-normalised medians.

    python benchmarks/compare.py benchmarks/baseline.json new.json [--limit 25]

Exits 1 when a benchmark's normalised median grew by more than --limit percent over the
baseline, or is missing from the new file; raw seconds are not compared (conftest.py says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def normalised(path: Path) -> tuple[dict[str, float], dict]:
    """name -> normalised median, and the machine info, of one `--benchmark-json` file."""
    try:
        data = json.loads(path.read_text())
        medians = {b["name"]: b["extra_info"]["normalised"]["median"] for b in data["benchmarks"]}
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read ({e})") from None
    except (KeyError, TypeError):
        raise SystemExit(
            f"{path}: no normalised medians; write it with `pytest benchmarks --benchmark-only"
            " --benchmark-json FILE` (not --benchmark-disable)"
        ) from None
    return medians, data.get("machine_info", {})


def compare(baseline: Path, new: Path, limit: float) -> tuple[list[str], bool]:
    """The report's lines and whether every benchmark of the baseline is within the limit."""
    (base, base_info), (now, now_info) = normalised(baseline), normalised(new)
    lines = [f"{'benchmark':44} {'baseline':>9} {'new':>9} {'new/base':>8}  verdict"]
    ok = True
    for name, b in base.items():
        if name not in now:
            lines.append(f"{name:44} {b:9.3f} {'—':>9} {'—':>8}  FAIL (missing)")
            ok = False
            continue
        ratio = now[name] / b
        verdict = "ok" if ratio <= 1 + limit / 100 else f"FAIL (> +{limit:g}%)"
        ok &= verdict == "ok"
        lines.append(f"{name:44} {b:9.3f} {now[name]:9.3f} {ratio:8.3f}  {verdict}")
    for name in sorted(set(now) - set(base)):
        lines.append(f"{name:44} {'—':>9} {now[name]:9.3f} {'—':>8}  new (no baseline)")
    if base_info.get("bench_threads") != now_info.get("bench_threads"):
        lines.append("warning: different --bench-threads; normalised times compare at one count")
    for key in ("bench_threads", "loadavg_start", "loadavg_end"):
        lines.append(f"{key}: baseline {base_info.get(key)}, new {now_info.get(key)}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--limit", type=float, default=25.0, help="percent growth allowed (25)")
    a = p.parse_args(argv)
    lines, ok = compare(a.baseline, a.new, a.limit)
    print("\n".join(lines))
    print("normalised = seconds per call / seconds of the one-thread sgemm timed beside it")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
