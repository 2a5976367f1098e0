import math

import pytest
import torch

from hybrid.errors import HybridError
from hybrid.refining.schedule import SCHEDULES, get_schedule

NAMES = ["linear", "cosine", "loglinear"]


def test_registry_names_and_unknown_name():
    assert set(SCHEDULES) == set(NAMES)
    with pytest.raises(HybridError, match="linear, cosine, loglinear"):
        get_schedule("sqrt")


@pytest.mark.parametrize("name", NAMES)
def test_alpha_endpoints_monotone_and_types(name):
    s = get_schedule(name)
    assert s.alpha(0.0) == pytest.approx(1.0) and s.alpha(1.0) == pytest.approx(0.0, abs=1e-12)
    assert isinstance(s.alpha(0.3), float)
    t = torch.linspace(0, 1, 101)
    a = s.alpha(t)
    assert torch.is_tensor(a) and a.shape == t.shape
    assert torch.all(a[1:] < a[:-1])
    assert s.alpha(0.3) == pytest.approx(float(a[30]), abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_weight_is_finite_positive_and_matches_derivative(name):
    s = get_schedule(name)
    t = torch.tensor([0.0, 1e-9, 0.25, 0.5, 0.9], dtype=torch.float64)
    w = s.weight(t)
    assert torch.isfinite(w).all() and (w[:-1] > 0).all()
    assert math.isfinite(s.weight(0.0)) and math.isfinite(s.weight(1.0))
    h = 1e-6
    for x in (0.2, 0.5, 0.8):
        numeric = -(s.alpha(x + h) - s.alpha(x - h)) / (2 * h) / (1 - s.alpha(x))
        assert s.weight(x) == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_tokens_per_step_counts(name):
    s = get_schedule(name)
    for n in range(0, 41):
        for k in range(1, 21):
            counts = s.tokens_per_step(n, k)
            assert len(counts) == k and sum(counts) == n and min(counts) >= 0
            if k > n:
                assert counts.count(0) >= k - n
            # after step j, round(n * (1 - alpha(1 - j/k))) tokens are still masked
            still = n
            for j, c in enumerate(counts[:-1], start=1):
                still -= c
                assert still == math.floor(n * (1 - s.alpha((k - j) / k)) + 0.5)
    assert s.tokens_per_step(0, 0) == [] and s.tokens_per_step(5, 1) == [5]


def test_shapes_differ_as_documented():
    linear, cosine, loglinear = (get_schedule(n) for n in NAMES)
    assert linear.tokens_per_step(16, 4) == [4, 4, 4, 4]
    for n in (10, 33, 100):
        for k in (2, 4, 8):
            done = {s.name: 0 for s in (linear, cosine, loglinear)}
            for step in range(k):
                for s in (linear, cosine, loglinear):
                    done[s.name] += s.tokens_per_step(n, k)[step]
                # cosine and loglinear are back-loaded: never ahead of linear
                assert done["cosine"] <= done["linear"] and done["loglinear"] <= done["linear"]
    assert cosine.tokens_per_step(100, 4)[0] < cosine.tokens_per_step(100, 4)[-1]


def test_the_declared_schedule_names_are_the_implemented_ones():
    from hybrid.config import SCHEDULE_NAMES
    from hybrid.refining.schedule import SCHEDULES

    assert tuple(SCHEDULE_NAMES) == tuple(SCHEDULES)
