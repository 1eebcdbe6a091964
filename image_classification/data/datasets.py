"""One ``DatasetSpec`` per dataset that ``config.data.name`` can name: the registry.

A spec holds every public fact the platform uses about a dataset: where its images
come from (shipped with the package, ``config.data.path`` in a known format, tfds),
the tfds splits and manually downloaded files, the published split sizes and image
shape (for dry runs), the number of classes, the class names and the normalisation
constants. Loaders, the dry-run catalog, the inference card and config validation all
read it; none keeps a table of its own.

Every number here is published metadata of the dataset (the usual channel means and
standard deviations on pixels scaled to [0, 1], the standard split sizes), never a
statistic computed from the private training data.

A new tfds dataset is one ``register(DatasetSpec(...))`` call below; a new on-disk
format also needs a reader in local_files.py, registered in sources.LOCAL_READERS.
"""
import dataclasses
import difflib
import os

import ml_collections

from image_classification import errors
from image_classification import registry
from image_classification.data import base

# Images of unknown origin (image_folder, npz): map [0, 1] to [-1, 1] in every channel.
GENERIC_MEAN, GENERIC_STD = 0.5, 0.5


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The public facts of one dataset; None where the user's files or config decide."""
  name: str
  num_classes: int | None = None
  # (height, width, channels) as the loaders return it; height = width = 0 when the
  # images vary in size and are resized to config.data.image_size when read.
  image_shape: tuple[int, int, int] | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  class_names: tuple[str, ...] = ()  # index = label
  # Where the images come from (at least one).
  builtin: bool = False  # shipped with the package (digits.load); no path, no tfds
  local_format: str | None = None  # what config.data.path holds (sources.LOCAL_READERS)
  tfds_name: str | None = None  # read through tfds when config.data.path is empty
  tfds_splits: tuple[str, str] = ('train', 'test')  # (training, evaluation)
  num_train: int | None = None  # published sizes of tfds_splits (dry runs)
  num_test: int | None = None
  manual_files: tuple[str, ...] = ()  # files tfds cannot download (tfds manual_dir)
  random_access: bool = False  # stays on disk, cropped and resized when read

  @property
  def tfds_only(self) -> bool:
    return self.tfds_name is not None and self.local_format is None

  @property
  def path_required(self) -> bool:
    return self.local_format is not None and self.tfds_name is None

  def normalisation(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std): the spec's constants, else the generic ones for ``channels``."""
    if self.mean is not None:
      return self.mean, self.std
    return (GENERIC_MEAN,) * channels, (GENERIC_STD,) * channels

  def make_splits(self, train: base.ImageSource, test: base.ImageSource, *,
                  num_classes: int | None = None, class_names: tuple[str, ...] = (),
                  private_evaluation_note: str = '') -> base.DatasetSplits:
    """DatasetSplits with this spec's class count, constants and names.

    ``num_classes`` / ``class_names`` (from the files: folder names, config) apply
    where the spec has none.
    """
    mean, std = self.normalisation(train.image_shape[-1])
    return base.DatasetSplits(
        name=self.name, train=train, test=test,
        num_classes=self.num_classes or num_classes, mean=mean, std=std,
        class_names=tuple(class_names) or self.class_names,
        private_evaluation_note=private_evaluation_note)


