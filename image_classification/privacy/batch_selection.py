"""Batch selection: which training examples each step's logical batch holds, and the
dp-accounting event that this choice, with Gaussian noise, amounts to.

Formal guarantees (each class's ``dp_event(sigma, steps)`` is the event of ``steps``
steps of the Gaussian mechanism with noise multiplier sigma on the clipped sum, for a
batch drawn as described; ``neighboring_relation`` is the adjacency it holds under):

- ``PoissonSampling`` ('poisson'): every example joins independently with probability
  q = B / N, so the size varies around the expected batch size B. Adding or removing
  one example moves the clipped sum by at most C: T steps are the Poisson-subsampled
  Gaussian mechanism with (q, sigma) composed T times, add/remove-one adjacency.
- ``FixedSizeSampling`` ('fixed'): exactly B distinct examples drawn uniformly without
  replacement, independently at every step. Replacing one example moves the sum by at
  most 2C, so the accountant sees sigma / 2: sampling without replacement of B out of
  N, replace-one adjacency (only the RDP accountant supports this event).
- ``CyclicPoissonSampling`` (BandMF's, b = num_bands): every example is assigned once,
  for the whole run, to one of b groups, independently and uniformly (the assignment of
  one example does not depend on the others: add/remove-one adjacency); step t
  Poisson-samples only group t mod b, with rate q = b * B / N, so the expected batch is
  still B and an example takes part at most once in any b consecutive steps. With a
  column-normalised b-banded strategy (max column norm 1) the run is ceil(T / b)
  rounds of the Poisson-subsampled Gaussian with (q, sigma): jax-privacy's
  ``amplified_bandmf_event`` (Choquette-Choo et al. 2023). This is
  jax_privacy.batch_selection.CyclicPoissonSampling with PartitionType.INDEPENDENT,
  drawn per step from (seed, t) instead of one sequential generator, so that any
  step's batch can be drawn directly (resume, several hosts). b = 1 draws Poisson's
  batches exactly.

The draw for step t depends only on (seed, t): a resumed run draws the same batches
without saving sampler state, and the data-order stream is independent of the noise.
The seed is the run's secret sampling seed (privacy/mechanism_secret.py), never
config.seed: whoever knows it knows which examples were in each batch, which removes
the amplification by subsampling that the accountant relies on. It is kept out of
reprs and comparisons; a batch selection built without one (seed=None) can account
but not draw.

Batches are padded to a static capacity with a mask so that the jitted step compiles
once; a Poisson batch larger than the capacity is split into several chunks
(``pad_chunks``; never truncated, which would change the mechanism).

Usage::

  selection = SAMPLERS['poisson'](dataset_size=50_000, expected_batch_size=4096,
                                  seed=secret.sampling_seed)
  indices = selection.indices(step)
  event = selection.dp_event(noise_multiplier=10.0, steps=875)
"""
import dataclasses
import functools
import math

import dp_accounting
import numpy as np

from image_classification import registry

ADD_OR_REMOVE_ONE = 'add_or_remove_one'
REPLACE_ONE = 'replace_one'

_SAMPLER_STREAM = 0x5A3D
_GROUP_STREAM = 0x6B0A


def _rng(seed, step: int) -> np.random.Generator:
  if seed is None:
    raise ValueError('this batch selection has no seed: it can account, not draw')
  return np.random.default_rng([seed, _SAMPLER_STREAM, step])


def _poisson_capacity(expected_batch_size: int, dataset_size: int,
                      multiple_of: int) -> int:
  """B plus about six standard deviations of the Binomial(N, B / N) size (overflow
  probability below 1e-9), rounded up to ``multiple_of`` (devices x micro-batch)."""
  q = expected_batch_size / dataset_size
  std = math.sqrt(dataset_size * q * (1.0 - q))
  size = min(dataset_size, int(math.ceil(expected_batch_size + 6.0 * std + 1)))
  return _round_up(size, multiple_of)


def _round_up(size: int, multiple_of: int) -> int:
  return int(math.ceil(size / multiple_of) * multiple_of)


def _poisson_event(rate: float, noise_multiplier: float, steps: int):
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


# The config's choices of privacy.sampling (cyclic Poisson comes with BandMF). A new
# batch selection: a class in its own module, decorated @SAMPLERS.register('name').
SAMPLERS = registry.Registry('batch selection')


@dataclasses.dataclass(frozen=True)
class _Subsampling:
  """N examples, an expected (public) batch size B and the secret seed of the draws."""
  dataset_size: int
  expected_batch_size: int
  # Secret: kept out of reprs, logs and comparisons; keyword-only.
  seed: int | None = dataclasses.field(default=None, repr=False, compare=False,
                                       kw_only=True)

  @property
  def sampling_rate(self) -> float:
    return self.expected_batch_size / self.dataset_size


