"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped inside the
package, so the quickstart needs no download. Fixed stratified 80/20 split (seed 0,
stratified.sklearn_split).
"""
import numpy as np

from image_classification.data import base
from image_classification.data import datasets
from image_classification.data import stratified


def load() -> base.DatasetSplits:
  """The digits train and test splits, with the constants of datasets.DATASETS."""
  # Imported here: scikit-learn is only needed for this dataset.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  # Pixel values are 0..16; scale to 0..255 uint8 like every other source.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train, test = stratified.sklearn_split(labels)
  return datasets.get('digits').make_splits(
      base.ArraySource(images[train], labels[train]),
      base.ArraySource(images[test], labels[test]))
