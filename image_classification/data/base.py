"""What every data source provides: random access to labelled images by index.

Random access is what Poisson subsampling needs: the sampler draws a set of indices
each step, and the source returns exactly those examples. Images come back as uint8
(or float32) arrays of shape [n, height, width, channels]; labels as int32 [n].
Preprocessing that uses no private statistics (fixed normalisation constants) happens
on device, see input/augmentation.py.
"""
import dataclasses
from typing import Protocol

import numpy as np
from image_classification import errors


class DataError(errors.UserError):
  """A dataset is missing or malformed; the message names the path and the layout."""


class ImageSource(Protocol):
  """Labelled images addressable by index."""

  @property
  def num_examples(self) -> int:
    ...

  @property
  def image_shape(self) -> tuple[int, int, int]:
    ...

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images [n, H, W, C], labels int32 [n]) for ``indices``.

    ``step``: the training step the examples are read for. A source whose reads are
    random (a random crop on the host) draws from (seed, step, record) only, so that a
    resumed run reads exactly what the uninterrupted run read.
    """
    ...


# What an ArraySource's record_ids are (see ArraySource).
IDS_FILE_PATHS = 'file paths'
IDS_CONTENT_AS_LOADED = 'content as loaded'


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """An ImageSource over arrays held in host memory.

  ``record_ids``: optional stable identifiers of the records (bytes, one per row),
  from which a held-out split is decided per record (data/record_split.py); None: the
  records' content identifies them. ``record_ids_kind`` says what they are:
  ``IDS_FILE_PATHS`` (an image folder's relative file paths) or
  ``IDS_CONTENT_AS_LOADED`` (the content ids of the records before
  ``config.data.image_size`` resized them, so that a split does not depend on the
  image size).
  """
  images: np.ndarray
  labels: np.ndarray
  record_ids: np.ndarray | None = dataclasses.field(default=None, compare=False)
  record_ids_kind: str = dataclasses.field(default=IDS_FILE_PATHS, compare=False)

  def __post_init__(self):
    if self.images.ndim != 4:
      raise DataError(
          f'images must have shape [n, height, width, channels], got {self.images.shape}')
    if self.labels.shape != (self.images.shape[0],):
      raise DataError(
          f'{self.images.shape[0]} images but labels of shape {self.labels.shape}')
    if self.record_ids_kind not in (IDS_FILE_PATHS, IDS_CONTENT_AS_LOADED):
      raise ValueError(f'record_ids_kind={self.record_ids_kind!r}: one of '
                       f'{IDS_FILE_PATHS!r}, {IDS_CONTENT_AS_LOADED!r}')
    if self.record_ids is not None and len(self.record_ids) != self.images.shape[0]:
      raise DataError(
          f'{self.images.shape[0]} images but {len(self.record_ids)} record ids')

  def take(self, indices: np.ndarray) -> 'ArraySource':
    """The records ``indices`` (a copy in host memory), with their ids."""
    indices = np.asarray(indices)
    return ArraySource(self.images[indices], self.labels[indices],
                       None if self.record_ids is None else self.record_ids[indices],
                       self.record_ids_kind)

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.images.shape[1:])

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    del step  # reads are deterministic
    indices = np.asarray(indices)
    return self.images[indices], self.labels[indices].astype(np.int32)


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
  """The private training split, the evaluation split and what describes them."""
  name: str
  train: ImageSource
  test: ImageSource
  # From the dataset's spec (datasets.py), class folders or config.data.num_classes,
  # never from the labels: the model's shape must not depend on the private data.
  num_classes: int
  # Fixed, public per-channel constants used to standardise images on device.
  mean: tuple[float, ...]
  std: tuple[float, ...]
  # Set when the evaluation split was carved out of the private training data: the
  # sentence privacy.md prints, since accuracy on it is released without noise.
  private_evaluation_note: str = ''
  # Public names of the classes, index = label ('' entries never; () when unknown).
  class_names: tuple[str, ...] = ()
