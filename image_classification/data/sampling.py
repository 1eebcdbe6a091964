"""Batch samplers. Each step's batch is a fresh, independent draw from the training set:

- Poisson: every example joins independently with probability q = B / N, so the size
  varies around the expected batch size B. Accounted as the Poisson-subsampled Gaussian
  mechanism under add/remove-one adjacency.
- Fixed: exactly B distinct examples drawn uniformly without replacement, independently
  at every step. Accounted as sampling without replacement under replace-one adjacency.

- Cyclic Poisson (BandMF, num_bands = b > 1): every example is assigned once, for the
  whole run, to one of b groups, independently and uniformly (so the assignment of one
  example does not depend on the others: add/remove-one adjacency); step t Poisson-
  samples only group t mod b, with rate q = b * B / N, so the expected batch is still B
  and an example takes part at most once in any b consecutive steps. This is
  jax_privacy.batch_selection.CyclicPoissonSampling with PartitionType.INDEPENDENT,
  drawn per step from (seed, t) instead of from one sequential generator, so that any
  step's batch can be drawn directly (resume, several hosts). b = 1 is Poisson exactly
  (the same draws).

The draw for step t depends only on (seed, t): a resumed run draws the same batches
without saving sampler state, and the data-order stream is independent of the noise.
The seed is the run's secret sampling seed (privacy/mechanism_secret.py), never
config.seed: whoever knows it knows which examples were in each batch, which removes
the amplification by subsampling that the accountant relies on.
Batches are padded to a static capacity with a mask so that the jitted step compiles
once; a Poisson batch larger than the capacity is split into several chunks (never
truncated, which would change the mechanism).
"""
import dataclasses
import functools
import math

import numpy as np

_SAMPLER_STREAM = 0x5A3D
_GROUP_STREAM = 0x6B0A


@dataclasses.dataclass(frozen=True)
class Sampler:
  dataset_size: int
  expected_batch_size: int
  kind: str  # 'poisson' | 'fixed'
  seed: int = dataclasses.field(repr=False)  # secret: kept out of logs
  num_bands: int = 1  # b > 1: cyclic Poisson sampling over b groups (BandMF)

  @property
  def sampling_rate(self) -> float:
    """Probability that an eligible example joins a step's batch (all are eligible
    unless num_bands > 1)."""
    return self.num_bands * self.expected_batch_size / self.dataset_size

  @functools.cached_property
  def groups(self) -> np.ndarray:
    """The group (0..b-1) of every example: fixed for the run, secret like the seed."""
    rng = np.random.default_rng([self.seed, _GROUP_STREAM, self.num_bands])
    return rng.integers(self.num_bands, size=self.dataset_size)

  def indices(self, step: int) -> np.ndarray:
    """The training indices of step ``step`` (sorted, distinct)."""
    rng = np.random.default_rng([self.seed, _SAMPLER_STREAM, step])
    if self.kind == 'poisson':
      picked = rng.random(self.dataset_size) < self.sampling_rate
      if self.num_bands > 1:
        picked &= self.groups == step % self.num_bands
      return np.flatnonzero(picked)
    if self.num_bands > 1:
      raise ValueError('cyclic sampling (num_bands > 1) needs kind=poisson')
    if self.kind == 'fixed':
      return np.sort(rng.choice(self.dataset_size, self.expected_batch_size, replace=False))
    raise ValueError(f'unknown sampler {self.kind!r}')


def batch_capacity(expected_batch_size: int, dataset_size: int, kind: str,
                   multiple_of: int) -> int:
  """Static padded batch size: B for fixed batches; for Poisson, B plus about six
  standard deviations of the binomial size (overflow probability below 1e-9), rounded
  up to ``multiple_of`` (devices x micro-batch)."""
  if kind == 'poisson':
    q = expected_batch_size / dataset_size
    std = math.sqrt(dataset_size * q * (1.0 - q))
    size = min(dataset_size, int(math.ceil(expected_batch_size + 6.0 * std + 1)))
  else:
    size = expected_batch_size
  return int(math.ceil(size / multiple_of) * multiple_of)


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
