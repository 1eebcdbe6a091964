"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped inside the
package, so the quickstart needs no download. Fixed stratified 80/20 split (seed 0).
"""
import numpy as np

from image_classification.data import base

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load() -> base.DatasetSplits:
  # Imported here: scikit-learn is only needed for this dataset.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  # Pixel values are 0..16; scale to 0..255 uint8 like every other source.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=TEST_FRACTION, stratify=labels,
      random_state=SPLIT_SEED)
  return base.DatasetSplits(
      name='digits',
      train=base.ArraySource(train_x, train_y),
      test=base.ArraySource(test_x, test_y),
      num_classes=10,
      mean=(0.5,), std=(0.5,))
