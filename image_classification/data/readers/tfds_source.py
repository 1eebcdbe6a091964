"""Datasets through TensorFlow Datasets (tfds), read with random access.

tfds reads a prepared dataset in the array_record format without TensorFlow
(``builder.as_data_source``): records are fetched by index and images decoded with
Pillow or OpenCV on the host. Small datasets are read once into host memory
(``load_in_memory``); ImageNet stays on disk and is decoded, cropped and resized per
example when the sampler asks for it (``load_random_access``).

Preparing a dataset (download + encode into array_record) is tfds's own job and needs
TensorFlow for image encoding; reading an array_record copy does not. A dataset that
was prepared in tfds's default tfrecord format has no random access: small datasets
are then read through TensorFlow when it is installed.

tensorflow_datasets is imported inside functions only, so importing this module (and
``image_classification``) stays light.
"""
import os
from typing import Any, Sequence

import numpy as np

from image_classification.data import base
from image_classification.data import datasets
from image_classification.data import fingerprint as fingerprint_lib
from image_classification.input import on_disk
from image_classification.data import record_split

CROP_PADDING = on_disk.CROP_PADDING
# Records per batched read when a split is loaded into memory.
READ_CHUNK = 1024


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise base.DataError(
        'reading a dataset through tfds needs tensorflow_datasets: pip install '
        'tensorflow-datasets array_record, or set config.data.path to local files'
    ) from e
  return tfds


def manual_dir(builder):
  """Where tfds looks for manually downloaded files: <data_dir>/downloads/manual."""
  return builder.data_dir_root / 'downloads' / 'manual'


def _spec(name: str) -> datasets.DatasetSpec:
  """The spec of dataset ``name``, which must be read through tfds."""
  spec = datasets.DATASETS.get(name)
  if spec is None or spec.tfds_name is None:
    raise base.DataError(
        f'{name!r} is not a tfds dataset this platform reads; choose one of '
        f'{datasets.names(lambda s: s.tfds_name)}')
  return spec


def _builder(name: str, data_dir: str):
  """The tfds builder of dataset ``name``, preparing in the array_record format."""
  tfds_name = _spec(name).tfds_name
  tfds = _import_tfds()
  return tfds.builder(tfds_name, data_dir=data_dir or None, file_format='array_record')


def _prepare(builder, name: str, download: bool):
  """Downloads and prepares ``name`` unless it is prepared already."""
  if builder.is_prepared():
    return
  if not download:
    raise base.DataError(
        f'tfds dataset {name} is not prepared in {builder.data_dir}; set '
        'config.data.tfds_data_dir to the folder that holds it')
  tfds = _import_tfds()
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        # Build locally: the prepared copies on GCS are tfrecord, without random
        # access.
        try_download_gcs=False))
  except Exception as e:  # pylint: disable=broad-except
    missing = _missing_manual_files(builder, name)
    if missing:
      raise base.DataError(
          f'tfds cannot download {name}: put {", ".join(_spec(name).manual_files)} in '
          f'{manual_dir(builder)} (tfds manual_dir under data_dir '
          f'{builder.data_dir_root}; missing: {", ".join(missing)}), then run '
          'again. Set config.data.tfds_data_dir to use another data_dir.') from e
    if isinstance(e, ImportError):
      raise base.DataError(
          f'tfds could not prepare {name} in {builder.data_dir}: {e}. Preparing '
          'needs TensorFlow (pip install tensorflow-cpu importlib_resources); or '
          f'prepare it elsewhere with `tfds build {name} --file_format=array_record '
          '--data_dir=DIR` and set config.data.tfds_data_dir=DIR; for '
          f'{", ".join(datasets.names(lambda s: s.tfds_name and s.local_format))} '
          'you can also set config.data.path to the original files') from e
    raise base.DataError(
        f'tfds could not download and prepare {name} in {builder.data_dir}: '
        f'{type(e).__name__}: {e}') from e


def _missing_manual_files(builder, name: str) -> list[str]:
  return [f for f in _spec(name).manual_files
          if not (manual_dir(builder) / f).exists()]


def _split(name: str, train: bool) -> str:
  return _spec(name).tfds_splits[0 if train else 1]


