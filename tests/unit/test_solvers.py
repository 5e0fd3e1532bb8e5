"""The solvers on hand-checkable cases: largest batch, bandwidth needed, NICs."""

import math

import pytest

from gpucal.plan import max_batch_for_target, nics_needed, required_beta_for_target


def test_largest_batch_on_a_linear_latency():
    # 10 ms + 1 ms per sequence: 20 tok/s allows 50 ms, i.e. batch 40.
    assert max_batch_for_target(lambda b: 1 / (0.010 + 0.001 * b), 20.0) == 40


def test_largest_batch_none_when_batch_1_misses_and_the_limit_when_nothing_binds():
    assert max_batch_for_target(lambda b: 1.0, 2.0) is None
    assert max_batch_for_target(lambda b: 10.0, 2.0, batch_limit=1000) == 1000


def test_required_bandwidth_of_an_affine_latency():
    # t = 0.1 s + 1e9 B / beta; 5 tok/s leaves 0.1 s, so beta = 1e10 B/s.
    assert required_beta_for_target(lambda beta: 0.1 + 1e9 / beta, 5.0, 1e9) == pytest.approx(1e10)


def test_required_bandwidth_unreachable_and_unneeded():
    assert required_beta_for_target(lambda beta: 0.3 + 1e9 / beta, 5.0, 1e9) is None
    assert required_beta_for_target(lambda beta: 0.1, 5.0, 1e9) == 0.0


def test_nics_needed():
    assert nics_needed(300e9, 50e9) == 6
    assert nics_needed(301e9, 50e9) == 7
    assert nics_needed(1e6, 125e6) == 1
    assert nics_needed(None, 125e6) is None


@pytest.mark.parametrize("target", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_target_is_refused(target):
    with pytest.raises(ValueError, match="target"):
        max_batch_for_target(lambda b: 1.0, target)
    with pytest.raises(ValueError, match="target"):
        required_beta_for_target(lambda beta: 1.0, target, 1e9)
