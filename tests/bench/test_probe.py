"""bench.probe: the paired step timing behind the step-time ratios."""

import pytest

from bench import probe as probing
from bench.probe import Workload


def scripted(monkeypatch, seconds: dict[str, list[float]]):
    """Make `timed_step` return each model's scripted step times, in order, with a forward pass
    taking a quarter of each step."""

    def timed_step(w):
        times = iter(seconds[w.model])
        return lambda: (lambda t: (t / 4, t))(next(times))

    monkeypatch.setattr(probing, "timed_step", timed_step)


def test_paired_step_time_cancels_a_change_of_machine_speed(monkeypatch):
    # The machine slows down 3x halfway through; the cell always costs 1.5 reference steps.
    # Order: warm-up cell, warm-up reference, then reference, (cell, reference) x 4.
    scripted(
        monkeypatch,
        {
            "cell": [9.0, 1.5, 1.5, 4.5, 4.5],
            "ref": [9.0, 1.0, 1.0, 1.0, 3.0, 3.0],
        },
    )
    t = probing.step_times(Workload("cell", 10, 2, (3, 8, 8)), steps=4, reference={"model": "ref"})
    # Around the speed change the pair gives 4.5 / 2, an outlier the median ignores.
    assert t["step_rel"] == pytest.approx(1.5)
    assert t["step_s"] == pytest.approx(3.0)  # the plain median moves with the machine
    assert t["reference_step_s"] == pytest.approx(1.0)
    assert t["forward_share"] == pytest.approx(0.25)


def test_step_time_without_reference_skips_the_warm_up(monkeypatch):
    scripted(monkeypatch, {"cell": [9.0, 1.0, 3.0, 2.0]})
    t = probing.step_times(Workload("cell", 10, 2, (3, 8, 8)), steps=3)
    assert t == {"step_s": 2.0, "forward_share": 0.25}


def test_timed_step_times_the_forward_within_the_step():
    w = Workload("resnet_cifar", 10, 2, (3, 8, 8), kwargs={"block": "basic", "units": 1})
    step = probing.timed_step(w)
    forward, whole = step()
    assert 0 < forward < whole


def test_another_model_on_the_same_workload_keeps_its_batch_device_and_seed():
    w = Workload("resnet32", num_classes=10, batch=4, shape=(3, 32, 32), seed=7)
    other = w.with_model("revnet38", depth=38)
    assert (other.model, other.kwargs, other.seed, other.batch) == ("revnet38", {"depth": 38}, 7, 4)