def load_in_memory(name: str, train: bool, data_dir: str = '',
                   download: bool = True) -> base.ArraySource:
  """Reads a whole (small) tfds split into host memory."""
  builder = _builder(name, data_dir)
  _prepare(builder, name, download)
  split = _split(name, train)
  try:
    records = builder.as_data_source(split=split)
  except NotImplementedError:
    return _load_with_tensorflow(builder, name, split)
  num = len(records)
  if not num:
    raise base.DataError(f'tfds split {name}/{split} in {builder.data_dir} is empty')
  first = _image(records[0], name)
  images = np.empty((num,) + first.shape, np.uint8)
  labels = np.empty((num,), np.int32)
  for start in range(0, num, READ_CHUNK):
    indices = list(range(start, min(num, start + READ_CHUNK)))
    for i, record in zip(indices, read_records(records, indices)):
      image = _image(record, name)
      if image.shape != first.shape:
        raise base.DataError(
            f'{name}/{split} example {i} has shape {image.shape}, the first '
            f'{first.shape}')
      images[i] = image
      labels[i] = record['label']
  return base.ArraySource(images, labels)


def read_records(records: Sequence[Any], indices: list[int]) -> Sequence[Any]:
  """Reads records by index, in one batched (parallel) read where supported."""
  try:
    return records.__getitems__(indices)
  except (AttributeError, TypeError):
    # tfds.testing.mock_data's sources (and plain sequences) lack batched reads.
    return [records[i] for i in indices]


def _image(record: dict[str, Any], name: str) -> np.ndarray:
  image = np.asarray(record['image'])
  if image.dtype != np.uint8 or image.ndim != 3:
    raise base.DataError(
        f'{name}: expected decoded uint8 [H, W, C] images, got {image.dtype} '
        f'{image.shape}')
  return image


