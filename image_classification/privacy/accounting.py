"""Privacy accounting with dp-accounting, from the batch selection's event.

What is accounted is the event a batch selection (privacy/batch_selection.py) states
for its draws and a noise multiplier: ``selection.dp_event(sigma, steps)``, under
``selection.neighboring_relation`` ('add_or_remove_one' or 'replace_one'). This module
only turns events into epsilons; it never decides which event a run is:

- ``epsilon(event, delta, accountant, relation)``: epsilon at ``delta`` of one event;
- ``Ledger``: epsilon spent as a pure function of the number of steps taken;
- ``calibrate_noise_multiplier``: the smallest sigma whose event stays within a
  target epsilon.

The accountant is 'rdp' (Renyi DP, Mironov 2017; an upper bound on epsilon) or 'pld'
(privacy loss distributions, tighter). dp-accounting's PLD accountant has no sampling
without replacement, so it refuses fixed-size batches.

PLD grid: dp-accounting discretises the privacy loss on a grid (1e-4 by default) and
rounds every loss UP (pessimistic), so any grid gives an upper bound on epsilon; a
coarser grid is only looser. With little noise (a large target epsilon) one step's
loss spans about 1 / sigma^2 nats, which at 1e-4 is millions to billions of grid
points (gigabytes; dp-accounting also spends ~10 us of Python per point).
``pld_discretization`` coarsens the grid just enough that one step's loss needs at
most ``PLD_MAX_POINTS`` points and the whole run's (about its epsilon wide, the RDP
bound of the same event estimates it) at most ``PLD_MAX_COMPOSED_POINTS``: a few
hundred MB and seconds for any sigma above 1e-4, smaller ones are refused. The
rounding then adds well under 0.1% to such runs' epsilon. Runs with sigma above about
1 and epsilon below about 300 keep 1e-4 exactly.
"""
import contextlib
import functools
import math
from typing import Callable

from absl import logging
import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp

from image_classification import registry

# config.privacy.accountant -> dp-accounting's accountant class.
ACCOUNTANTS = registry.Registry('accountant')
ACCOUNTANTS.register('rdp')(rdp.RdpAccountant)
ACCOUNTANTS.register('pld')(pld.PLDAccountant)

_RELATIONS = {
    'add_or_remove_one': dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    'replace_one': dp_accounting.NeighboringRelation.REPLACE_ONE,
}


# dp-accounting's default PLD grid, kept wherever it is affordable and accurate enough.
PLD_DEFAULT_INTERVAL = 1e-4
# At most this many grid points for one step's privacy loss (1.6 MB per array) ...
PLD_MAX_POINTS = 2 * 10**5
# ... and about this many for the whole run's, whose span is of the order of its
# epsilon (the RDP bound of the same event, cheap, estimates it).
PLD_MAX_COMPOSED_POINTS = 3 * 10**6
# The coarsest grid (dp-accounting's exp(interval) must stay finite); a sigma whose
# one-step loss would still need more than PLD_MAX_POINTS points on it is refused.
PLD_MAX_INTERVAL = 100.0
# dp-accounting truncates a Gaussian's tails at mass exp(-50): about 10 sigma.
_GAUSSIAN_TAIL_SIGMAS = 10.0


class UnsupportedEventError(ValueError):
  """The accountant cannot account the batch selection's event."""


class PldTooLargeError(ValueError):
  """The noise is so small that the PLD grid would not fit in memory."""


def make_accountant(accountant: str, relation: str,
                    pld_interval: float = PLD_DEFAULT_INTERVAL
                    ) -> dp_accounting.PrivacyAccountant:
  """A fresh dp-accounting accountant named ``accountant`` for ``relation`` (PLD on a
  grid of ``pld_interval``)."""
  if accountant not in ACCOUNTANTS:
    raise ValueError(f'accountant={accountant!r}; choose one of {list(ACCOUNTANTS)}')
  if accountant == 'pld':
    return pld.PLDAccountant(neighboring_relation=_RELATIONS[relation],
                             value_discretization_interval=pld_interval)
  return ACCOUNTANTS[accountant](neighboring_relation=_RELATIONS[relation])


def _smallest_noise_multiplier(event: dp_accounting.DpEvent) -> float | None:
  """The smallest Gaussian noise multiplier in ``event``, or None for an event made
  of anything else."""
  if isinstance(event, dp_accounting.GaussianDpEvent):
    return event.noise_multiplier
  if isinstance(event, (dp_accounting.PoissonSampledDpEvent,
                        dp_accounting.SampledWithoutReplacementDpEvent,
                        dp_accounting.SelfComposedDpEvent)):
    return _smallest_noise_multiplier(event.event)
  if isinstance(event, dp_accounting.ComposedDpEvent) and event.events:
    parts = [_smallest_noise_multiplier(e) for e in event.events]
    return None if None in parts else min(parts)
  return None


