"""Loads the dataset a config names: ``load_dataset(config.data) -> DatasetSplits``.

Where the data comes from is the dataset's spec (datasets.py):

* ``builtin`` (``digits``): scikit-learn's digits, shipped with the package.
* ``local_format`` and ``tfds_name`` (``mnist``, ``fashion_mnist``, ``cifar10``,
  ``cifar100``): the original files under ``config.data.path`` when it is set (read
  by ``LOCAL_READERS``, see local_files.py), else tfds.
* ``tfds_name`` only (``svhn_cropped``, ``imagenet2012``): tfds
  (``config.data.tfds_data_dir``). A ``random_access`` dataset (ImageNet) stays on
  disk and is cropped and resized to ``config.data.image_size`` on the host when read.
* ``local_format`` only (``image_folder``, ``npz``): ``config.data.path`` (required).
  An image folder is read into memory, or, with ``config.data.random_resized_crop``,
  left on disk and decoded and cropped when read (ImageNet-style).

On-disk sources are read by ``config.data.num_workers`` worker processes
(input/input_pipeline.py; -1: one per core); in-memory ones by the loading thread.

``config.data.image_size`` > 0 is honoured for every dataset: images held in memory
(digits, IDX, CIFAR files, npz, small tfds datasets) are resized to image_size x
image_size after loading, with the bilinear filter that image folders are read with
(``resize_in_memory``); image folders and random-access datasets resize while they
read. 0 keeps the native size. The dry run's shapes (catalog.py) agree.

Normalisation constants are the spec's fixed public numbers; they are never computed
from the private training data.
"""
import dataclasses

import ml_collections
import numpy as np

from image_classification import registry
from image_classification.data import base
from image_classification.data import datasets
from image_classification.data.readers import digits
from image_classification.data import fingerprint as fingerprint_lib
from image_classification.input import input_pipeline
from image_classification.data.readers import local_files
from image_classification.data import record_split
from image_classification.data.readers import tfds_source


# DatasetSpec.local_format -> reader of config.data.path (path, spec, data_config).
LOCAL_READERS = registry.Registry('on-disk format')


@LOCAL_READERS.register('cifar')
def _cifar(path, spec, _) -> local_files.LocalData:
  return local_files.load_cifar(path, spec.name)


@LOCAL_READERS.register('idx')
def _idx(path, spec, _) -> local_files.LocalData:
  return local_files.load_idx(path, spec.num_classes)


@LOCAL_READERS.register('image_folder')
def _image_folder(path, _, data_config) -> local_files.LocalData:
  """In memory, or on disk with random resized crops (config.data.random_resized_crop)."""
  if data_config.random_resized_crop:
    return local_files.load_image_folder_on_disk(path, data_config.image_size)
  return local_files.load_image_folder(path, data_config.image_size)


@LOCAL_READERS.register('npz')
def _npz(path, _, data_config) -> local_files.LocalData:
  return local_files.load_npz(path, data_config.num_classes or 0)


def load_dataset(data_config: ml_collections.ConfigDict) -> base.DatasetSplits:
  """Returns the train and test sources of ``data_config.name``."""
  name = data_config.name
  path = data_config.path or ''
  num_workers = input_pipeline.resolve_num_workers(data_config.num_workers)
  if name not in datasets.DATASETS:
    raise base.DataError(f'config.data.name={name!r} is not a known dataset; choose '
                         f'one of {datasets.names()}')
  spec = datasets.DATASETS[name]
  if path and spec.local_format is None:
    raise base.DataError(
        f'config.data.path={path!r} is set but {name} is not read from local files; '
        f'only {datasets.names(lambda s: s.local_format)} are. Leave config.data.path '
        'empty' + (' and use config.data.tfds_data_dir' if spec.tfds_only else ''))
  if spec.path_required and not path:
    raise base.DataError(
        f'config.data.name={name!r} reads local files: set config.data.path')

  if spec.builtin:
    splits = digits.load()
  elif path:
    splits = _load_local(spec, path, data_config)
  else:
    splits = _load_tfds(spec, data_config)
  # tfds splits are the published ones, whose classes the spec states; files a user
  # brings (and digits' split) have their labels checked too.
  check_classes(splits, data_config.num_classes or 0,
                check_labels=spec.builtin or bool(path))
  # On-disk splits are decoded by worker processes (input/input_pipeline.py).
  splits = dataclasses.replace(
      splits, train=input_pipeline.parallel(splits.train, num_workers),
      test=input_pipeline.parallel(splits.test, num_workers))
  return resize_in_memory(_truncate(splits, data_config),
                          data_config.image_size or 0)


def resize_in_memory(splits: base.DatasetSplits, image_size: int) -> base.DatasetSplits:
  """Both splits at ``image_size`` x ``image_size`` (0: unchanged).

  In-memory sources are resized image by image (PIL, bilinear, per channel; the
  aspect ratio is not kept, as in image folders); a source read on demand must
  already have that size (random-access tfds sources resize when they read).
  A resized source keeps its records' ids, and a source without ids gets the
  content ids of its records as loaded (``base.IDS_CONTENT_AS_LOADED``): a held-out
  split taken afterwards (data/validation.py) holds out the same records at every
  image size.
  """
  if not image_size:
    return splits

  def resize(source):
    height, width, channels = source.image_shape
    if (height, width) == (image_size, image_size):
      return source
    if not isinstance(source, base.ArraySource):
      raise base.DataError(
          f'{splits.name} images are {height}x{width} and are read on demand, so '
          f'config.data.image_size={image_size} cannot resize them; set it to 0')
    images, labels = source.get(np.arange(source.num_examples))
    if source.record_ids is not None:
      ids, kind = source.record_ids, source.record_ids_kind
    else:  # identify each record by its content as loaded, not as resized
      ids = np.array(record_split.content_ids(images, labels), dtype=object)
      kind = base.IDS_CONTENT_AS_LOADED
    return base.ArraySource(_resize_images(images, image_size), labels, ids, kind)

  return dataclasses.replace(splits, train=resize(splits.train),
                             test=resize(splits.test))


