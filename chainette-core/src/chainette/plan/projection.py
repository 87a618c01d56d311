"""From a sample's figures to the whole input's: per step, each figure's mean per input row over the sample (a ratio
estimate over its sessions, so that rows a step filters out or fans out weigh as they do in the sample), times the
input's rows, less the rows the cache would answer; with a 90 % interval from the spread between the sample's
sessions (Student's t, finite-population corrected: no spread once the sample is the whole input)."""

from __future__ import annotations

from dataclasses import dataclass
import math

T90 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833)  # Student's t, 0.95 quantile, 1 to 9 degrees of freedom
Z90 = 1.645


@dataclass(frozen=True)
class Range:
    """A projected figure and its 90 % interval."""

    estimate: float
    low: float
    high: float

    def __add__(self, other: Range) -> Range:
        """The sum, its interval the sum of both (steps' figures move together: the widest honest bound)."""
        return Range(self.estimate + other.estimate, self.low + other.low, self.high + other.high)

    def rounded(self, digits: int = 0) -> dict[str, float]:
        return {"estimate": round(self.estimate, digits), "low": round(self.low, digits), "high": round(self.high, digits)}


ZERO = Range(0.0, 0.0, 0.0)


def project(per_session: list[float], rows: list[int], total: int, fresh: float = 1.0) -> Range:
    """The whole input's figure from its value in each session of the sample (`per_session`, over `rows` input rows
    each), for `total` input rows of which the share `fresh` is not answered by the cache."""
    sampled = sum(rows)
    if not sampled:
        return ZERO
    mean = sum(per_session) / sampled
    estimate = mean * total * fresh
    sessions = len(rows)
    if sessions < 2:
        return Range(estimate, estimate, estimate)
    squares = sum((value - count * mean) ** 2 for value, count in zip(per_session, rows, strict=True))
    variance = sessions / (sessions - 1) * squares / sampled**2 * max(0.0, 1 - sampled / total)
    half = _t90(sessions - 1) * math.sqrt(variance) * total * fresh
    return Range(estimate, max(0.0, estimate - half), estimate + half)


def _t90(freedom: int) -> float:
    return T90[freedom - 1] if freedom <= len(T90) else Z90
