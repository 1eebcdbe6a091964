"""Dry-run stand-ins for tfds datasets, from the published facts of their specs.

A dry run needs only the size of the training set (for the privacy plan) and the
shape of one image (to build the model); it must not download or decode anything.
``dry_run_splits(config.data)`` gives a ``DatasetSplits`` whose sources know their
size and shape but hold no pixels, for datasets that would be read through tfds (their
specs in datasets.py state the published split sizes). Where the data is cheap and
local (``digits``, or ``config.data.path`` set) it returns None and the caller loads
the real files, which also checks that they are there.

These numbers are the published sizes of the standard splits, not statistics of the
private data.
"""
import dataclasses

import ml_collections
import numpy as np

from image_classification.data import base
from image_classification.data import datasets


@dataclasses.dataclass(frozen=True)
class ShapeOnlySource:
  """An ImageSource that knows its size and image shape but holds no images."""
  name: str
  size: int
  shape: tuple[int, int, int]
  holds_no_images = True

  @property
  def num_examples(self) -> int:
    return self.size

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.shape

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    del indices, step
    raise base.DataError(
        f'{self.name}: this is a dry-run stand-in with no images (only the '
        'published size and shape); load the dataset to train')


def image_shape(name: str, image_size: int = 0) -> tuple[int, int, int]:
  """The shape of one image of ``name`` as the loaders return it (image_size x
  image_size when ``image_size`` > 0: every loader resizes to it, sources.py).

  Raises:
    DataError: ``name``'s spec states no image shape (the files decide), or its
      images vary in size and ``image_size`` is not set.
  """
  spec = datasets.DATASETS.get(name)
  if spec is None or spec.image_shape is None:
    raise base.DataError(
        f'{name!r} has no published image shape; known: '
        f'{sorted(datasets.names(lambda s: s.image_shape))}')
  height, width, channels = spec.image_shape
  if image_size > 0:
    return (image_size, image_size, channels)
  if height == 0:
    raise base.DataError(
        f'{name} images have different sizes: set config.data.image_size (e.g. 224)')
  return (height, width, channels)


def shape_only_splits(data_config: ml_collections.ConfigDict) -> base.DatasetSplits:
  """Stand-in splits of the tfds dataset ``data_config.name``.

  Honours max_train_examples / max_test_examples as the real loader does.
  """
  name = data_config.name
  shape = image_shape(name, data_config.image_size or 0)
  spec = datasets.get(name)

  def size(total, limit):
    return min(total, limit) if limit and limit > 0 else total

  return spec.make_splits(
      ShapeOnlySource(
          name, size(spec.num_train, data_config.max_train_examples), shape),
      ShapeOnlySource(
          name, size(spec.num_test, data_config.max_test_examples), shape))


def dry_run_splits(
    data_config: ml_collections.ConfigDict) -> base.DatasetSplits | None:
  """What a dry run should use instead of loading data, or None to load it.

  None when the data is local and cheap to open (``digits``; any dataset with
  ``config.data.path`` set, so that a dry run still checks the files), or when the
  dataset is not read through tfds (its loader then reports what is missing).
  Otherwise the shape-only splits: a dry run never downloads or decodes a tfds
  dataset.
  """
  spec = datasets.DATASETS.get(data_config.name)
  if spec is None or spec.tfds_name is None or data_config.path:
    return None
  return shape_only_splits(data_config)
