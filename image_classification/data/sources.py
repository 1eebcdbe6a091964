"""Loads the dataset a config names: ``load_dataset(config.data) -> DatasetSplits``.

Where the data comes from:

* ``digits``: scikit-learn's digits, shipped with the package.
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: the original files under
  ``config.data.path`` when it is set (see local_files.py), else tfds.
* ``svhn_cropped``, ``imagenet2012``: tfds only (``config.data.tfds_data_dir``).
  ImageNet stays on disk and is cropped and resized to ``config.data.image_size``
  on the host when read.
* ``image_folder``, ``npz``: ``config.data.path`` (required).

Normalisation constants are fixed public numbers per dataset (the usual published
channel means and standard deviations, on pixels scaled to [0, 1]); they are never
computed from the private training data.
"""
import dataclasses

import ml_collections
import numpy as np

from image_classification.data import base

DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100',
            'svhn_cropped', 'imagenet2012', 'image_folder', 'npz')
# Datasets read from config.data.path when it is set (else through tfds).
LOCAL_OR_TFDS = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100')
# Datasets that need config.data.path.
PATH_ONLY = ('image_folder', 'npz')
# Datasets read from tfds only.
TFDS_ONLY = ('svhn_cropped', 'imagenet2012')


@dataclasses.dataclass(frozen=True)
class _Constants:
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


CONSTANTS = {
    'mnist': _Constants(10, (0.1307,), (0.3081,)),
    'fashion_mnist': _Constants(10, (0.2860,), (0.3530,)),
    'cifar10': _Constants(
        10, (0.49139968, 0.48215841, 0.44653091),
        (0.24703223, 0.24348513, 0.26158784)),
    'cifar100': _Constants(
        100, (0.50707516, 0.48654887, 0.44091784),
        (0.26733429, 0.25643846, 0.27615047)),
    'svhn_cropped': _Constants(
        10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    'imagenet2012': _Constants(
        1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# Public class names, index = label, where the dataset defines them.
_DIGIT_NAMES = tuple(str(i) for i in range(10))
CLASS_NAMES = {
    'digits': _DIGIT_NAMES,
    'mnist': _DIGIT_NAMES,
    'svhn_cropped': _DIGIT_NAMES,
    'fashion_mnist': ('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal',
                      'shirt', 'sneaker', 'bag', 'ankle boot'),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                'ship', 'truck'),
}
# image_folder and npz hold unknown images: map [0, 1] to [-1, 1] in every channel.
GENERIC_MEAN, GENERIC_STD = 0.5, 0.5


def load_dataset(data_config: ml_collections.ConfigDict) -> base.DatasetSplits:
  """Returns the train and test sources of ``data_config.name``."""
  name = data_config.name
  path = data_config.get('path', '') or ''
  if name not in DATASETS:
    raise base.DataError(
        f'config.data.name={name!r} is not a known dataset; choose one of {DATASETS}')
  if path and name not in LOCAL_OR_TFDS + PATH_ONLY:
    raise base.DataError(
        f'config.data.path={path!r} is set but {name} is not read from local files; '
        f'only {LOCAL_OR_TFDS + PATH_ONLY} are. Leave config.data.path empty'
        + (' and use config.data.tfds_data_dir' if name in TFDS_ONLY else ''))
  if name in PATH_ONLY and not path:
    raise base.DataError(
        f'config.data.name={name!r} reads local files: set config.data.path')

  if name == 'digits':
    from image_classification.data import digits  # pylint: disable=g-import-not-at-top
    splits = digits.load()
  elif name in LOCAL_OR_TFDS + PATH_ONLY and path:
    splits = _load_local(name, path, data_config)
  else:
    splits = _load_tfds(name, data_config)
  if not splits.class_names and name in CLASS_NAMES:
    splits = dataclasses.replace(splits, class_names=CLASS_NAMES[name])
  # tfds splits are the published ones, whose classes the catalog states; files a user
  # brings (and digits' split) have their labels checked too.
  check_classes(splits, data_config.get('num_classes', 0) or 0,
                check_labels=name == 'digits' or bool(path))
  return _truncate(splits, data_config)


def spec_num_classes(name: str) -> int | None:
  """The class count a named dataset defines (None: the files or the config say)."""
  if name == 'digits':
    return 10
  return CONSTANTS[name].num_classes if name in CONSTANTS else None


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


def _load_local(name: str, path: str, data_config) -> base.DatasetSplits:
  from image_classification.data import local_files  # pylint: disable=g-import-not-at-top
  if name in ('cifar10', 'cifar100'):
    data = local_files.load_cifar(path, name)
  elif name in ('mnist', 'fashion_mnist'):
    data = local_files.load_idx(path)
  elif name == 'image_folder':
    data = local_files.load_image_folder(path, data_config.get('image_size', 0))
  else:
    data = local_files.load_npz(path, data_config.get('num_classes', 0) or 0)
  if name in CONSTANTS:
    constants = CONSTANTS[name]
  else:
    channels = data.train.image_shape[-1]
    constants = _Constants(
        data.num_classes, (GENERIC_MEAN,) * channels, (GENERIC_STD,) * channels)
  return base.DatasetSplits(
      name=name, train=data.train, test=data.test,
      num_classes=constants.num_classes, mean=constants.mean, std=constants.std,
      class_names=tuple(data.class_names),
      private_evaluation_note=data.private_evaluation_note)


def _load_tfds(name: str, data_config) -> base.DatasetSplits:
  from image_classification.data import tfds_source  # pylint: disable=g-import-not-at-top
  data_dir = data_config.get('tfds_data_dir', '') or ''
  if name == 'imagenet2012':
    def load(train):
      return tfds_source.load_random_access(
          name, train, data_dir, image_size=data_config.get('image_size', 0),
          random_resized_crop=data_config.get('random_resized_crop', False))
  else:
    def load(train):
      return tfds_source.load_in_memory(name, train, data_dir)
  constants = CONSTANTS[name]
  return base.DatasetSplits(
      name=name, train=load(True), test=load(False),
      num_classes=constants.num_classes, mean=constants.mean, std=constants.std)


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
      images, labels = source.get(np.arange(limit))  # A copy: frees the rest.
      return base.ArraySource(images, labels)
    return _Head(source, limit)

  return dataclasses.replace(
      splits,
      train=head(splits.train, data_config.get('max_train_examples', 0)),
      test=head(splits.test, data_config.get('max_test_examples', 0)))
