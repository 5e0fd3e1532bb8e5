"""The timing harness on fake clocks: warm-up, the choice of k, adaptive stopping, noisy flags, statistics."""

from __future__ import annotations

import itertools
import math

import pytest

from gpucal.probes.net import net_policy
from gpucal.probes.timing import Policy, Timing, TimingError, measure


class FakeDevice:
    """``run_k`` returning ``k × per_iter`` (times a factor from ``noise``), advancing a fake host clock."""

    def __init__(self, per_iter_s, noise=(1.0,)):
        self.per_iter_s = per_iter_s
        self.noise = itertools.cycle(noise)
        self.now = 0.0
        self.calls = []

    def clock(self):
        return self.now

    def run_k(self, k):
        self.calls.append(k)
        t = k * self.per_iter_s * next(self.noise)
        self.now += t + 1e-4
        return t


def test_steady_device_stops_at_min_samples_with_exact_statistics():
    dev = FakeDevice(2e-3)
    policy = Policy(warmup_runs=3, warmup_s=0.0, min_sample_s=1e-3, min_samples=10, target_cv=0.01, budget_s=5)
    t = measure(dev.run_k, policy, clock=dev.clock)
    assert t.n == 10 and not t.noisy and t.k == 1 and t.warmup_runs == 3
    assert t.median_s == pytest.approx(2e-3) and t.cv == pytest.approx(0.0, abs=1e-12)
    assert dev.calls[:3] == [1, 1, 1]


def test_warmup_runs_until_both_count_and_time_are_reached():
    dev = FakeDevice(1e-3)
    t = measure(dev.run_k, Policy(warmup_runs=3, warmup_s=0.02, min_sample_s=0.0, min_samples=5), clock=dev.clock)
    # three single runs, then k doubles until 20 ms of warm-up: 3 + 2 + 4 + 8 + 16 = 33 runs, 33 ms
    assert dev.calls[:7] == [1, 1, 1, 2, 4, 8, 16] and t.warmup_runs == 33


def test_k_grows_so_that_a_sample_lasts_min_sample_s():
    dev = FakeDevice(1e-5)
    t = measure(dev.run_k, Policy(warmup_runs=1, warmup_s=0.0, min_sample_s=1e-3, min_samples=4), clock=dev.clock)
    assert t.k == 128  # 2**ceil(log2(1e-3 / 1e-5))
    assert all(k == 128 for k in dev.calls[1:])
    assert t.median_s == pytest.approx(1e-5)


def test_noisy_device_samples_until_the_budget_and_is_flagged():
    dev = FakeDevice(1e-3, noise=(1.0, 1.3, 0.8, 1.1))
    policy = Policy(warmup_runs=1, warmup_s=0.0, min_sample_s=0.0, min_samples=5, max_samples=10_000,
                    target_cv=0.01, budget_s=0.5)
    t = measure(dev.run_k, policy, clock=dev.clock)
    assert t.noisy and t.cv > 0.01
    assert dev.now >= 0.5 and t.n < 10_000


def test_noise_within_target_is_not_noisy():
    dev = FakeDevice(1e-3, noise=(1.0, 1.002, 0.998))
    t = measure(dev.run_k, Policy(warmup_runs=1, warmup_s=0.0, min_sample_s=0.0, min_samples=6), clock=dev.clock)
    assert not t.noisy and t.n == 6


def test_max_samples_bounds_the_run():
    dev = FakeDevice(1e-3, noise=(1.0, 2.0))
    t = measure(dev.run_k, Policy(warmup_runs=1, warmup_s=0.0, min_sample_s=0.0, min_samples=3, max_samples=7,
                                  budget_s=1e9), clock=dev.clock)
    assert t.n == 7 and t.noisy


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan, math.inf])
def test_a_clock_that_returns_no_time_is_an_error(bad):
    with pytest.raises(TimingError):
        measure(lambda k: bad, Policy(warmup_runs=1, warmup_s=0.0), clock=lambda: 0.0)


def test_statistics_of_known_samples():
    t = Timing(tuple(float(v) for v in range(1, 12)), k=4, warmup_runs=3, clock="fake", noisy=False, target_cv=0.01)
    assert (t.median_s, t.p10_s, t.p90_s, t.min_s, t.max_s, t.mean_s) == (6.0, 2.0, 10.0, 1.0, 11.0, 6.0)
    assert t.cv == pytest.approx(math.sqrt(11.0) / 6.0)
    s = t.summary()
    assert s["n"] == 11 and s["statistic"] == "median" and s["samples_s"][0] == 1.0


class LoadedWarmup(FakeDevice):
    """The first ``slow_calls`` calls are stretched by other work on a shared CPU (each lasts ``slow_s``)."""

    def __init__(self, per_iter_s, slow_calls, slow_s):
        super().__init__(per_iter_s)
        self.slow_calls, self.slow_s = slow_calls, slow_s

    def run_k(self, k):
        t = super().run_k(k)
        if len(self.calls) <= self.slow_calls:
            self.now += self.slow_s
            return t + self.slow_s
        return t


def test_k_is_not_settled_at_1_by_two_warm_up_runs_slowed_by_load():
    """The network probe's policy warms up with two single round trips; on a loaded machine both can last
    milliseconds while a round trip takes 2 µs: k must still grow until a sample lasts min_sample_s."""
    policy = net_policy()
    dev = LoadedWarmup(2e-6, slow_calls=policy.warmup_runs, slow_s=5e-3)
    t = measure(dev.run_k, policy, clock=dev.clock)
    assert t.k >= policy.min_sample_s / 2e-6
    assert t.median_s == pytest.approx(2e-6) and t.n >= policy.min_samples
    assert all(k == t.k for k in dev.calls[-t.n:])


def test_k_comes_from_the_fastest_warm_up_call():
    dev = LoadedWarmup(1e-5, slow_calls=1, slow_s=0.1)
    t = measure(dev.run_k, Policy(warmup_runs=3, warmup_s=0.0, min_sample_s=1e-3, min_samples=4), clock=dev.clock)
    assert t.k == 128 and dev.calls[3:] == [128] * t.n  # no sample at a wrong k: chosen right from the warm-up