def pld_discretization(event: dp_accounting.DpEvent, delta: float,
                       relation: str = 'add_or_remove_one') -> float:
  """The PLD grid step for ``event``: dp-accounting's 1e-4, coarsened only as much as
  the point budgets need (see the module docstring). Any grid gives a valid
  (pessimistic) upper bound. Raises PldTooLargeError when even the coarsest grid is
  too fine (sigma below about 1e-4)."""
  sigma = _smallest_noise_multiplier(event)
  if sigma is None or sigma <= 0:
    return PLD_DEFAULT_INTERVAL
  # One step's privacy loss spans about (1 + 2 z sigma) / sigma^2 (sensitivity 1).
  loss_span = (1.0 + 2.0 * _GAUSSIAN_TAIL_SIGMAS * sigma) / sigma**2
  with _quiet_absl():
    scale = epsilon(event, delta, 'rdp', relation)
  scale = scale if math.isfinite(scale) else 0.0
  interval = max(PLD_DEFAULT_INTERVAL, loss_span / PLD_MAX_POINTS,
                 scale / PLD_MAX_COMPOSED_POINTS)
  if interval > PLD_MAX_INTERVAL:
    if loss_span / PLD_MAX_INTERVAL > PLD_MAX_POINTS:
      raise PldTooLargeError(
          f"accountant='pld' cannot account noise_multiplier={sigma:.3g}: one step's "
          f'privacy loss spans about {loss_span:.3g} nats, more than '
          f'{PLD_MAX_POINTS:.0e} points of the coarsest grid ({PLD_MAX_INTERVAL:g}); '
          f"the RDP bound is epsilon={scale:.4g}; use accountant='rdp' or more noise")
    interval = PLD_MAX_INTERVAL
  return interval


def check_supported(event: dp_accounting.DpEvent, accountant: str,
                    relation: str) -> None:
  """Raises UnsupportedEventError when ``accountant`` cannot account ``event``."""
  if not make_accountant(accountant, relation).supports(event):
    if accountant == 'pld':
      raise UnsupportedEventError(
          "accountant='pld' does not support this batch selection (dp-accounting has "
          'no PLD for sampling without replacement, i.e. fixed-size batches); use '
          "accountant='rdp' or sampling='poisson'")
    raise UnsupportedEventError(
        f'accountant={accountant!r} does not support the event {event} under '
        f'{relation} adjacency')


def epsilon(event: dp_accounting.DpEvent, delta: float, accountant: str = 'rdp',
            relation: str = 'add_or_remove_one') -> float:
  """Epsilon of ``event`` at ``delta`` (inf when the event has no noise); PLD on the
  grid of ``pld_discretization``, in bounded memory and time for any sigma."""
  check_supported(event, accountant, relation)
  interval = (pld_discretization(event, delta, relation) if accountant == 'pld'
              else PLD_DEFAULT_INTERVAL)
  acc = make_accountant(accountant, relation, interval)
  acc.compose(event)
  return float(acc.get_epsilon(delta))


class Ledger:
  """Epsilon spent as a function of the number of steps taken, for one mechanism.

  ``selection``: the run's batch selection (its ``dp_event`` and
  ``neighboring_relation``); ``noise_multiplier``: sigma. The ledger is a pure
  function of steps (the event of t steps, composed afresh and cached): a resumed run
  that restores its step count restores its spent budget exactly; nothing is ever
  reset. 0 steps spend 0; a run without noise spends inf after any step.
  """

  def __init__(self, selection, noise_multiplier: float, delta: float,
               accountant: str = 'rdp'):
    self.selection = selection
    self.noise_multiplier = noise_multiplier
    self.delta = delta
    self.accountant = accountant
    self._warned = False

  @functools.lru_cache(maxsize=4096)
  def epsilon(self, steps: int) -> float:
    if steps <= 0:
      return 0.0
    if self.noise_multiplier <= 0:
      return math.inf
    event = self.selection.dp_event(self.noise_multiplier, steps)
    # dp-accounting's warnings (orders it drops) are the same at every step: once.
    with contextlib.nullcontext() if not self._warned else _quiet_absl():
      self._warned = True
      return epsilon(event, self.delta, self.accountant,
                     self.selection.neighboring_relation)


def calibrate_noise_multiplier(target_epsilon: float, delta: float,
                               event_of_sigma: Callable[[float], dp_accounting.DpEvent],
                               accountant: str = 'rdp',
                               relation: str = 'add_or_remove_one',
                               rtol: float = 1e-4) -> float:
  """The smallest sigma (to rtol) whose event's epsilon is <= target_epsilon.

  ``event_of_sigma(sigma)``: the whole run's event for noise multiplier sigma, e.g.
  ``lambda s: selection.dp_event(s, steps)``. Bisection on a bracket; the returned
  sigma is always on the safe side, so a run that uses it ends at or below the target.
  """
  if target_epsilon <= 0:
    raise ValueError(f'target_epsilon must be > 0, got {target_epsilon}')

  def eps_of(sigma):
    with _quiet_absl():  # small trial sigmas make dp-accounting warn about orders
      return epsilon(event_of_sigma(sigma), delta, accountant, relation)

  low, high = 0.1, 1.0
  while eps_of(high) > target_epsilon:
    low, high = high, high * 2.0
    if high > 1e5:
      raise ValueError(
          f'no noise multiplier below 1e5 reaches epsilon={target_epsilon} '
          f'(delta={delta}); raise the target epsilon, lower the batch size or train '
          'fewer steps')
  if eps_of(low) <= target_epsilon:
    while low > 1e-3 and eps_of(low) <= target_epsilon:
      high, low = low, low / 2.0
  while (high - low) > rtol * high:
    mid = 0.5 * (low + high)
    if eps_of(mid) <= target_epsilon:
      high = mid
    else:
      low = mid
  return high


@contextlib.contextmanager
def _quiet_absl():
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)