@SAMPLERS.register('poisson')
@dataclasses.dataclass(frozen=True)
class PoissonSampling(_Subsampling):
  """Each example joins each step's batch independently with probability B / N."""

  neighboring_relation = ADD_OR_REMOVE_ONE

  def indices(self, step: int) -> np.ndarray:
    """The training indices of step ``step`` (sorted, distinct)."""
    rng = _rng(self.seed, step)
    return np.flatnonzero(rng.random(self.dataset_size) < self.sampling_rate)

  def capacity(self, multiple_of: int) -> int:
    """Static padded batch size (see ``_poisson_capacity``)."""
    return _poisson_capacity(self.expected_batch_size, self.dataset_size, multiple_of)

  def dp_event(self, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    return _poisson_event(self.sampling_rate, noise_multiplier, steps)

  def describe(self) -> str:
    return (f'Poisson sampling: each of the N = {self.dataset_size} examples joins '
            f'each batch independently with probability q = B/N = '
            f'{self.sampling_rate:.6g} (expected batch B = {self.expected_batch_size}); '
            'add/remove-one adjacency')


@SAMPLERS.register('fixed')
@dataclasses.dataclass(frozen=True)
class FixedSizeSampling(_Subsampling):
  """Exactly B distinct examples, uniformly without replacement, fresh every step."""

  neighboring_relation = REPLACE_ONE

  def indices(self, step: int) -> np.ndarray:
    """The training indices of step ``step`` (sorted, distinct, exactly B)."""
    rng = _rng(self.seed, step)
    return np.sort(rng.choice(self.dataset_size, self.expected_batch_size, replace=False))

  def capacity(self, multiple_of: int) -> int:
    """B rounded up to ``multiple_of``: the size never varies."""
    return _round_up(self.expected_batch_size, multiple_of)

  def dp_event(self, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    # Replace-one moves the clipped sum by up to 2C: the accountant sees sigma / 2.
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(
            self.dataset_size, self.expected_batch_size,
            dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)), steps)

  def describe(self) -> str:
    return (f'fixed-size batches: exactly B = {self.expected_batch_size} distinct '
            f'examples of N = {self.dataset_size}, drawn uniformly without replacement '
            'at every step; replace-one adjacency (sensitivity 2C)')


@dataclasses.dataclass(frozen=True)
class CyclicPoissonSampling(_Subsampling):
  """BandMF's: b fixed random groups; step t Poisson-samples group t mod b at b B / N."""
  num_bands: int

  neighboring_relation = ADD_OR_REMOVE_ONE

  @property
  def sampling_rate(self) -> float:
    """Probability that an ELIGIBLE example (one of step t's group) joins the batch."""
    return self.num_bands * self.expected_batch_size / self.dataset_size

  @functools.cached_property
  def groups(self) -> np.ndarray:
    """The group (0..b-1) of every example: fixed for the run, secret like the seed."""
    rng = np.random.default_rng([self.seed, _GROUP_STREAM, self.num_bands])
    return rng.integers(self.num_bands, size=self.dataset_size)

  def indices(self, step: int) -> np.ndarray:
    """The training indices of step ``step`` (sorted, distinct, all of group t mod b)."""
    picked = _rng(self.seed, step).random(self.dataset_size) < self.sampling_rate
    if self.num_bands > 1:
      picked &= self.groups == step % self.num_bands
    return np.flatnonzero(picked)

  def capacity(self, multiple_of: int) -> int:
    """As Poisson's for the expected batch B (the overflow, if any, is split)."""
    return _poisson_capacity(self.expected_batch_size, self.dataset_size, multiple_of)

  def dp_event(self, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    from jax_privacy.experimental import accounting as jp_accounting  # pylint: disable=g-import-not-at-top
    return jp_accounting.amplified_bandmf_event(
        noise_multiplier, steps, num_bands=self.num_bands,
        sampling_prob=self.sampling_rate)

  def describe(self) -> str:
    return (f'each example belongs to one of b = {self.num_bands} groups (drawn '
            f'independently per example) and can be sampled only at steps t with '
            f't mod b = its group, with rate q = b*B/N = {self.sampling_rate:.6g}')


def pad_chunks(indices: np.ndarray, capacity: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Splits ``indices`` into chunks of ``capacity`` padded slots: (indices, mask).

  Padding slots point at index 0 and have mask False; they contribute nothing. An empty
  batch gives one all-padding chunk (the step still adds noise: the mechanism runs).
  """
  chunks = []
  n = len(indices)
  for start in range(0, max(n, 1), capacity):
    part = indices[start:start + capacity]
    padded = np.zeros(capacity, dtype=np.int64)
    padded[:len(part)] = part
    mask = np.zeros(capacity, dtype=bool)
    mask[:len(part)] = True
    chunks.append((padded, mask))
  return chunks
