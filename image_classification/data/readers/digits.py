"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped inside the
package, so the quickstart needs no download.

The test split holds about 20% of the images, each decided by a keyed hash of the
image's content and label (data/record_split.py), so adding or removing one image moves
no other between the splits. (Until 2026-12 it was scikit-learn's stratified
train_test_split with seed 0, exactly 360 test images: a permutation of the whole set.)
"""
import numpy as np

from image_classification.data import base
from image_classification.data import datasets
from image_classification.data import record_split


def load() -> base.DatasetSplits:
  """The digits train and test splits, with the constants of datasets.DATASETS."""
  # Imported here: scikit-learn is only needed for this dataset.
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  # Pixel values are 0..16; scale to 0..255 uint8 like every other source.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  return datasets.get('digits').make_splits(*split(base.ArraySource(images, labels)))


def split(data: base.ArraySource) -> tuple[base.ArraySource, base.ArraySource]:
  """(train, test) of the digits: record_split.TEST_FRACTION held out per record."""
  train, test = record_split.split(record_split.source_ids(data),
                                   record_split.TEST_FRACTION, record_split.TEST_KEY)
  return data.take(train), data.take(test)
