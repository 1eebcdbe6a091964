"""Printed privacy figures are rounded UP, never to nearest.

A printed epsilon or delta is a claim: "this run is (epsilon, delta)-DP". Rounded to
nearest, a true 3.96043 prints as 3.960: a smaller (stronger) guarantee than the
accountant gave. Every console line, report and table prints epsilon and delta through
``round_up``; the JSON run files keep full precision.

Floating-point noise is not rounded up: a value is first read at 12 significant digits,
the precision its own arithmetic carries (1e-5 + 1e-5 + 1e-5 is
3.0000000000000004e-05 in floats, and prints as 3e-05). The accountants' numerical
tolerances are many orders of magnitude coarser than this.
"""
import decimal
import math
from typing import Any

_SIGNIFICANT = 12  # digits of a float that are taken as its value (see above)


def _quantize(value: decimal.Decimal, exponent: int,
              rounding: str = decimal.ROUND_CEILING) -> decimal.Decimal:
  """``value`` at a multiple of 10^exponent (by default the next one up)."""
  return value.quantize(decimal.Decimal(1).scaleb(exponent), rounding=rounding)


def round_up(value: Any, digits: int = 4, *, decimals: int | None = None) -> str:
  """``value`` rounded UP, as text.

  Args:
    value: a number; None gives 'n/a', infinity (a non-private run) 'inf'.
    digits: significant digits, printed like format's 'g' (trailing zeros dropped):
      round_up(3.96043, 3) == '3.97', round_up(1e-5, 3) == '1e-05'.
    decimals: instead, a fixed number of decimals, like format's 'f':
      round_up(3.96043, decimals=3) == '3.961'.
  """
  if value is None:
    return 'n/a'
  value = float(value)
  if math.isnan(value):
    return 'n/a'
  if math.isinf(value):
    return 'inf' if value > 0 else '-inf'
  if value == 0:
    return f'{0:.{decimals}f}' if decimals is not None else '0'
  exact = decimal.Decimal(value)  # the float's exact binary value
  exact = _quantize(exact, exact.adjusted() - _SIGNIFICANT + 1,  # float noise off
                    decimal.ROUND_HALF_EVEN)
  if decimals is not None:
    return f'{float(_quantize(exact, -decimals)):.{decimals}f}'
  # The float nearest the rounded-up decimal prints back as that decimal.
  return f'{float(_quantize(exact, exact.adjusted() - digits + 1)):.{digits}g}'
