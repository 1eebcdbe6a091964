"""Privacy accounting with dp-accounting, matched to the sampler.

The mechanism of one DP-SGD step is the Gaussian mechanism on a clipped sum, applied to
a subsampled batch:
- sampling='poisson': PoissonSampledDpEvent(q, Gaussian(sigma)), add/remove-one
  adjacency. Adding or removing one example moves the clipped sum by at most C, so the
  accountant's noise multiplier (noise std / sensitivity) is sigma.
- sampling='fixed': SampledWithoutReplacementDpEvent(N, B, Gaussian(sigma / 2)),
  replace-one adjacency. Replacing one example moves the sum by at most 2C, so the
  accountant sees sigma / 2. Only the RDP accountant supports this event.
T steps compose as a SelfComposedDpEvent. Epsilon is reported at the config's delta.

mechanism='bandmf' (banded matrix factorisation with b = num_bands bands, Choquette-Choo
et al. 2023) uses cyclic Poisson sampling: the examples are split into b groups and step
t samples group t mod b with probability q = b * B / N (B the expected batch size, so a
step still holds B examples on average). With a column-normalised b-banded strategy
(max column norm 1) each example is used at most once in every b consecutive steps, and
the run is accounted as ceil(T / b) rounds of the Poisson-subsampled Gaussian mechanism
with (q, sigma): jax-privacy's ``amplified_bandmf_event``, add/remove-one adjacency
(the groups are drawn independently per example, so they do not depend on who else is
in the data). b = 1 is DP-SGD's event exactly.
"""
import contextlib
import dataclasses
import functools
import math

from absl import logging
import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import numpy as np

ACCOUNTANTS = ('rdp', 'pld')
SAMPLINGS = ('poisson', 'fixed')
MECHANISMS = ('dpsgd', 'bandmf')

NEIGHBORING_RELATIONS = {
    'poisson': 'add_or_remove_one',
    'fixed': 'replace_one',
}



@dataclasses.dataclass(frozen=True)
class Mechanism:
  """The public parameters of a DP-SGD run that determine its privacy."""
  noise_multiplier: float
  dataset_size: int
  expected_batch_size: int
  sampling: str = 'poisson'
  accountant: str = 'rdp'
  mechanism: str = 'dpsgd'    # 'dpsgd' | 'bandmf'
  num_bands: int = 1          # b; BandMF only (b = 1 is DP-SGD)

  @property
  def sampling_rate(self) -> float:
    """Per-step probability that an ELIGIBLE example is sampled (BandMF: one group of
    about N / b examples is eligible at each step)."""
    if self.mechanism == 'bandmf':
      return self.num_bands * self.expected_batch_size / self.dataset_size
    return self.expected_batch_size / self.dataset_size

  def compositions(self, steps: int) -> int:
    """How many times ``step_event`` composes over ``steps`` steps: BandMF composes
    once per round of b steps (an example takes part at most once per round)."""
    if self.mechanism == 'bandmf':
      return math.ceil(steps / self.num_bands)
    return steps

  @property
  def neighboring_relation(self) -> str:
    return NEIGHBORING_RELATIONS[self.sampling]

  def step_event(self) -> dp_accounting.DpEvent:
    """The DpEvent of one training step (BandMF: of one round of b steps)."""
    if self.mechanism == 'bandmf':
      return self.event(self.num_bands).event
    if self.sampling == 'poisson':
      return dp_accounting.PoissonSampledDpEvent(
          self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier))
    if self.sampling == 'fixed':
      return dp_accounting.SampledWithoutReplacementDpEvent(
          self.dataset_size, self.expected_batch_size,
          dp_accounting.GaussianDpEvent(self.noise_multiplier / 2.0))
    raise ValueError(f'sampling={self.sampling!r}; choose one of {SAMPLINGS}')

  def event(self, steps: int) -> dp_accounting.DpEvent:
    if self.mechanism == 'bandmf':
      if self.sampling != 'poisson':
        raise ValueError("mechanism='bandmf' needs sampling='poisson' (cyclic Poisson)")
      from jax_privacy.experimental import accounting as jp_accounting  # pylint: disable=g-import-not-at-top
      return jp_accounting.amplified_bandmf_event(
          self.noise_multiplier, steps, num_bands=self.num_bands,
          sampling_prob=self.sampling_rate)
    return dp_accounting.SelfComposedDpEvent(self.step_event(), steps)


