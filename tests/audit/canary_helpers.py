"""Traceable tiny splits for the audit tests."""
import numpy as np

from image_classification.data import base

NUM_CLASSES = 10


def indexed_splits(n=200, num_test=20):
  """Images whose pixel [0, 0] and [0, 1] spell their index, so we can trace them."""
  images = np.zeros((n, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n) // 256
  images[:, 0, 1, 0] = np.arange(n) % 256
  labels = (np.arange(n) * 7 % NUM_CLASSES).astype(np.int32)
  test = base.ArraySource(np.zeros((num_test, 4, 4, 1), np.uint8),
                          np.zeros(num_test, np.int32))
  return base.DatasetSplits(name='indexed', train=base.ArraySource(images, labels),
                            test=test, num_classes=NUM_CLASSES, mean=(0.5,), std=(0.5,))


def ids(images):
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0].astype(int)
