"""The canaries of the white-box gradient audit (config.audit.mode = 'gradient').

Canary j is a Dirac gradient: ``RAW_NORM_IN_C * C`` times the unit vector of one
coordinate of one trainable parameter (by default the largest one; the quickstart's
head kernel, where the real data's clipped sum per coordinate is about 3% of the
noise std: results/audit.md). m canaries get m distinct coordinates and a membership
bit each (probability 1/2). The included ones are appended to the training split as
ordinary examples, so that:

* the run's own batch selection samples them, at the run's rate, like any example;
* the accountant's N counts them: N = n + (number included);
* inside the step (training/canary_slots.py) each sampled canary's vector is clipped
  by the real clipping arithmetic and added to the clipped sum, and from there takes
  the real path: micro-batch scan, psum across devices, privatizer, normaliser,
  optimiser.

A canary slot is read as a placeholder image (zeros) with label ``-1 - j``; the step
masks it out of the model's clipped sum and adds the canary instead. Nothing about
the canaries is secret: their coordinates and bits come from numpy streams seeded by
``config.seed`` with tags of their own, independent of the sampler's stream and of
the JAX keys, so training sees the bits only through the data. Excluded canaries are
used nowhere in training.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from image_classification.audit import statistics
from image_classification.data import base
from image_classification.training import canary_slots

# A canary's norm before clipping, in units of C: a step that let through more than C
# (up to this) would add more than C; with exactly C a 2C clipping bug were invisible.
RAW_NORM_IN_C = 4.0

# Stream tag for the canaries' coordinates; distinct from the membership tag
# (statistics.py), the input audit's pool tag and the sampler's.
_COORDINATE_STREAM = 0x47524144  # 'GRAD'


@dataclasses.dataclass(frozen=True)
class CanarySlotSource:
  """The training split with the included canaries appended (an ImageSource).

  Index i < n is ``source`` example i; index n + p is the p-th included canary,
  read as a zero image and the label ``-1 - canary_ids[p]``.
  """
  source: base.ImageSource
  canary_ids: np.ndarray  # [number included] ids in [0, m), increasing

  @property
  def num_examples(self) -> int:
    return int(self.source.num_examples) + int(self.canary_ids.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.source.image_shape

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    n = int(self.source.num_examples)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
      raise IndexError(f'indices outside [0, {self.num_examples})')
    real = indices < n
    # Read at least one real example: it fixes the images' dtype for the placeholders.
    images, labels = self.source.get(indices[real] if real.any() else indices[:0] + 0,
                                     step=step)
    if not real.any():
      images = np.asarray(self.source.get(np.zeros(1, np.int64), step=step)[0])[:0]
    out_images = np.zeros((indices.size,) + tuple(self.image_shape),
                          np.asarray(images).dtype)
    out_labels = np.empty(indices.size, np.int32)
    out_images[real] = images
    out_labels[real] = labels
    out_labels[~real] = canary_slots.canary_label(self.canary_ids[indices[~real] - n])
    return out_images, out_labels


@dataclasses.dataclass(frozen=True)
class GradientCanarySet:
  """The m gradient canaries, all fixed before training.

  Attributes:
    parameter: path of the trainable parameter that carries them.
    coordinates: [m] distinct flat offsets in that parameter.
    included: [m] bool membership bits.
    raw_norm: the canaries' norm before clipping (RAW_NORM_IN_C * C).
    num_real: n, the real training examples (the split before canaries).
  """
  parameter: tuple
  coordinates: np.ndarray
  included: np.ndarray
  raw_norm: float
  num_real: int

  @property
  def num_canaries(self) -> int:
    return int(self.included.shape[0])

  @property
  def num_included(self) -> int:
    return int(self.included.sum())

  @property
  def train_size(self) -> int:
    """N: real examples plus included canaries, what the accountant counts."""
    return self.num_real + self.num_included

  def step_canaries(self) -> canary_slots.GradientCanaries:
    return canary_slots.GradientCanaries(self.parameter, self.coordinates,
                                         self.raw_norm)


def parameter_sizes(params) -> dict[tuple, int]:
  """{path: number of coordinates} of every parameter in a tree."""
  return {canary_slots.leaf_path(p): int(np.prod(np.shape(x)))
          for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def choose_parameter(params, name: str = '') -> tuple:
  """The parameter the canaries go in: ``name`` ('head/kernel'), or the largest one
  (the first in tree order among equals). Depends on the model's shapes only."""
  sizes = parameter_sizes(params)
  if name:
    path = tuple(name.split('/'))
    if path not in sizes:
      raise ValueError(f'no trainable parameter {name!r}; choose one of '
                       f'{sorted("/".join(p) for p in sizes)}')
    return path
  return max(sizes, key=lambda p: sizes[p])


def draw(num_canaries: int, num_coordinates: int, seed: int
         ) -> tuple[np.ndarray, np.ndarray]:
  """(coordinates [m] distinct in [0, num_coordinates), included [m] bool).

  Coordinates from SeedSequence([seed, 'GRAD']); bits from
  statistics.make_canary_membership, i.e. SeedSequence([seed, 'MEMB']), the same
  stream as the input audit's. Neither is a stream the trainer uses.
  """
  if not 2 <= num_canaries <= num_coordinates:
    raise ValueError(f'num_canaries={num_canaries} must be in [2, {num_coordinates}] '
                     '(one coordinate of the parameter per canary)')
  rng = statistics.stream(seed, _COORDINATE_STREAM)
  coordinates = rng.choice(num_coordinates, size=num_canaries, replace=False)
  included = statistics.make_canary_membership(num_canaries, seed)
  return coordinates.astype(np.int64), included


def with_canaries(dataset: base.DatasetSplits, included: np.ndarray
                  ) -> base.DatasetSplits:
  """The splits with the included canaries appended to the training split."""
  ids = np.flatnonzero(np.asarray(included, bool))
  return dataclasses.replace(dataset, train=CanarySlotSource(dataset.train, ids))
