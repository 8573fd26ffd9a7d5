"""Small statistics for reports: a bootstrap confidence interval of a mean and of a paired difference, and the
cost/quality Pareto front.

At the sizes these grids run (tens of questions per cell) a point estimate alone invites reading noise as an effect;
the percentile bootstrap needs no distributional assumption and works for 0/1 accuracies and DROP F1 alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap ``1 - alpha`` interval of the mean, seeded so a report is reproducible.

    All-equal values give ``(mean, mean)`` exactly (no resample can differ); an empty sample gives ``(nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                   alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same questions, with a percentile bootstrap interval that resamples questions (the
    pairs), not the two runs separately: two prompts scored on the same questions share the questions' difficulty,
    so the paired interval is much narrower than comparing two unpaired intervals."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(d, n_boot, seed, alpha)
    return float(d.mean()), lo, hi


def paired_ratio_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                    alpha: float = 0.05) -> tuple[float, float, float]:
    """``sum(a) / sum(b)`` over the same questions (e.g. one run's tokens over another's), with a percentile bootstrap
    interval that resamples questions, as :func:`paired_diff_ci` does for a difference."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    ratios = x[idx].sum(axis=1) / np.maximum(y[idx].sum(axis=1), 1e-9)
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(x.sum() / max(y.sum(), 1e-9)), float(lo), float(hi)


def paired_per_success_ratio_ci(cost_a: Sequence[float], ok_a: Sequence[float], cost_b: Sequence[float],
                                ok_b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                                alpha: float = 0.05) -> tuple[float, float, float]:
    """How many times more ``b`` pays per success than ``a`` on the same questions: (sum(cost_b) / sum(ok_b)) over
    (sum(cost_a) / sum(ok_a)), with a percentile bootstrap interval that resamples questions (one index set for all
    four sequences, so the pairing is kept). ``ok`` is a score in [0, 1] (an F1 counts as a partial success). A
    resample where a run has no success has no defined cost per success and is left out of the interval."""
    arrays = [np.asarray(v, dtype=float) for v in (cost_a, ok_a, cost_b, ok_b)]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"paired samples differ in length ({', '.join(str(a.size) for a in arrays)})")
    if arrays[0].size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, arrays[0].size, size=(n_boot, arrays[0].size))
    ca, oa, cb, ob = (a[idx].sum(axis=1) for a in arrays)
    defined = (oa > 0) & (ob > 0) & (ca > 0)
    if not defined.any():
        return float("nan"), float("nan"), float("nan")
    ratios = (cb[defined] / ob[defined]) / (ca[defined] / oa[defined])
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    sa, soa, sb, sob = (float(a.sum()) for a in arrays)
    est = (sb / sob) / (sa / soa) if min(sa, soa, sob) > 0 else float("nan")
    return est, float(lo), float(hi)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (cost, quality) points, by increasing cost. A point is dominated when another
    costs no more and scores no less, and is strictly better in one of the two; exact ties are all kept."""
    front = []
    for i, (ci, qi) in enumerate(points):
        dominated = any(cj <= ci and qj >= qi and (cj < ci or qj > qi) for j, (cj, qj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
