"""The fixed stratified splits: the same indices as before the split code was shared."""
import hashlib

import numpy as np

from image_classification.data import digits
from image_classification.data import stratified
from image_classification.data import validation

LABELS = np.array([0, 1, 1, 2, 2, 2, 0, 0, 1, 2, 3, 3, 0, 1, 2, 2, 4], np.int32)


def _digest(*arrays) -> str:
  return hashlib.sha256(b''.join(a.tobytes() for a in arrays)).hexdigest()[:16]


def test_image_folder_split_is_unchanged():
  # Values of local_files._stratified_split(labels, 0, 0.2) before it moved here.
  train, test = stratified.split(LABELS, stratified.TEST_FRACTION, stratified.TEST_SEED)
  assert train.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 15, 16]
  assert test.tolist() == [7, 13, 14] and train.dtype == np.int64
  many = np.random.default_rng(5).integers(0, 7, 1000)
  assert _digest(*stratified.split(many, 0.2, 0)) == '356f8507058818b4'


def test_validation_split_is_unchanged_and_holds_one_of_each_class():
  # Values of validation.split_indices before it used stratified.split.
  train, held = validation.split_indices(LABELS, 0.2)
  assert train.tolist() == [0, 1, 3, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16]
  assert held.tolist() == [2, 7, 9, 10]  # one of class 3 (2 members), none of 4 (1)
  many = np.random.default_rng(5).integers(0, 7, 1000)
  assert _digest(*validation.split_indices(many, 0.1)) == 'cfa73a4a09658347'


def test_split_partitions_and_is_stratified():
  labels = np.repeat(np.arange(5), [10, 20, 30, 40, 1])
  kept, held = stratified.split(labels, 0.25, seed=3)
  assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
  np.testing.assert_array_equal(np.bincount(labels[held], minlength=5),
                                [2, 5, 8, 10, 0])


def test_digits_split_is_bit_identical():
  splits = digits.load()
  assert _digest(splits.train.images) == 'c55533fa45b670a4'
  assert _digest(splits.train.labels) == '745d990dc8f80aea'
  assert _digest(splits.test.images) == 'ac6ada28192bd51a'
  assert _digest(splits.test.labels) == 'c8a9cf10e14a8679'
  assert splits.train.labels.dtype == np.int32
