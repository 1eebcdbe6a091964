"""The canaries of the one-run audit: which training examples become canaries, their
wrong labels, their membership bits, and the training split that holds the included
ones.

``prepare`` takes m examples OUT of the training split, gives each a fixed random
wrong label (uniform over the other classes, so a model predicts it essentially only
by memorising the canary) and a membership bit (probability 1/2), and puts back only
the included canaries, under their wrong labels. Excluded canaries are used nowhere
in training. The returned training split is what the run trains on and what the
accountant must count: N = n - m + (number included). The test split is untouched.

Randomness: numpy streams from SeedSequence([seed, tag]), with tags distinct from
each other and from the sampler's ([seed, 0x5A3D, step]); the JAX keys (noise, init)
come from another generator. So the draws are reproducible from the seed, independent
of the training streams, and training sees the bits only through the data set.

No pixels are read before scoring: the training split is a relabelled view of the
original one, so ``prepare`` is cheap for any dataset and works on dry-run stand-ins.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from image_classification.audit import statistics
from image_classification.data import base

# Stream tag for choosing which training examples become canaries and their wrong
# labels; distinct from the membership tag (statistics.py) and from the sampler's.
_POOL_STREAM = 0x504F4F4C  # 'POOL'


@dataclasses.dataclass(frozen=True)
class RelabelledSource:
  """A view of an ImageSource: a subset of its examples, some relabelled.

  Example i is ``source`` example indices[i] with label (label + shifts[i]) mod
  num_classes. Reads ``source`` on demand, so large on-disk splits are never
  loaded whole.
  """
  source: base.ImageSource
  indices: np.ndarray  # [N] int64, distinct positions in source.
  shifts: np.ndarray  # [N] int32; 0 keeps the label.
  num_classes: int

  def __post_init__(self):
    if self.indices.ndim != 1 or self.shifts.shape != self.indices.shape:
      raise ValueError(f'indices {self.indices.shape} and shifts {self.shifts.shape} '
                       'must be 1-D arrays of the same length')

  @property
  def num_examples(self) -> int:
    return int(self.indices.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.source.image_shape

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
      raise IndexError(f'indices outside [0, {self.num_examples})')
    images, labels = self.source.get(self.indices[indices], step=step)
    labels = (np.asarray(labels, np.int32) + self.shifts[indices]) % self.num_classes
    return images, labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class CanarySet:
  """The canaries ``prepare`` drew, all fixed before training.

  Their images are read from ``source`` only when needed (``canaries()``).

  Attributes:
    source: the original training split (before canaries were taken out).
    source_indices: [m] distinct positions of the canaries in ``source``.
    label_shifts: [m] in [1, num_classes): canary label = (true label + shift)
      mod num_classes, never the true label.
    included: [m] bool membership bits; True canaries are in the training split.
    num_classes: number of classes.
  """
  source: base.ImageSource
  source_indices: np.ndarray
  label_shifts: np.ndarray
  included: np.ndarray
  num_classes: int

  @property
  def num_canaries(self) -> int:
    return int(self.included.shape[0])

  @property
  def num_included(self) -> int:
    return int(self.included.sum())

  @property
  def num_clean_train(self) -> int:
    """n - m: training examples that are not canaries."""
    return int(self.source.num_examples) - self.num_canaries

  @property
  def train_size(self) -> int:
    """N: the size of the training split built by ``prepare``."""
    return self.num_clean_train + self.num_included

  def canaries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [m, H, W, C], canary labels [m] int32, true labels [m] int32)."""
    images, true_labels = self.source.get(self.source_indices)
    true_labels = np.asarray(true_labels, np.int32)
    if true_labels.size and (true_labels.min() < 0
                             or true_labels.max() >= self.num_classes):
      raise ValueError(f'canary source labels must lie in [0, {self.num_classes})')
    labels = ((true_labels + self.label_shifts) % self.num_classes).astype(np.int32)
    return np.asarray(images), labels, true_labels


def canary_draws(num_examples: int, num_canaries: int, num_classes: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The audit's random choices, all fixed before training.

  Args:
    num_examples: n, the size of the training split canaries are taken from.
    num_canaries: m <= n.
    num_classes: C >= 2.
    seed: a non-negative integer (the run's config.seed).

  Returns:
    (source_indices [m] distinct in [0, n), label_shifts [m] uniform in
     [1, C), included [m] bool with P[True] = 1/2). Positions and shifts come from
    SeedSequence([seed, 'POOL']); the bits from statistics.make_canary_membership,
    i.e. SeedSequence([seed, 'MEMB']). Neither is a stream the trainer uses.
  """
  if num_classes < 2:
    raise ValueError(f'need >= 2 classes to mislabel, got {num_classes}')
  rng = statistics.stream(seed, _POOL_STREAM)
  source_indices = rng.choice(num_examples, size=num_canaries, replace=False)
  label_shifts = rng.integers(1, num_classes, size=num_canaries).astype(np.int32)
  included = statistics.make_canary_membership(num_canaries, seed)
  return source_indices.astype(np.int64), label_shifts, included


def prepare(dataset: base.DatasetSplits, num_canaries: int, seed: int
            ) -> tuple[base.DatasetSplits, CanarySet]:
  """The audited splits: clean training examples plus the included canaries.

  Args:
    dataset: the loaded splits.
    num_canaries: m, in [2, n - 1] for a training split of n examples.
    seed: a non-negative integer (the run's config.seed).

  Returns:
    (dataset with the audited training split of N = n - m + (bits set) examples,
     the CanarySet). N is the dataset size the privacy plan must be made with.

  Raises:
    ValueError: m outside [2, n - 1], or fewer than 2 classes.
  """
  train = dataset.train
  n, m = int(train.num_examples), int(num_canaries)
  if not 2 <= m < n:
    raise ValueError(f'num_canaries={m} must be in [2, {n - 1}] for a training split '
                     f'of {n} examples')
  source_indices, shifts, included = canary_draws(n, m, dataset.num_classes, seed)
  is_canary = np.zeros(n, bool)
  is_canary[source_indices] = True
  clean = np.flatnonzero(~is_canary)
  indices = np.concatenate([clean, source_indices[included]])
  all_shifts = np.concatenate([np.zeros(clean.shape[0], np.int32), shifts[included]])
  new_train = RelabelledSource(train, indices, all_shifts, int(dataset.num_classes))
  canaries = CanarySet(source=train, source_indices=source_indices, label_shifts=shifts,
                       included=included, num_classes=int(dataset.num_classes))
  return dataclasses.replace(dataset, train=new_train), canaries
