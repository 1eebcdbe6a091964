"""The f-DP one-run audit (Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential
Privacy in One Run", ICML 2025) against a given trade-off curve, and the curves of the
run's own mechanism from its accountant.

The test. m canaries are each included with probability 1/2; the auditor guesses "in"
for k of them (a fixed number, chosen before looking at the membership bits) and c of
the guesses are right. If the mechanism is f-DP in each canary (add/remove), the
paper's recursion turns (m, k, c) and the significance 1 - confidence into a
rejection: ``rejects(f, m, k, c, confidence)`` is True only with probability at most
1 - confidence when the mechanism really is f-DP. jax-privacy 2.0 implements the
recursion for Gaussian curves only (``CanaryScoreAuditor.epsilon_one_run_fdp``, whose
private ``_epsilon_one_run_fdp`` takes mu from (epsilon, delta)); ``rejects`` runs it
for any symmetric trade-off function, given as the function f(alpha) itself, through
its inverse blow-up f(1 - x). With f a Gaussian curve it gives jax-privacy's numbers
(tests/audit/test_fdp.py).

Which curve. A DP-SGD run is not mu-GDP in general: the privacy profile of the
Poisson-subsampled Gaussian has a heavier tail than any Gaussian curve through its
(epsilon, delta) point, so testing "mu(epsilon, delta)-GDP" tests a claim the
accountant never made. ``mechanism_tradeoff`` builds the curve the accountant does
claim: from the privacy profile delta(epsilon) of the run's own dp-accounting event,
computed by dp-accounting's PLD accountant with its pessimistic (upper-bounding)
discretisation, f(a) = max(0, sup_eps max(1 - delta(eps) - e^eps a,
e^-eps (1 - delta(eps) - a))): a mechanism that is (eps, delta(eps))-DP for every eps
is f-DP for this f (the supremum over a finite grid is a lower curve, i.e. a weaker
claim, so discretisation only makes the test conservative).

The epsilon lower bound. The family of curves f_s of the run's event at noise
multiplier s (same sampling, steps and privatizer) is ordered: a larger s is a more
private claim. ``lower_bound`` finds the smallest s whose curve is rejected and
reports the run's accountant's epsilon at s: "the run is not as private as the
accountant says it would be with noise s, whose epsilon is this". If the run really is
the accounted mechanism at noise sigma, every s <= sigma is a true claim, so the bound
exceeds the accountant's epsilon (s < sigma) with probability at most 1 - confidence.
This is an f-DP statement: rejecting f_s does not by itself reject
(epsilon(s), delta)-DP, which is a weaker claim (see docs/audit.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import dp_accounting
import numpy as np
import scipy.optimize
import scipy.special


Tradeoff = Callable[[float], float]

# The epsilons at which the privacy profile is evaluated to build a curve.
_EPS_GRID = np.concatenate([np.linspace(0.0, 10.0, 1001), np.linspace(10.05, 60.0, 1000)])
# The PLD discretisation of the audit's curves: coarser than the accountant's default
# (1e-4), still pessimistic (delta is over-estimated, the curve under-estimated).
_PLD_DISCRETISATION = 1e-3
_BISECTION_STEPS = 14


def gaussian_tradeoff(mu: float) -> Tradeoff:
  """mu-GDP: f(a) = Phi(Phi^-1(1 - a) - mu)."""
  return lambda a: float(scipy.special.ndtr(scipy.special.ndtri(1.0 - a) - mu))


def gaussian_delta(mu: float, epsilon: float) -> float:
  """delta(epsilon) of mu-GDP (Dong, Roth & Su 2022, Corollary 2.13)."""
  if mu <= 0:
    return 0.0
  return float(scipy.special.ndtr(-epsilon / mu + mu / 2)
               - math.exp(epsilon) * scipy.special.ndtr(-epsilon / mu - mu / 2))


def gaussian_epsilon(mu: float, delta: float) -> float:
  """The epsilon of mu-GDP at ``delta`` (0 when mu-GDP is already (0, delta)-DP)."""
  if gaussian_delta(mu, 0.0) <= delta:
    return 0.0
  hi = 1.0
  while gaussian_delta(mu, hi) > delta:
    hi *= 2.0
  return float(scipy.optimize.brentq(lambda e: gaussian_delta(mu, e) - delta, 0.0, hi,
                                     xtol=1e-9))


def gaussian_mu_bound(num_canaries: int, num_guesses: int, num_correct: int,
                      confidence: float) -> float:
  """The largest mu such that mu-GDP is rejected (0: none), to 1e-4."""
  if not rejects(gaussian_tradeoff(1e-6), num_canaries, num_guesses, num_correct,
                 confidence):
    return 0.0
  lo, hi = 1e-6, 1.0
  while rejects(gaussian_tradeoff(hi), num_canaries, num_guesses, num_correct,
                confidence):
    lo, hi = hi, 2.0 * hi
    if hi > 64:
      return lo
  while hi - lo > 1e-4:
    mid = 0.5 * (lo + hi)
    if rejects(gaussian_tradeoff(mid), num_canaries, num_guesses, num_correct,
               confidence):
      lo = mid
    else:
      hi = mid
  return lo


def tradeoff_from_profile(epsilons, deltas) -> Tradeoff:
  """The symmetric curve implied by (eps_i, delta_i)-DP for every i (add/remove)."""
  eps = np.asarray(epsilons, np.float64)
  delta = np.clip(np.asarray(deltas, np.float64), 0.0, 1.0)
  if eps.shape != delta.shape or eps.ndim != 1 or eps.size == 0:
    raise ValueError('epsilons and deltas must be 1-D arrays of the same length')
  slope, exp_neg = np.exp(eps), np.exp(-eps)

  def f(a: float) -> float:
    a = min(max(float(a), 0.0), 1.0)
    return float(max(0.0, np.max(1.0 - delta - slope * a),
                     np.max(exp_neg * (1.0 - delta - a))))

  return f


def rejects(tradeoff: Tradeoff, num_canaries: int, num_guesses: int, num_correct: int,
            confidence: float) -> bool:
  """Whether c = ``num_correct`` right out of k = ``num_guesses`` "in" guesses among m
  = ``num_canaries`` canaries reject "the mechanism is f-DP" at ``confidence``.

  The recursion of Mahloujifar et al. (their audit with a cap on the number of
  guesses): starting from r = alpha c / m and h = alpha (k - c) / m (alpha = 1 -
  confidence), for i = c-1, ..., 0, h grows to the inverse blow-up of r, f(1 - r),
  and r by i / (k - i) times that growth; the claim is rejected when r + h > k / m.
  k must be fixed before the membership bits are looked at.
  """
  m, k, c = int(num_canaries), int(num_guesses), int(num_correct)
  if not 0 <= c <= k <= m or k < 1:
    raise ValueError(f'need 0 <= num_correct <= num_guesses <= num_canaries and '
                     f'num_guesses >= 1, got c={c}, k={k}, m={m}')
  alpha = 1.0 - float(confidence)
  r, h = alpha * c / m, alpha * (k - c) / m
  for i in range(c - 1, -1, -1):
    grown = max(h, tradeoff(1.0 - r))
    if grown == h:  # neither moves again
      break
    r, h = min(r + i / (k - i) * (grown - h), 1.0), grown
  return r + h > k / m


def _add_remove_accountant(name: str):
  relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
  if name == 'pld':
    return dp_accounting.pld.PLDAccountant(
        neighboring_relation=relation,
        value_discretization_interval=_PLD_DISCRETISATION)
  return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)


def _profile(acc) -> np.ndarray:
  """delta(eps) on _EPS_GRID. The PLD accountant's distribution answers the whole
  grid at once (dp-accounting 0.6.0, pinned, keeps it as ``_pld``); else one
  ``get_delta`` per epsilon, the public API."""
  pld = getattr(acc, '_pld', None)
  if pld is not None and hasattr(pld, 'get_delta_for_epsilon'):
    return np.minimum(1.0, np.asarray(pld.get_delta_for_epsilon(_EPS_GRID), np.float64))
  return np.asarray([min(1.0, float(acc.get_delta(float(e)))) for e in _EPS_GRID])


def mechanism_tradeoff(event: dp_accounting.DpEvent) -> tuple[Tradeoff, str]:
  """(the curve implied by ``event``'s add/remove privacy profile, accountant used).

  dp-accounting's PLD accountant (pessimistic) where it supports the event, else its
  RDP accountant (whose delta(eps) is also an upper bound, only looser)."""
  for name in ('pld', 'rdp'):
    acc = _add_remove_accountant(name)
    if acc.supports(event):
      acc.compose(event)
      return tradeoff_from_profile(_EPS_GRID, _profile(acc)), name
  raise ValueError(f'dp-accounting can account neither PLD nor RDP for {event}')


class CurveFamily:
  """The run's mechanism at noise multiplier s, for every s: its curve and epsilon.

  ``event_of_sigma(s)``: the run's whole dp-accounting event at noise multiplier s
  (same sampling, steps and privatizer); ``epsilon_of_sigma(s)``: the run's
  accountant's epsilon at the run's delta (the currency of the bound; decreasing in
  s). Both are cached: a search visits each s once.
  """

  def __init__(self, event_of_sigma: Callable[[float], dp_accounting.DpEvent],
               epsilon_of_sigma: Callable[[float], float]):
    self._event_of_sigma = event_of_sigma
    self.epsilon = functools.lru_cache(maxsize=None)(epsilon_of_sigma)
    self._curves: dict[float, tuple[Tradeoff, str]] = {}

  def curve(self, s: float) -> Tradeoff:
    return self._entry(s)[0]

  def accountant(self, s: float) -> str:
    return self._entry(s)[1]

  def _entry(self, s: float):
    if s not in self._curves:
      self._curves[s] = mechanism_tradeoff(self._event_of_sigma(s))
    return self._curves[s]


@dataclasses.dataclass(frozen=True)
class Bound:
  """The f-DP lower bound of one audit (see ``lower_bound``)."""
  epsilon: float            # the accountant's epsilon at ``noise_multiplier`` (0: none)
  noise_multiplier: float   # smallest s whose curve was rejected (inf: none)
  rejects_claim: bool       # the run's own curve (at the planned sigma) is rejected
  capped: bool              # rejected even at the most leaky s searched
  curve_accountant: str     # 'pld' or 'rdp': how the curves were computed


def _key(s: float) -> float:
  return float(f'{s:.6g}')  # one cache entry per value the search visits


def lower_bound(num_canaries: int, num_guesses: int, num_correct: int,
                confidence: float, family: CurveFamily, sigma: float,
                epsilon_cap: float = 40.0,
                cheap_epsilon: Callable[[float], float] | None = None) -> Bound:
  """The largest accountant epsilon whose mechanism curve (m, k, c) rejects.

  Args:
    num_canaries, num_guesses, num_correct: m, k (fixed in advance), c.
    confidence: e.g. 0.95.
    family: the run's mechanism curves and epsilons (``CurveFamily``).
    sigma: the run's planned noise multiplier (<= 0 for a non-private run: the
      search then starts at 1).
    epsilon_cap: the downward search stops before an s whose epsilon passes this
      (the bound is then ``capped``): past the audit's ceiling more leaky curves
      cannot give a larger bound.
    cheap_epsilon: an upper bound on family.epsilon, cheap at any s (RDP), used only
      to decide where the search stops; defaults to family.epsilon.

  Returns:
    A ``Bound``. If the run really is f_sigma-DP, P[rejects_claim] <= 1 -
    confidence; and epsilon > family.epsilon(sigma) only if rejects_claim.
  """
  m, k, c = num_canaries, num_guesses, num_correct
  stop_epsilon = cheap_epsilon or family.epsilon

  def rejected(s: float) -> bool:
    return rejects(family.curve(s), m, k, c, confidence)

  private = sigma > 0
  start = _key(sigma if private else 1.0)
  claim = rejected(start)
  if not claim:
    lo = start  # not rejected: search upward for a rejected (more private) claim
    while True:
      hi = _key(lo * 2.0)
      if rejected(hi):
        break
      lo = hi
      if stop_epsilon(lo) < 1e-3:
        return Bound(0.0, math.inf, False, False, family.accountant(start))
  else:
    hi = start  # rejected: search downward for one that is not
    while True:
      lo = _key(hi / 2.0)
      if stop_epsilon(lo) > epsilon_cap:
        return Bound(float(family.epsilon(hi)), hi, private, True,
                     family.accountant(start))
      if not rejected(lo):
        break
      hi = lo
  for _ in range(_BISECTION_STEPS):
    mid = _key(math.sqrt(lo * hi))
    if mid in (lo, hi):
      break
    if rejected(mid):
      hi = mid
    else:
      lo = mid
  return Bound(float(family.epsilon(hi)), hi, claim and private, False,
               family.accountant(start))