DATASETS = registry.Registry('dataset')


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds ``spec`` to the registry; refuses a second spec of one name."""
  if spec.name in DATASETS:
    raise ValueError(f'dataset {spec.name!r} is registered already')
  if not (spec.builtin or spec.local_format or spec.tfds_name):
    raise ValueError(f'{spec.name}: a spec needs a source (builtin, local_format or '
                     'tfds_name)')
  return DATASETS.register(spec.name)(spec)


def names(predicate=None) -> tuple[str, ...]:
  """Registered names, in registration order, of the specs ``predicate`` accepts."""
  return tuple(n for n, s in DATASETS.items() if predicate is None or predicate(s))


def get(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise base.DataError(f'{name!r} is not a known dataset; choose one of {names()}')
  return DATASETS[name]


def check_spec(spec: DatasetSpec) -> None:
  """Refuses a spec whose facts disagree with each other (run by the tests)."""
  problems = []
  channels = spec.image_shape[-1] if spec.image_shape else None
  if spec.image_shape is not None and (
      len(spec.image_shape) != 3 or channels not in (1, 3)
      or (spec.image_shape[0] == 0) != (spec.image_shape[1] == 0)):
    problems.append(f'image_shape {spec.image_shape}')
  if (spec.mean is None) != (spec.std is None):
    problems.append('mean and std must be set together')
  elif spec.mean is not None and not len(spec.mean) == len(spec.std) == channels:
    problems.append(
        f'{len(spec.mean)} means, {len(spec.std)} stds, {channels} channels')
  elif spec.std is not None and min(spec.std) <= 0:
    problems.append(f'std {spec.std}')
  if spec.num_classes is not None and spec.num_classes < 2:
    problems.append(f'num_classes {spec.num_classes}')
  if spec.class_names and len(spec.class_names) != spec.num_classes:
    problems.append(f'{len(spec.class_names)} class names, {spec.num_classes} classes')
  if spec.tfds_name is not None and None in (spec.num_classes, spec.image_shape,
                                             spec.mean, spec.num_train, spec.num_test):
    problems.append('a tfds dataset needs num_classes, image_shape, constants, sizes')
  if spec.manual_files and spec.tfds_name is None:
    problems.append('manual_files without tfds_name')
  if spec.image_shape and spec.image_shape[0] == 0 and not spec.random_access:
    problems.append('images of varying size need random_access (crop when read)')
  if problems:
    raise ValueError(f'dataset spec {spec.name}: ' + '; '.join(problems))



def validate_config(data: ml_collections.ConfigDict) -> None:
  """Checks config.data alone (what needs the data's size is plan.validate_with_data);
  raises ConfigError naming the field and the fix."""
  d, fail = data, errors.config_fail
  if d.name not in DATASETS:
    close = difflib.get_close_matches(str(d.name), list(names()), n=1)
    hint = f'did you mean {close[0]!r}? ' if close else ''
    fail('data.name', d.name, f'unknown dataset; {hint}choose one of {list(names())}')
  if d.path and not os.path.exists(d.path):
    fail('data.path', d.path, 'no such file or folder; give the folder that holds the '
         "dataset's original files, or leave it empty to use tfds")
  if d.prefetch < 0:
    fail('data.prefetch', d.prefetch, 'must be >= 0 (0: no background loading)')
  workers = d.num_workers
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < -1:
    fail('data.num_workers', workers, 'give the number of worker processes that '
         'decode on-disk images: -1 (one per core), 0 (the loading thread) or more')
  if d.augmult < 1:
    fail('data.augmult', d.augmult, 'must be >= 1 (1 means no augmentation multiplicity)')
  for field in ('max_train_examples', 'max_test_examples'):
    if d[field] < 0:
      fail(f'data.{field}', d[field], 'must be >= 0 (0 keeps every example)')
  if d.image_size < 0:
    fail('data.image_size', d.image_size,
         'must be >= 0 (0 keeps the native size; > 0 resizes to a square)')
  num_classes = d.num_classes or 0
  spec = DATASETS[d.name].num_classes
  if num_classes < 0:
    fail('data.num_classes', num_classes, 'must be >= 0 (0: from the dataset)')
  if d.name == 'npz' and num_classes < 2:
    fail('data.num_classes', num_classes,
         'an npz dataset must state its number of classes (>= 2), e.g. '
         '--config.data.num_classes=10: the model\'s head must not depend on which '
         'labels happen to occur in the private data')
  if spec is not None and num_classes not in (0, spec):
    fail('data.num_classes', num_classes,
         f'{d.name} has {spec} classes; set {spec} or leave it 0')
  if not 0 <= d.validation_fraction < 1:
    fail('data.validation_fraction', d.validation_fraction,
         'must be in [0, 1): the fraction of the training split held out for model '
         'selection (0: none)')

_DIGIT_NAMES = tuple(str(i) for i in range(10))

register(DatasetSpec(
    'digits', num_classes=10, image_shape=(8, 8, 1), mean=(0.5,), std=(0.5,),
    class_names=_DIGIT_NAMES, builtin=True))
register(DatasetSpec(
    'mnist', num_classes=10, image_shape=(28, 28, 1), mean=(0.1307,), std=(0.3081,),
    class_names=_DIGIT_NAMES, local_format='idx', tfds_name='mnist',
    num_train=60_000, num_test=10_000))
register(DatasetSpec(
    'fashion_mnist', num_classes=10, image_shape=(28, 28, 1), mean=(0.2860,),
    std=(0.3530,),
    class_names=('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal',
                 'shirt', 'sneaker', 'bag', 'ankle boot'),
    local_format='idx', tfds_name='fashion_mnist', num_train=60_000, num_test=10_000))
register(DatasetSpec(
    'cifar10', num_classes=10, image_shape=(32, 32, 3),
    mean=(0.49139968, 0.48215841, 0.44653091),
    std=(0.24703223, 0.24348513, 0.26158784),
    class_names=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                 'horse', 'ship', 'truck'),
    local_format='cifar', tfds_name='cifar10', num_train=50_000, num_test=10_000))
register(DatasetSpec(
    'cifar100', num_classes=100, image_shape=(32, 32, 3),
    mean=(0.50707516, 0.48654887, 0.44091784),
    std=(0.26733429, 0.25643846, 0.27615047),
    # The 100 fine labels, in label order (batches.meta 'fine_label_names').
    class_names=(
        'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle',
        'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel',
        'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
        'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
        'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster',
        'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
        'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse',
        'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear',
        'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine',
        'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal',
        'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
        'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
        'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip',
        'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm'),
    local_format='cifar', tfds_name='cifar100', num_train=50_000, num_test=10_000))
register(DatasetSpec(
    'svhn_cropped', num_classes=10, image_shape=(32, 32, 3),
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    class_names=_DIGIT_NAMES,  # tfds maps the digit 0 (label 10 in the .mat) to 0
    tfds_name='svhn_cropped', num_train=73_257, num_test=26_032))
register(DatasetSpec(
    'imagenet2012', num_classes=1000, image_shape=(0, 0, 3),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    tfds_name='imagenet2012', tfds_splits=('train', 'validation'),
    num_train=1_281_167, num_test=50_000,
    manual_files=('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'),
    random_access=True))
# The user's own images: classes from the sub-folders (image_folder) or the config
# (npz).
register(DatasetSpec('image_folder', local_format='image_folder'))
register(DatasetSpec('npz', local_format='npz'))
