"""A training split's fingerprint (data/fingerprint.py): equal for equal copies of the
data, different when one record, one label, the order or N differs, for arrays in
memory, image folders on disk and the views of a source (head, subset, worker
processes). What the processes of a job compare before training
(training/distributed.py ``check_same_data``; tests/training/test_multiprocess.py runs
it across two processes)."""
import os
import shutil

import numpy as np
import pytest

from image_classification.data import base
from image_classification.data.readers import digits
from image_classification.data import fingerprint
from image_classification.input import input_pipeline
from image_classification.data.readers import local_files
from image_classification.data import sources
from image_classification.data import validation
from tests.data import image_folders


def _arrays():
  train = digits.load().train
  return base.ArraySource(train.images.copy(), train.labels.copy())


def test_arrays_in_memory_one_record_one_label_order_n():
  a, b = _arrays(), _arrays()
  fa = fingerprint.of(a)
  assert fa == fingerprint.of(b)  # two copies of the same data agree
  assert fa.num_examples == a.num_examples and fa.records_by == 'image content'
  one_pixel = _arrays()
  one_pixel.images[100, 3, 4, 0] ^= 1
  f = fingerprint.of(one_pixel)
  assert f.records != fa.records and f.labels == fa.labels and f.num_examples == fa.num_examples
  one_label = _arrays()
  one_label.labels[7] = (one_label.labels[7] + 1) % 10
  f = fingerprint.of(one_label)
  assert f.labels != fa.labels and f.records == fa.records
  swapped = a.take(np.r_[1, 0, 2:a.num_examples])
  assert fingerprint.of(swapped).records != fa.records
  fewer = a.take(np.arange(a.num_examples - 1))
  assert fingerprint.of(fewer).num_examples == fa.num_examples - 1
  # Record ids, where a source has them (an image folder read into memory).
  ids = np.array([f'train/c{i}.png'.encode() for i in range(a.num_examples)], dtype=object)
  named = base.ArraySource(a.images, a.labels, ids)
  assert fingerprint.of(named).records_by == 'file paths'
  renamed = ids.copy()
  renamed[5] = b'train/other.png'
  assert fingerprint.of(base.ArraySource(a.images, a.labels, renamed)).records != \
      fingerprint.of(named).records


def test_image_folder_on_disk_by_paths_and_labels(tmp_path):
  root = image_folders.write_jpeg_folder(tmp_path / 'a', train_per_class=3, test_per_class=1)
  copy = str(tmp_path / 'b')
  shutil.copytree(root, copy)
  load = lambda path: local_files.load_image_folder_on_disk(path, 16).train  # pylint: disable=unnecessary-lambda-assignment
  fa = fingerprint.of(load(root))
  assert fa == fingerprint.of(load(copy))  # another root, the same relative paths
  assert fa.records_by == 'file paths' and fa.labels
  os.rename(os.path.join(copy, 'train', 'c1', 'train_000.jpg'),
            os.path.join(copy, 'train', 'c1', 'train_009.jpg'))
  assert fingerprint.of(load(copy)).records != fa.records
  os.remove(os.path.join(copy, 'train', 'c2', 'train_001.jpg'))
  assert fingerprint.of(load(copy)).num_examples == fa.num_examples - 1
  # Worker processes read the same source: the same fingerprint, nothing started.
  parallel = input_pipeline.ParallelSource(load(root), 2)
  assert fingerprint.of(parallel) == fa and not parallel.running


def test_views_derive_from_their_source(tmp_path):
  root = image_folders.write_jpeg_folder(tmp_path / 'a', train_per_class=3, test_per_class=1)
  source = local_files.load_image_folder_on_disk(root, 16).train
  head = sources._Head(source, 5)  # pylint: disable=protected-access
  assert fingerprint.of(head).num_examples == 5
  assert fingerprint.of(head) == fingerprint.of(sources._Head(source, 5))  # pylint: disable=protected-access
  assert fingerprint.of(head) != fingerprint.of(sources._Head(source, 6))  # pylint: disable=protected-access
  subset = validation.Subset(source, np.array([0, 2, 3]))
  assert fingerprint.of(subset).num_examples == 3
  assert fingerprint.of(subset) != fingerprint.of(validation.Subset(source, np.array([0, 2, 4])))


def test_a_source_without_its_own_fingerprint_is_read_through_its_ids():
  class Plain:  # an ImageSource with get alone (e.g. an audit's view)
    def __init__(self, arrays):
      self.arrays = arrays
      self.num_examples, self.image_shape = arrays.num_examples, arrays.image_shape

    def get(self, indices, step=0):
      return self.arrays.get(indices, step)

  a = _arrays()
  f = fingerprint.of(Plain(a))
  assert f == fingerprint.of(Plain(_arrays()))
  changed = _arrays()
  changed.labels[0] = (changed.labels[0] + 1) % 10
  assert fingerprint.of(Plain(changed)).records != f.records  # labels are in the ids


@pytest.mark.parametrize('parts', [[b'ab', b'c'], [b'a', b'bc'], [b'abc']])
def test_digests_of_different_lists_differ(parts):
  others = [p for p in ([b'ab', b'c'], [b'a', b'bc'], [b'abc']) if p != parts]
  assert all(fingerprint.digest(parts) != fingerprint.digest(o) for o in others)
