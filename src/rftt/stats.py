"""Small statistics for reports: confidence intervals of accuracies, and paired differences between two stages."""

from __future__ import annotations

import math
from typing import Sequence

Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    proportion = successes / trials
    denominator = 1 + z * z / trials
    centre = (proportion + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(proportion * (1 - proportion) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def paired_difference(before: Sequence[bool], after: Sequence[bool]) -> dict[str, float]:
    """How much accuracy changed between two evaluations of the same problems: the mean per-problem difference,
    its standard error (sample deviation of the differences over the square root of their count), and how many
    problems were gained and lost. Pairing removes the problems' own difficulty from the error."""
    if len(before) != len(after):
        raise ValueError(f"paired_difference: {len(before)} outcomes before, {len(after)} after")
    differences = [int(later) - int(earlier) for earlier, later in zip(before, after)]
    count = len(differences)
    mean = sum(differences) / count if count else 0.0
    spread = sum((difference - mean) ** 2 for difference in differences) / (count - 1) if count > 1 else 0.0
    return {"difference": mean, "standard_error": math.sqrt(spread / count) if count else 0.0,
            "gained": differences.count(1), "lost": differences.count(-1), "problems": count}
