"""A validation split held out of the training data, for model selection.

``hold_out(splits, fraction)`` removes a stratified ``fraction`` of the training split
(at least one example of every class that has two or more) with a fixed seed, so the
split is the same for every ``config.seed`` and every resume. The training split that
is left is the one DP-SGD samples from, so the privacy plan's N is its size: the
held-out examples are never trained on.

What this is and is not, for privacy: the validation examples are private data too.
Their accuracy is computed WITHOUT noise, so choosing hyperparameters or a checkpoint
on it spends privacy that the run's epsilon does not count (as any choice made on
private data does). Use it, not the test split, to tune; report the test accuracy of
the choice once.
"""
import dataclasses

import numpy as np

from image_classification.data import base
from image_classification.data import stratified

SEED = 0x7A1D  # fixed: the held-out examples do not change with config.seed


@dataclasses.dataclass(frozen=True)
class Subset:
  """The examples ``indices`` of ``source``, read on demand."""
  source: base.ImageSource
  indices: np.ndarray

  @property
  def num_examples(self) -> int:
    return int(len(self.indices))

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.source.image_shape

  def get(self, indices: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    # kwargs (e.g. the step of a source with random host-side reads) pass through.
    return self.source.get(self.indices[np.asarray(indices)], **kwargs)


def _labels(source: base.ImageSource, chunk: int = 4096) -> np.ndarray:
  labels = getattr(source, 'labels', None)
  if labels is not None and len(labels) == source.num_examples:
    return np.asarray(labels)
  # No label array: read the labels through get(), a chunk at a time.
  return np.concatenate([source.get(np.arange(s, min(s + chunk, source.num_examples)))[1]
                         for s in range(0, source.num_examples, chunk)])


def split_indices(labels: np.ndarray, fraction: float, seed: int = SEED
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, validation indices), sorted; stratified by label, at least one
  example of every class of two or more held out."""
  return stratified.split(labels, fraction, seed, keep_one_each=True)


def _take(source, indices):
  if isinstance(source, base.ArraySource):
    images, labels = source.get(indices)  # a copy in host memory
    return base.ArraySource(images, labels)
  return Subset(source, indices)


def hold_out(splits: base.DatasetSplits, fraction: float
             ) -> tuple[base.DatasetSplits, base.ImageSource | None]:
  """(splits with the reduced training split, the validation source or None)."""
  if not fraction:
    return splits, None
  if not 0 < fraction < 1:
    raise base.DataError(f'config.data.validation_fraction={fraction!r}: must be in '
                         '[0, 1) (0: no validation split)')
  if getattr(splits.train, 'holds_no_images', False):
    # A dry run's stand-in knows only its size: hold out round(fraction * n) (the real
    # stratified count differs by at most one per class).
    n = splits.train.num_examples
    held = int(round(fraction * n))
    return (dataclasses.replace(splits, train=dataclasses.replace(
        splits.train, size=n - held)), dataclasses.replace(splits.train, size=held))
  train_idx, held_idx = split_indices(_labels(splits.train), fraction)
  if not len(held_idx) or not len(train_idx):
    raise base.DataError(
        f'config.data.validation_fraction={fraction!r} leaves '
        f'{len(train_idx)} training and {len(held_idx)} validation examples of '
        f'{splits.train.num_examples}; choose a fraction that leaves both non-empty')
  return (dataclasses.replace(splits, train=_take(splits.train, train_idx)),
          _take(splits.train, held_idx))
