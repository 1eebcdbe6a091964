"""A validation split held out of the training data, for model selection.

``hold_out(splits, fraction)`` removes about ``fraction`` of the training split, each
record by a keyed hash of its stable identifier (data/record_split.py: an image
file's relative path, a record's content hash, a tfds record's file name), with a
fixed public key: the split is the same for every ``config.seed`` and every resume,
and adding or removing one record moves no other record between the sides. The
training split that is left is the one DP-SGD samples from, so the privacy plan's N
is its size: the held-out examples are never trained on. Class balance is
approximate (binomial per class).

What this is and is not, for privacy: the validation examples are private data too.
Their accuracy is computed WITHOUT noise, so choosing hyperparameters or a checkpoint
on it spends privacy that the run's epsilon does not count (as any choice made on
private data does). Use it, not the test split, to tune; report the test accuracy of
the choice once.
"""
import dataclasses

import numpy as np

from image_classification.data import base
from image_classification.data import fingerprint as fingerprint_lib
from image_classification.data import record_split


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

  def record_ids(self, count: int | None = None):
    """The source's ids of the first ``count`` records (data/record_split.py)."""
    ids = record_split.source_ids(self.source)
    return [ids[i] for i in self.indices[:count]]

  def fingerprint(self) -> fingerprint_lib.Fingerprint:
    """The source's fingerprint and the indices kept (data/fingerprint.py)."""
    return fingerprint_lib.of(self.source).view(self.num_examples, self.indices, 'subset')

  def get(self, indices: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    # kwargs (e.g. the step of a source with random host-side reads) pass through.
    return self.source.get(self.indices[np.asarray(indices)], **kwargs)


def split_indices(ids, fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, validation indices), sorted, of records with identifiers ``ids``
  (record_split.source_ids): each record's side is decided by its id alone."""
  return record_split.split(ids, fraction, record_split.VALIDATION_KEY)


def _take(source, indices):
  if isinstance(source, base.ArraySource):
    return source.take(indices)  # a copy in host memory
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
    # A dry run's stand-in knows only its size: hold out round(fraction * n) (the
    # real, per-record count is binomial around it).
    n = splits.train.num_examples
    held = int(round(fraction * n))
    return (dataclasses.replace(splits, train=dataclasses.replace(
        splits.train, size=n - held)), dataclasses.replace(splits.train, size=held))
  train_idx, held_idx = split_indices(record_split.source_ids(splits.train), fraction)
  if not len(held_idx) or not len(train_idx):
    raise base.DataError(
        f'config.data.validation_fraction={fraction!r} leaves '
        f'{len(train_idx)} training and {len(held_idx)} validation examples of '
        f'{splits.train.num_examples}; choose a fraction that leaves both non-empty')
  return (dataclasses.replace(splits, train=_take(splits.train, train_idx)),
          _take(splits.train, held_idx))
