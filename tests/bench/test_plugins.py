"""A model from outside the repository enters a table: a package written to a temporary folder,
"installed" there (its dist-info with an entry point), run under a table's exact protocol."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import models
from bench.spec import SPEC_DIR, SpecError, get_spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
FLOWS = '''
"""A user's models: independent Bernoulli pixels, and one that breaks the contract."""
import torch
from torch import nn


class MyFlow(nn.Module):
    input_kind = "binary"
    capabilities = frozenset({"sample"})

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)
        self.logits = nn.Parameter(torch.zeros(*shape))

    def forward(self, x):
        return self.nll(x)

    def nll(self, x):
        logits = self.logits.expand_as(x)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return bce.flatten(1).sum(1)

    def sample(self, n, generator=None):
        p = torch.sigmoid(self.logits).detach().expand(n, *self.shape)
        return torch.bernoulli(p, generator=generator)


class Broken(MyFlow):
    capabilities = frozenset({"sample", "elbo_terms"})


class Tiny(nn.Module):
    capabilities = frozenset()

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding package `mypkg` 0.3.1 as pip installs it, with one entry point."""
    root = tmp_path_factory.mktemp("site")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text('__version__ = "0.3.1"\n')
    (root / "mypkg" / "flows.py").write_text(FLOWS)
    info = root / "mypkg-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.3.1\n")
    (info / "top_level.txt").write_text("mypkg\n")
    (info / "entry_points.txt").write_text("[dgm_bench.models]\nbernoulli = mypkg.flows:MyFlow\n")
    return root


def bench(site: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    out = ["--results", str(tmp / "results"), "--tables", str(tmp / "tables")]
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, *out, "--checkpoints", str(tmp / "ckpt")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_plugin_and_an_entry_point_get_rows_claims_and_provenance(site, tmp_path):
    done = bench(
        site,
        tmp_path,
        "run",
        "pixelcnn-mnist",
        "--tier",
        "smoke",
        "--add-model",
        "mine=mypkg.flows:MyFlow",
        "--add-model",
        "bernoulli",
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "tables" / "pixelcnn-mnist-smoke.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| mine", "| bernoulli"))]
    assert len(rows) == 2 and all("not run" not in r for r in rows)
    assert "mine in place of gated_pixelcnn" in table and "from mypkg 0.3.1" in table
    record = json.loads(
        (tmp_path / "results/pixelcnn-mnist/smoke/mine-binarized_mnist.json").read_text()
    )
    assert record["status"] == "ok" and record["metrics"]["nll"] > 0
    assert record["plugin"]["constructor"] == "mypkg.flows:MyFlow"
    assert record["plugin"]["version"] == "0.3.1" and len(record["plugin"]["source_sha256"]) == 64
    ours = json.loads(
        (tmp_path / "results/pixelcnn-mnist/smoke/pixelcnn-binarized_mnist.json").read_text()
    )
    assert ours["plugin"] == {}


def test_a_plugin_classifier_runs_its_memory_probe_in_a_fresh_process(site, tmp_path):
    done = bench(
        site,
        tmp_path,
        "run",
        "revnet-cifar",
        "--tier",
        "smoke",
        "--cells",
        "tiny-*",
        "--add-model",
        "tiny=mypkg.flows:Tiny",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "results/revnet-cifar/smoke/tiny-cifar10.json").read_text())
    assert record["status"] == "ok" and record["metrics"]["saved_mib"] > 0
    assert record["plugin"]["constructor"] == "mypkg.flows:Tiny"


def test_a_plugin_that_breaks_the_contract_is_one_line_and_writes_nothing(site, tmp_path):
    done = bench(
        site,
        tmp_path,
        "run",
        "pixelcnn-mnist",
        "--tier",
        "smoke",
        "--add-model",
        "bad=mypkg.flows:Broken",
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not meet the density model contract" in lines[0]
    assert "declares 'elbo_terms' but has no `elbo_terms`" in lines[0]
    assert not (tmp_path / "results" / "pixelcnn-mnist").exists()
    missing = bench(site, tmp_path, "run", "pixelcnn-mnist", "--add-model", "x=nopkg.m:M")
    assert missing.returncode == 2 and "no module 'nopkg' on the Python path" in missing.stderr


def test_with_models_adds_rows_to_every_grid_and_stand_ins_to_claims():
    spec = get_spec("pixelcnn-mnist").with_models({"mine": "mypkg.flows:MyFlow"})
    assert spec.grid["model"][-1] == "mine"
    assert all(t.grid is None or t.grid["model"][-1] == "mine" for t in spec.tiers.values())
    stand_in = spec.claims[-1]
    assert stand_in.a["model"] == "mine" and stand_in.b == {"model": "pixelcnn"}
    assert dict(spec.plugins) == {"mine": "mypkg.flows:MyFlow"}
    with pytest.raises(SpecError, match="expected 'package.module:Constructor'"):
        get_spec("pixelcnn-mnist").with_models({"mine": "mypkg.flows.MyFlow"})
    with pytest.raises(SpecError, match="has no `model` axis"):
        dataclasses.replace(spec, grid={"units": (1, 2)}).with_models({"mine": "a:b"})


def test_a_spec_names_its_own_plugins(tmp_path):
    text = (SPEC_DIR / "pixelcnn-mnist.toml").read_text()
    path = tmp_path / "pixelcnn-mnist.toml"
    path.write_text('models = { mine = "mypkg.flows:MyFlow" }\n' + text)
    assert load_spec(path).plugins == (("mine", "mypkg.flows:MyFlow"),)
    path.write_text('models = { "../up" = "mypkg.flows:MyFlow" }\n' + text)
    with pytest.raises(SpecError, match="models.../up: a model's name names result files"):
        load_spec(path)


def test_register_refuses_our_names_and_unknown_modules():
    with pytest.raises(models.UnknownModel, match="one of ours"):
        models.register("pixelcnn", "mypkg.flows:MyFlow")
    with pytest.raises(models.UnknownModel, match="no module 'surely_absent'"):
        models.register("x", "surely_absent.m:M")


# --- Issue 21, round 4: hostile plugins are one line, never a traceback -------------------------


@pytest.mark.parametrize(
    "source, message",
    [
        ("class Flow(:\n    pass\n", "raised SyntaxError: invalid syntax"),
        ("raise ZeroDivisionError('at import')\n", "raised ZeroDivisionError: at import"),
        ("import sys\nsys.exit(3)\n", "raised SystemExit: 3"),
        (
            "from mypkg.flows import MyFlow\n\n\nclass Flow(MyFlow):\n"
            "    def __init__(self, shape):\n"
            "        raise RuntimeError('boom in __init__')\n",
            "building model 'mine' raised RuntimeError: boom in __init__",
        ),
    ],
    ids=["syntax error", "raises on import", "exits on import", "constructor raises"],
)
def test_a_plugin_that_fails_to_import_or_build_is_one_line(
    site, tmp_path, capsys, monkeypatch, source, message
):
    from bench.cli import main

    module = f"hostile_{abs(hash(source))}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (SPEC_DIR / "pixelcnn-mnist.toml").read_text()
    text = f'models = {{ mine = "{module}:Flow" }}\n' + text.replace(
        '["pixelcnn", "gated_pixelcnn"]', '["pixelcnn", "gated_pixelcnn", "mine"]'
    )
    (specs / "pixelcnn-mnist.toml").write_text(text)
    status = main(["--specs", str(specs), "validate", "--models"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {specs / 'pixelcnn-mnist.toml'}: grid (tier smoke, cell mine-")
    assert message in err