def _resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [n, H, W, C] -> uint8 [n, image_size, image_size, C], bilinear."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = np.empty((images.shape[0], image_size, image_size, images.shape[-1]), np.uint8)
  for i, image in enumerate(images):
    for c in range(images.shape[-1]):  # one 'L' plane at a time: any channel count
      plane = Image.fromarray(np.ascontiguousarray(image[..., c]), mode='L')
      out[i, ..., c] = np.asarray(
          plane.resize((image_size, image_size), Image.Resampling.BILINEAR))
  return out


def reads_on_disk(data_config: ml_collections.ConfigDict) -> bool:
  """Whether the dataset stays on disk, cropped when read: centre-cropped for
  evaluation (tfds ImageNet; an image folder with config.data.random_resized_crop)."""
  spec = datasets.DATASETS.get(data_config.name)
  if spec is None:
    return False
  if spec.local_format == 'image_folder':
    return bool(data_config.random_resized_crop)
  return spec.random_access and not data_config.path


def check_classes(splits: base.DatasetSplits, configured: int = 0,
                  check_labels: bool = True) -> None:
  """Refuses class counts and labels that would train a misleading model.

  The head has ``splits.num_classes`` outputs, fixed by the dataset's spec; this
  checks that ``config.data.num_classes`` (when set) agrees, that there are at least
  two classes, and, with ``check_labels`` for splits held in memory, that the
  training labels hold at least two classes and that every test class occurs in training (a class the model never
  saw cannot be learnt, and its test accuracy would mislead). Run on the whole
  splits, before max_train_examples / max_test_examples cut them.
  """
  name, k = splits.name, splits.num_classes
  if configured and configured != k:
    raise base.DataError(
        f'config.data.num_classes={configured} but {name} has {k} classes'
        + (f' ({_names(splits, range(k))})' if splits.class_names else '')
        + f'; set it to {k} or leave it 0 to take it from the dataset')
  if k < 2:
    raise base.DataError(
        f'{name} has {k} class(es): a classifier needs at least 2 (with one class '
        'every prediction is right)')
  train, test = splits.train, splits.test
  if not (check_labels and isinstance(train, base.ArraySource)
          and isinstance(test, base.ArraySource)):
    return
  in_train = np.unique(train.labels)
  if in_train.size < 2:
    raise base.DataError(
        f'{name}: the training split holds only class {_names(splits, in_train)}; a '
        'classifier needs examples of at least 2 classes')
  unseen = np.setdiff1d(np.unique(test.labels), in_train)
  if unseen.size:
    raise base.DataError(
        f'{name}: the test split has class(es) {_names(splits, unseen)} that the '
        'training split lacks; the model could never predict them. Give every test '
        'class training examples, or drop those test examples')


def _names(splits: base.DatasetSplits, labels) -> str:
  labels = [int(i) for i in labels]
  if splits.class_names:
    return ', '.join(f'{i} ({splits.class_names[i]!r})' for i in labels)
  return ', '.join(str(i) for i in labels)


def _load_local(spec: datasets.DatasetSpec, path: str,
                data_config) -> base.DatasetSplits:
  data = LOCAL_READERS[spec.local_format](path, spec, data_config)
  return spec.make_splits(data.train, data.test, num_classes=data.num_classes,
                          class_names=data.class_names,
                          private_evaluation_note=data.private_evaluation_note)


def _load_tfds(spec: datasets.DatasetSpec, data_config) -> base.DatasetSplits:
  data_dir = data_config.tfds_data_dir or ''
  if spec.random_access:
    def load(train):
      return tfds_source.load_random_access(
          spec.name, train, data_dir, image_size=data_config.image_size,
          random_resized_crop=data_config.random_resized_crop)
  else:
    def load(train):
      return tfds_source.load_in_memory(spec.name, train, data_dir)
  return spec.make_splits(load(True), load(False))


@dataclasses.dataclass(frozen=True)
class _Head:
  """The first ``limit`` examples of a source, still read on demand."""
  source: base.ImageSource
  limit: int

  @property
  def num_examples(self) -> int:
    return self.limit

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.source.image_shape

  def record_ids(self, count: int | None = None):
    """The ids of the first ``count`` records (data/record_split.py)."""
    return record_split.source_ids(self.source, min(count or self.limit, self.limit))

  def fingerprint(self) -> fingerprint_lib.Fingerprint:
    """The source's fingerprint and the limit (data/fingerprint.py)."""
    return fingerprint_lib.of(self.source).view(self.limit, np.asarray([self.limit]),
                                                'head')

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= self.limit):
      raise IndexError(f'indices outside [0, {self.limit})')
    return self.source.get(indices, step=step)


def _truncate(splits: base.DatasetSplits, data_config) -> base.DatasetSplits:
  """Applies max_train_examples / max_test_examples (quick looks and tests)."""

  def head(source, limit):
    if not limit or limit >= source.num_examples:
      return source
    if isinstance(source, base.ArraySource):
      return source.take(np.arange(limit))  # A copy: frees the rest.
    return _Head(source, limit)

  return dataclasses.replace(
      splits,
      train=head(splits.train, data_config.max_train_examples),
      test=head(splits.test, data_config.max_test_examples))
