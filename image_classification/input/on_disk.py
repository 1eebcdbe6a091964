"""Datasets that stay on disk: every read decodes, crops and resizes one example.

An on-disk source is an ``ImageSource`` whose ``read_one(index, step)`` returns one
example (uint8 [S, S, C], label) and whose ``get(indices, step)`` is that, in order,
for every index; it is picklable, so that worker processes can read with it
(input/input_pipeline.py). Two kinds:

* ``ImageFolderSource``: an image folder (``path/<split>/<class>/*.jpg|png``) read file
  by file, always as RGB (no pass over the headers to find gray folders);
* ``tfds_source.CroppingSource``: the records of a tfds array_record split (ImageNet).

What a read does to the decoded image is a ``HostCrop``: an Inception-style random
resized crop for training (``random_resized_crop``), else the padded centre crop
used for evaluation, then a bicubic resize to ``image_size`` x ``image_size``, and,
when ``random_flip`` (the input benchmark), a horizontal flip. In training the flip
stays on the device, one per augmult view (input/augmentation.py).

Determinism: the random crop (and flip) of a record read at training step ``step`` is
drawn from ``numpy.random.default_rng([seed, stream, step, h])`` alone, ``h`` a hash of
the record's stable id (its path relative to the dataset root, a tfds record's
file_name; data/record_split.py): public randomness that does not depend on which
other examples are read, in which order, by which process, or before or after a
restart, nor on the other records of the dataset. Keyed by the index instead, adding
one file would shift the index, and so the crop, of every file after it: with the
crops public, the neighbouring datasets' sums would differ in every shifted example
read at a step, not in the added one alone (docs/privacy.md, invariant 18).

Privacy: which examples a training step reads is secret. A read that fails raises a
``base.DataError`` that names neither the file nor the index on the private split
(``private=True``); the failing file is found with ``check_decodable``.
"""
import dataclasses
import hashlib
import math
import os

import numpy as np

from image_classification.data import base
from image_classification.data import fingerprint as fingerprint_lib

# Centre crop keeps image_size / (image_size + CROP_PADDING) of the shorter side
# (224 of 256 at image_size=224), as in the usual ImageNet evaluation.
CROP_PADDING = 32
CROP_STREAM = 0xC809  # the random-resized-crop stream: (seed, stream, step, record)


