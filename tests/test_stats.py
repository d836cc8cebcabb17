"""Confidence intervals used in reports."""

import pytest

from rftt.stats import wilson_interval


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
