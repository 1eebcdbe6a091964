"""The name of each class index, for predictions a person reads.

``for_dataset(data_config, splits)`` answers in this order:
1. names the loaded splits carry (``splits.class_names``, e.g. an image folder's
   sub-folder names), when the loader provides them;
2. for an ``image_folder``, the sub-folders of ``config.data.path/train`` sorted by
   name, the order local_files.load_image_folder gives the labels;
3. the published names in the dataset's spec (datasets.py);
4. the class index as a string.
Class names are public metadata of the dataset, not statistics of its examples.
"""
import os

from image_classification.data import datasets


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
  spec = datasets.DATASETS.get(data_config.name)
  candidates = [tuple(getattr(splits, 'class_names', None) or ())]
  if spec is not None and spec.local_format == 'image_folder':
    candidates.append(_folder_names(data_config.path))
  candidates.append(spec.class_names if spec is not None else ())
  for names in candidates:
    if len(names) == num_classes:
      return [str(n) for n in names]
  return [str(i) for i in range(num_classes)]