def center_crop_box(height: int, width: int, image_size: int,
                    crop_padding: int = CROP_PADDING) -> tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width) of the padded centre square crop."""
  size = int(image_size / (image_size + crop_padding) * min(height, width))
  size = max(1, size)
  return (height - size + 1) // 2, (width - size + 1) // 2, size, size


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
    max_attempts: int = 10) -> tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width) of an Inception-style random crop.

  Samples a crop covering a uniform fraction of the area in ``area_range`` with a
  log-uniform aspect ratio; falls back to the full centre square after
  ``max_attempts`` misses.
  """
  area = height * width
  log_ratio = (math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1]))
  for _ in range(max_attempts):
    target_area = area * rng.uniform(*area_range)
    ratio = math.exp(rng.uniform(*log_ratio))
    crop_width = int(round(math.sqrt(target_area * ratio)))
    crop_height = int(round(math.sqrt(target_area / ratio)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      return top, left, crop_height, crop_width
  size = min(height, width)
  return (height - size) // 2, (width - size) // 2, size, size


def crop_and_resize(image, box: tuple[int, int, int, int], image_size: int) -> np.ndarray:
  """Crops uint8 [H, W, C] (or a PIL image) to ``box``, resizes it (bicubic) to a
  square; returns uint8 [S, S, C]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  top, left, crop_height, crop_width = box
  if isinstance(image, np.ndarray):
    channels = image.shape[-1]
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
  else:
    picture = image
  picture = picture.resize(
      (image_size, image_size), Image.Resampling.BICUBIC,
      box=(left, top, left + crop_width, top + crop_height))
  array = np.asarray(picture, dtype=np.uint8)
  return array[..., None] if array.ndim == 2 else array


@dataclasses.dataclass(frozen=True)
class HostCrop:
  """What one read does to a decoded image (see the module docstring)."""
  image_size: int
  random_resized_crop: bool = False
  random_flip: bool = False
  seed: int = 0

  def __call__(self, image, step: int, record_id: bytes) -> np.ndarray:
    """``image``: uint8 [H, W, C] or a decoded PIL image -> uint8 [S, S, C], the crop of
    record ``record_id`` (its stable id) read at ``step``."""
    if isinstance(image, np.ndarray):
      height, width = image.shape[:2]
    else:
      width, height = image.size
    rng = None
    if self.random_resized_crop or self.random_flip:
      rng = np.random.default_rng([int(self.seed), CROP_STREAM, int(step),
                                   record_number(record_id)])
    if self.random_resized_crop:
      box = random_resized_crop_box(height, width, rng)
    else:
      box = center_crop_box(height, width, self.image_size)
    array = crop_and_resize(image, box, self.image_size)
    if self.random_flip and rng.random() < 0.5:
      array = np.ascontiguousarray(array[:, ::-1])
    return array


def record_number(record_id: bytes) -> int:
  """A record's stable id as a 128-bit integer (SHA-256, truncated), for seeding."""
  return int.from_bytes(hashlib.sha256(bytes(record_id)).digest()[:16], 'little')


class ReadError(base.DataError):
  """An example could not be read; on the private split the message names no file."""


def read_failure(what: str, error: Exception, private: bool) -> ReadError:
  """The error for a failed read of ``what`` (a file name or a record number).

  On the private training split the message must not say which example failed: that
  it was read at this step is secret (it tells the batch's composition).
  """
  if private:
    return ReadError(
        'an example of the private training split could not be decoded '
        f'({type(error).__name__}). Which one is not said: the examples a step reads '
        'are secret. Find it with image_classification.input.on_disk.check_decodable '
        '(it decodes every file, in order), then fix or remove it')
  return ReadError(f'cannot read {what}: {type(error).__name__}: {error}')


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolderSource:
  """The images of one split of an image folder, decoded and cropped when read.

  ``root``: the split's folder; ``files``: paths relative to it (a numpy bytes array,
  compact to send to worker processes); ``labels``: int32, one per file.
  ``private``: the training split (errors then name no file). ``id_prefix``: the
  split folder relative to the dataset root ('train/'): a record's id is its path
  relative to that root, as for image folders read into memory
  (data/record_split.py).
  """
  root: str
  files: np.ndarray
  labels: np.ndarray
  crop: HostCrop
  private: bool = True
  id_prefix: bytes = b''

  def __post_init__(self):
    if self.labels.shape != (len(self.files),):
      raise base.DataError(f'{len(self.files)} files but {self.labels.shape} labels')

  @property
  def num_examples(self) -> int:
    return len(self.files)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.crop.image_size, self.crop.image_size, 3)

  def with_crop(self, crop: HostCrop) -> 'ImageFolderSource':
    return dataclasses.replace(self, crop=crop)

  def record_ids(self, count: int | None = None) -> list[bytes]:
    """Stable ids of the first ``count`` records: their '/'-separated paths relative
    to the dataset root (no file is read)."""
    return [self.record_id(i) for i in range(len(self.files[:count]))]

  def record_id(self, index: int) -> bytes:
    """Record ``index``'s stable id: its '/'-separated path relative to the root."""
    return self.id_prefix + bytes(self.files[index]).replace(os.sep.encode(), b'/')

  def fingerprint(self) -> fingerprint_lib.Fingerprint:
    """N, the labels and the files' paths relative to the dataset root, in index
    order (data/fingerprint.py; no file is read)."""
    return fingerprint_lib.of_ids(self.num_examples, self.labels, self.record_ids(),
                                  'file paths')

  def file(self, index: int) -> str:
    return os.path.join(self.root, os.fsdecode(self.files[index]))

  def read_one(self, index: int, step: int = 0) -> tuple[np.ndarray, int]:
    """Example ``index`` as read at ``step``: (uint8 [S, S, 3], label)."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    index = int(index)
    path = self.file(index)
    try:
      with Image.open(path) as picture:
        picture = picture.convert('RGB')
    except (OSError, ValueError, SyntaxError) as e:
      # Not chained: the cause's message names the file.
      raise read_failure(repr(path), e, self.private) from None
    return self.crop(picture, step, self.record_id(index)), int(self.labels[index])

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return read_in_order(self, indices, step)


def read_in_order(source, indices: np.ndarray,
                  step: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """``source.read_one`` for every index, in order: (images [n, S, S, C], labels)."""
  indices = np.asarray(indices).reshape(-1)
  images = np.empty((len(indices),) + tuple(source.image_shape), np.uint8)
  labels = np.empty((len(indices),), np.int32)
  for row, index in enumerate(indices):
    images[row], labels[row] = source.read_one(int(index), step)
  return images, labels


def check_decodable(source: ImageFolderSource) -> list[str]:
  """Every file of ``source`` that fails to decode (all are read, in file order)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  failed = []
  for index in range(source.num_examples):
    try:
      with Image.open(source.file(index)) as picture:
        picture.convert('RGB')
    except (OSError, ValueError, SyntaxError):
      failed.append(source.file(index))
  return failed
