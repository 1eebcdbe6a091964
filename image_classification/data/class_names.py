"""The name of each class index, for predictions a person reads.

``for_dataset(data_config, splits)`` answers in this order:
1. names the loaded splits carry (``splits.class_names``, e.g. an image folder's
   sub-folder names), when the loader provides them;
2. for ``image_folder``, the sub-folders of ``config.data.path/train`` sorted by name,
   the order local_files.load_image_folder gives the labels;
3. the published names of a known dataset (``KNOWN``);
4. the class index as a string.
Class names are public metadata of the dataset, not statistics of its examples.
"""
import os

_DIGITS = tuple(str(i) for i in range(10))

KNOWN = {
    'digits': _DIGITS,
    'mnist': _DIGITS,
    'svhn_cropped': _DIGITS,  # tfds maps the digit 0 (label 10 in the .mat) to 0
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                      'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                'horse', 'ship', 'truck'),
    # The 100 fine labels, in label order (batches.meta 'fine_label_names').
    'cifar100': (
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
}


def _folder_names(path: str) -> tuple[str, ...]:
  train_dir = os.path.join(path or '', 'train')
  if not path or not os.path.isdir(train_dir):
    return ()
  return tuple(sorted(n for n in os.listdir(train_dir)
                      if os.path.isdir(os.path.join(train_dir, n))))


def for_dataset(data_config, splits=None, num_classes: int | None = None
                ) -> list[str]:
  """One name per class index (see the module docstring for where they come from)."""
  if num_classes is None:
    num_classes = splits.num_classes
  candidates = [tuple(getattr(splits, 'class_names', None) or ())]
  if data_config.name == 'image_folder':
    candidates.append(_folder_names(data_config.get('path', '')))
  candidates.append(KNOWN.get(data_config.name, ()))
  for names in candidates:
    if len(names) == num_classes:
      return [str(n) for n in names]
  return [str(i) for i in range(num_classes)]
