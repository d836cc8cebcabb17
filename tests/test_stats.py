"""Confidence intervals and paired differences used in reports."""

import pytest

from rftt.stats import paired_difference, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 17 of 100: centre 0.189207/1.038415 = 0.182208, half-width 0.076088/1.038415 = 0.073274.
    low, high = wilson_interval(17, 100)
    assert low == pytest.approx(0.10893, abs=1e-5) and high == pytest.approx(0.25548, abs=1e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 200)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.0 < high < 0.02
    low, high = wilson_interval(200, 200)
    assert 0.98 < low < 1.0 and high == pytest.approx(1.0)


def test_paired_difference_by_hand():
    # differences +1, +1, -1, 0, 0: mean 0.2; squared deviations 0.64, 0.64, 1.44, 0.04, 0.04 sum 2.8,
    # sample variance 0.7, standard error sqrt(0.7 / 5) = 0.374166.
    before = [False, False, True, True, False]
    after = [True, True, False, True, False]
    change = paired_difference(before, after)
    assert change["difference"] == pytest.approx(0.2) and change["standard_error"] == pytest.approx(0.374166, abs=1e-6)
    assert (change["gained"], change["lost"], change["problems"]) == (2, 1, 5)
    assert paired_difference([True] * 4, [True] * 4)["standard_error"] == 0.0


def test_paired_difference_needs_the_same_problems():
    with pytest.raises(ValueError, match="3 outcomes before, 2 after"):
        paired_difference([True] * 3, [True] * 2)