def _make_accountant(mechanism: Mechanism) -> dp_accounting.PrivacyAccountant:
  relation = (dp_accounting.NeighboringRelation.REPLACE_ONE
              if mechanism.sampling == 'fixed'
              else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  if mechanism.accountant == 'rdp':
    return rdp.RdpAccountant(neighboring_relation=relation)
  if mechanism.accountant == 'pld':
    if mechanism.sampling == 'fixed':
      raise ValueError(
          "config.privacy.accountant='pld' does not support sampling='fixed' "
          "(dp-accounting has no PLD for sampling without replacement); use "
          "accountant='rdp' or sampling='poisson'")
    return pld.PLDAccountant(relation)
  raise ValueError(f'accountant={mechanism.accountant!r}; choose one of {ACCOUNTANTS}')


def epsilon(mechanism: Mechanism, steps: int, delta: float) -> float:
  """Epsilon after ``steps`` steps at ``delta``; 0 for 0 steps, inf without noise."""
  if steps <= 0:
    return 0.0
  if mechanism.noise_multiplier <= 0:
    return math.inf
  accountant = _make_accountant(mechanism)
  accountant.compose(mechanism.event(steps))
  return float(accountant.get_epsilon(delta))


class Ledger:
  """Epsilon spent as a function of the number of steps taken, for one mechanism.

  The ledger is a pure function of (mechanism, steps): a resumed run that restores its
  step count restores its spent budget exactly; nothing is ever reset.
  """

  def __init__(self, mechanism: Mechanism, delta: float):
    self.mechanism = mechanism
    self.delta = delta
    self._rdp_per_step = None
    if mechanism.accountant == 'rdp' and mechanism.noise_multiplier > 0:
      # RDP composes additively: compute one step's curve once, scale by steps.
      accountant = _make_accountant(mechanism)
      accountant.compose(mechanism.step_event())
      # pylint: disable=protected-access
      self._orders = accountant._orders
      self._rdp_per_step = np.asarray(accountant._rdp)

  @functools.lru_cache(maxsize=4096)
  def epsilon(self, steps: int) -> float:
    if steps <= 0:
      return 0.0
    if self.mechanism.noise_multiplier <= 0:
      return math.inf
    if self._rdp_per_step is not None:
      count = self.mechanism.compositions(steps)
      eps, _ = rdp.compute_epsilon(self._orders, self._rdp_per_step * count, self.delta)
      return float(eps)
    return epsilon(self.mechanism, steps, self.delta)


def calibrate_noise_multiplier(target_epsilon: float, delta: float, steps: int,
                               dataset_size: int, expected_batch_size: int,
                               sampling: str = 'poisson', accountant: str = 'rdp',
                               rtol: float = 1e-4, mechanism: str = 'dpsgd',
                               num_bands: int = 1) -> float:
  """The smallest sigma (to rtol) whose epsilon after ``steps`` is <= target_epsilon.

  Bisection on a bracket; the returned sigma is always on the safe side, so a run that
  uses it ends at or below the target.
  """
  if target_epsilon <= 0:
    raise ValueError(f'target_epsilon must be > 0, got {target_epsilon}')

  def eps_of(sigma):
    with _quiet_absl():  # small trial sigmas make dp-accounting warn about orders
      return epsilon(Mechanism(sigma, dataset_size, expected_batch_size, sampling,
                               accountant, mechanism, num_bands), steps, delta)

  low, high = 0.1, 1.0
  while eps_of(high) > target_epsilon:
    low, high = high, high * 2.0
    if high > 1e5:
      raise ValueError(
          f'no noise multiplier below 1e5 reaches epsilon={target_epsilon} in {steps} '
          f'steps (q={expected_batch_size / dataset_size:.4g}, delta={delta}); raise the '
          'target epsilon, lower the batch size or train fewer steps')
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