def _load_with_tensorflow(builder, name: str, split: str) -> base.ArraySource:
  """Reads a tfrecord-prepared split (no random access) through TensorFlow."""
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise base.DataError(
        f'{name} is prepared in {builder.data_dir} as tfrecord, which only '
        'TensorFlow can read, and TensorFlow is not installed. Either pip install '
        f'tensorflow-cpu, or prepare an array_record copy with `tfds build {name} '
        '--file_format=array_record --data_dir=DIR` and set '
        'config.data.tfds_data_dir=DIR') from e
  tfds = _import_tfds()
  images, labels = tfds.as_numpy(
      builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
  return base.ArraySource(np.asarray(images, np.uint8), np.asarray(labels, np.int32))


def load_random_access(name: str, train: bool, data_dir: str = '', *,
                       image_size: int, random_resized_crop: bool = False,
                       seed: int = 0, download: bool = True) -> 'CroppingSource':
  """A split that stays on disk; images are decoded and resized when read.

  Training examples get an Inception-style random-resized crop when
  ``random_resized_crop``; otherwise (and always for evaluation) a centre crop.
  """
  if image_size <= 0:
    raise base.DataError(
        f'{name} images have different sizes: set config.data.image_size (e.g. 224)')
  builder = _builder(name, data_dir)
  _prepare(builder, name, download)
  split = _split(name, train)
  try:
    records = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise base.DataError(
        f'{name} is prepared in {builder.data_dir} as tfrecord, which has no random '
        f'access; prepare an array_record copy with `tfds build {name} '
        '--file_format=array_record --data_dir=DIR` and set '
        'config.data.tfds_data_dir=DIR') from e
  channels = builder.info.features['image'].shape[-1] or 3
  return CroppingSource(
      records, image_size=image_size, channels=channels,
      random_resized_crop=train and random_resized_crop, seed=seed, private=train)


def record_id(record: dict) -> bytes:
  """A tfds record's stable id: its ``file_name`` feature where it has one (ImageNet's
  'n01440764_10026.JPEG'), else the content hash of its decoded image and label."""
  name = record.get('file_name')
  if name is not None and len(name):
    return b'file_name:' + (name if isinstance(name, bytes) else str(name).encode())
  return record_split.content_id(np.asarray(record['image']), record['label'])


class CroppingSource:
  """Random access to records {'image': uint8 [H, W, C], 'label'} of any size.

  Each ``get`` decodes the requested records, crops and resizes them to
  ``image_size`` x ``image_size`` on the host (``on_disk.HostCrop``). The random crop
  of an example read at training step t is drawn from (seed, t, the record's stable
  id) alone (``record_id``: its file_name, else its content): public randomness that
  no other record changes (on_disk.py says why the index would not do), and a resumed
  run recomputes a step with exactly the crops the interrupted run used. ``read_one`` reads a single
  record (what a worker process of input/input_pipeline.py calls); the records object
  must then be picklable (tfds's array_record data sources are).
  """

  def __init__(self, records: Sequence[dict[str, Any]], *, image_size: int,
               channels: int = 3, random_resized_crop: bool = False, seed: int = 0,
               private: bool = True):
    self.records = records
    self._channels = channels
    self.crop = on_disk.HostCrop(image_size, random_resized_crop=random_resized_crop,
                                 seed=int(seed))
    self._private = private

  def with_crop(self, crop: on_disk.HostCrop) -> 'CroppingSource':
    """The same records read with ``crop`` (the input benchmark adds a flip)."""
    source = CroppingSource(self.records, image_size=crop.image_size,
                            channels=self._channels, private=self._private)
    source.crop = crop
    return source

  @property
  def num_examples(self) -> int:
    return len(self.records)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.crop.image_size, self.crop.image_size, self._channels)

  def _example(self, record, index: int, step: int) -> tuple[np.ndarray, int]:
    del index  # the crop is keyed by the record, not by its position
    image = np.asarray(record['image'])
    if image.ndim == 2:
      image = image[..., None]
    return self.crop(image, step, record_id(record)), int(record['label'])

  def read_one(self, index: int, step: int = 0) -> tuple[np.ndarray, int]:
    index = int(index)
    try:
      record = self.records[index]
    except (OSError, ValueError, KeyError) as e:
      raise on_disk.read_failure(f'record {index}', e, self._private) from None
    return self._example(record, index, step)

  def record_ids(self, count: int | None = None) -> list[bytes]:
    """Stable identifiers of the first ``count`` records, from which a validation
    split is decided per record (data/record_split.py).

    A record's ``file_name`` feature where the dataset has one (ImageNet's
    'n01440764_10026.JPEG', unique within a split and the same in every preparation
    of the dataset), else the content hash of its decoded image and label. Never the
    crop that ``get`` returns, which depends on the step (and is itself keyed by this
    id). Cost: tfds's data source (without TensorFlow) decodes each
    image it reads, so this is one decoding pass over the split, once per run, and
    only with config.data.validation_fraction > 0.
    """
    n = self.num_examples if count is None else min(count, self.num_examples)
    ids = []
    for start in range(0, n, READ_CHUNK):
      indices = list(range(start, min(n, start + READ_CHUNK)))
      ids.extend(record_id(record) for record in read_records(self.records, indices))
    return ids

  def fingerprint(self) -> fingerprint_lib.Fingerprint:
    """N and the split's array_record files (name, size, the examples taken from
    each), where the records are a tfds data source: no record is read (reading them
    all would be a pass over the dataset). Other records (a list): their ids."""
    try:
      info, split = self.records.dataset_info, self.records.split
      instructions = info.splits[split].file_instructions
    except (AttributeError, KeyError, TypeError, ValueError):
      return fingerprint_lib.of_ids(self.num_examples, None, self.record_ids(),
                                    'record ids (file name or content)')
    parts = [f'{info.full_name}|{split}'.encode()]
    for f in instructions:
      try:
        size = os.path.getsize(f.filename)
      except OSError:
        size = -1
      parts.append(f'{os.path.basename(f.filename)}|{size}|{f.skip}|{f.take}|'
                   f'{f.examples_in_shard}'.encode())
    return fingerprint_lib.Fingerprint(self.num_examples, '', fingerprint_lib.digest(parts),
                                       'tfds files (name, size, examples)')

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    images = np.empty((len(indices),) + self.image_shape, np.uint8)
    labels = np.empty((len(indices),), np.int32)
    records = read_records(self.records, indices) if indices else []
    for row, (index, record) in enumerate(zip(indices, records)):
      images[row], labels[row] = self._example(record, index, step)
    return images, labels


# The host crops live in input/on_disk.py (shared with image folders read on disk).
center_crop_box = on_disk.center_crop_box
random_resized_crop_box = on_disk.random_resized_crop_box
crop_and_resize = on_disk.crop_and_resize
