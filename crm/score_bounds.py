"""Bounds on today's score as bounds on ``fans.score_base``, exact to the last bit.

Today's score is ``score_base / divisor`` (crm.scoring). Correctly rounded division by a positive
divisor is monotone, so "score ≥ x", as Python computes the score, holds exactly when
"score_base ≥ :func:`base_at_least` (x)": a range on the ``score_base`` index selects or counts
the same fans a loop over every fan would, even those exactly at a threshold (crm.tier_calibration).
"""

from __future__ import annotations

import math
import struct

from sqlalchemy import ColumnElement, and_, true

from crm.models import Fan, table

_f = table(Fan).c


def _ordinal(x: float) -> int:
    """Floats in order as integers (−0.0 and 0.0 alike)."""
    bits: int = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _float(n: int) -> float:
    bits = n if n >= 0 else (-n) | -0x8000_0000_0000_0000
    value: float = struct.unpack("<d", struct.pack("<q", bits))[0]
    return value


_TOP, _BOTTOM = _ordinal(math.inf), _ordinal(-math.inf)


def base_at_least(score: float, divisor: float) -> float:
    """The least ``score_base`` whose score (``score_base / divisor`` as Python divides) is ``≥ score``.

    Correctly rounded division by a positive divisor is monotone, so for every stored base
    ``base / divisor >= score`` exactly when ``base >= base_at_least(score, divisor)``: a range on
    the ``score_base`` index counts what a loop over every fan would.
    """

    def reaches(n: int) -> bool:
        return _float(n) / divisor >= score

    hi, step = max(_BOTTOM, min(_TOP, _ordinal(score * divisor))), 1
    while not reaches(hi) and hi < _TOP:
        hi, step = min(_TOP, hi + step), step * 2
    lo, step = max(_BOTTOM, hi - 1), 1
    while reaches(lo) and lo > _BOTTOM:
        lo, step = max(_BOTTOM, lo - step), step * 2
    if reaches(lo):
        return -math.inf
    while hi - lo > 1:  # reaches(hi), not reaches(lo)
        mid = (hi + lo) // 2
        hi, lo = (mid, lo) if reaches(mid) else (hi, mid)
    return _float(hi)


def score_between(low: float | None, high: float | None, divisor: float, *,
                  high_inclusive: bool = False) -> ColumnElement[bool]:
    """``low <= score < high`` (``<= high`` with ``high_inclusive``) as an exact score_base range."""
    conds = []
    if low is not None:
        conds.append(_f.score_base >= base_at_least(low, divisor))
    if high is not None:
        top = math.nextafter(high, math.inf) if high_inclusive else high
        conds.append(_f.score_base < base_at_least(top, divisor))
    return and_(true(), *conds)
