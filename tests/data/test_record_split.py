"""Held-out splits are decided per record: for every reader and split, adding or
removing any one record moves NO other record between the sides (the training split is
a per-record function of the data the user supplied); the splits are reproducible and
hold about the asked fraction."""
import os

import numpy as np
import pytest

from image_classification.data import base
from image_classification.data.readers import digits
from image_classification.data.readers import local_files
from image_classification.data import record_split
from image_classification.data.readers import tfds_source
from image_classification.data import validation


def write_png(path, array):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _records(n, seed=0, shape=(6, 6, 1)):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
          rng.integers(0, 10, n).astype(np.int32))


def _sides(train: base.ArraySource, held: base.ArraySource) -> dict[bytes, bool]:
  """record id -> True when held out (the records here are all distinct)."""
  sides = {}
  for source, is_held in ((train, False), (held, True)):
    for record_id in record_split.source_ids(source):
      assert record_id not in sides
      sides[record_id] = is_held
  return sides


def _moved(before: dict, after: dict) -> int:
  """Records in both datasets whose side differs."""
  return sum(before[k] != after[k] for k in before.keys() & after.keys())


def _hold_out(images, labels, fraction, ids=None):
  splits = base.DatasetSplits(
      name='arrays', train=base.ArraySource(images, labels, ids),
      test=base.ArraySource(images[:1], labels[:1]), num_classes=10,
      mean=(0.0,), std=(1.0,))
  reduced, held = validation.hold_out(splits, fraction)
  return reduced.train, held


def test_validation_split_of_50000_arrays_moves_no_other_record():
  """The issue's reproduction at its size: 50,000 labels (default_rng(1)) with
  distinct images, fraction 0.1; several records removed, and new ones added."""
  labels = np.random.default_rng(1).integers(10, size=50000).astype(np.int32)
  images = np.random.default_rng(2).integers(0, 256, (50000, 4, 4, 1), dtype=np.uint8)
  train, held = _hold_out(images, labels, 0.1)
  before = _sides(train, held)
  assert abs(held.num_examples - 5000) < 5 * np.sqrt(50000 * 0.1 * 0.9)
  rng = np.random.default_rng(3)
  for removed in (0, rng.integers(1, 50000)):
    keep = np.arange(50000) != removed
    after = _sides(*_hold_out(images[keep], labels[keep], 0.1))
    assert len(after) == 49999 and _moved(before, after) == 0
  new_image, new_label = _records(1, seed=4, shape=(4, 4, 1))
  after = _sides(*_hold_out(np.concatenate([images, new_image]),
                            np.concatenate([labels, new_label]), 0.1))
  assert len(after) == 50001 and _moved(before, after) == 0


@pytest.mark.parametrize('fraction', [0.05, 0.2, 0.5])
def test_validation_split_with_path_ids_moves_no_other_record(fraction):
  images, labels = _records(3000)
  ids = np.array([f'train/{y}/{i:05d}.png'.encode() for i, y in enumerate(labels)],
                 dtype=object)
  before = _sides(*_hold_out(images, labels, fraction, ids))
  for removed in np.random.default_rng(5).choice(3000, 4, replace=False):
    keep = np.arange(3000) != removed
    assert _moved(before, _sides(*_hold_out(images[keep], labels[keep], fraction,
                                            ids[keep]))) == 0
  # The side follows the id (the path), not the content or the position.
  shuffled = np.random.default_rng(6).permutation(3000)
  again = _sides(*_hold_out(images[shuffled], labels[shuffled], fraction, ids[shuffled]))
  assert again == before


def test_splits_are_reproducible_disjoint_and_hold_about_the_fraction():
  ids = record_split.content_ids(*_records(20000))
  kept, held = record_split.split(ids, 0.2, record_split.TEST_KEY)
  again = record_split.split(ids, 0.2, record_split.TEST_KEY)
  np.testing.assert_array_equal(held, again[1])
  np.testing.assert_array_equal(kept, again[0])
  assert sorted(np.concatenate([kept, held]).tolist()) == list(range(20000))
  assert abs(len(held) - 4000) < 5 * np.sqrt(20000 * 0.2 * 0.8)
  # The test and the validation keys are independent draws: the validation split of
  # what the test split left is about its fraction, not empty.
  rest = [ids[i] for i in kept]
  share = record_split.held_out(rest, 0.1, record_split.VALIDATION_KEY).mean()
  assert 0.09 < share < 0.11
  assert record_split.held_out(ids, 0.0, record_split.TEST_KEY).sum() == 0
  assert record_split.held_out(ids, 1.0, record_split.TEST_KEY).all()


def test_a_content_id_depends_on_image_label_and_shape_only():
  image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
  same = record_split.content_id(image.copy(), 3)
  assert record_split.content_id(image, 3) == same
  assert record_split.content_id(image, 4) != same
  assert record_split.content_id(image.reshape(2, 8, 1), 3) != same
  other = image.copy()
  other[0, 0, 0] = 200
  assert record_split.content_id(other, 3) != same


def _digits_sides(images, labels):
  train, test = digits.split(base.ArraySource(images, labels))
  return _sides(train, test)


def test_digits_test_split_moves_no_other_record():
  splits = digits.load()
  images = np.concatenate([splits.train.images, splits.test.images])
  labels = np.concatenate([splits.train.labels, splits.test.labels])
  n = len(labels)
  assert n == 1797 and abs(splits.test.num_examples - 0.2 * n) < 4 * np.sqrt(n * 0.16)
  before = _digits_sides(images, labels)
  assert sum(before.values()) == splits.test.num_examples
  for removed in np.random.default_rng(7).choice(n, 3, replace=False):
    keep = np.arange(n) != removed
    assert _moved(before, _digits_sides(images[keep], labels[keep])) == 0
  new_image = np.full((1, 8, 8, 1), 77, np.uint8)
  after = _digits_sides(np.concatenate([images, new_image]),
                        np.concatenate([labels, [5]]).astype(np.int32))
  assert len(after) == n + 1 and _moved(before, after) == 0
  # Every class keeps training examples (the quickstart's head sees all ten).
  assert set(np.unique(splits.train.labels)) == set(range(10))


def _folder(root, names):
  for name in names:
    label, index = name.split('/')
    write_png(os.path.join(root, 'train', label, f'{index}.png'),
              np.full((4, 4), int(index) % 256, np.uint8))


def _folder_sides(root):
  data = local_files.load_image_folder(root)
  return _sides(data.train, data.test)


def test_image_folder_test_split_moves_no_other_image(tmp_path):
  names = [f'{c}/{i}' for c in ('cat', 'dog', 'emu') for i in range(40)]
  root = str(tmp_path / 'data')
  _folder(root, names)
  before = _folder_sides(root)
  assert set(before) == {f'train/{n}.png'.encode() for n in names}  # ids are paths
  assert 0 < sum(before.values()) < len(names)
  for name in ('cat/3', 'emu/17'):  # remove one image, then put it back
    os.remove(os.path.join(root, 'train', f'{name}.png'))
    assert _moved(before, _folder_sides(root)) == 0
    _folder(root, [name])
  _folder(root, ['dog/1000'])  # a new image
  after = _folder_sides(root)
  assert len(after) == len(names) + 1 and _moved(before, after) == 0
  # The validation split of such a folder's training images: per path too.
  data = local_files.load_image_folder(root)
  assert data.train.record_ids is not None
  train, held = validation.hold_out(
      base.DatasetSplits('image_folder', data.train, data.test, 3, (0.,), (1.,)), 0.25)
  assert _sides(train.train, held).keys() == set(data.train.record_ids)


def test_image_folder_that_loses_a_class_to_the_test_split_says_why(tmp_path):
  """A class whose every image the hash holds out: one error line that names the
  class, why the split is per image, and what fixes it."""
  root = str(tmp_path / 'data')
  names = [f'big/{i}' for i in range(30)]
  _folder(root, names)
  held = [i for i in range(200) if record_split.held_out(
      [f'train/small/{i}.png'.encode()], 0.2, record_split.TEST_KEY)[0]]
  _folder(root, [f'small/{held[0]}'])  # its only image falls in the test split
  with pytest.raises(base.DataError) as error:
    local_files.load_image_folder(root)
  message = str(error.value)
  assert "'small' (1 image(s))" in message and 'no training example' in message
  assert 'hash of its path' in message and 'test/ folder' in message


def test_random_access_source_ids_are_per_record_not_per_crop():
  """tfds CroppingSource (ImageNet): ids from the file_name feature, else content;
  a validation split of it moves no other record when one is removed."""
  rng = np.random.default_rng(8)
  records = [{'image': rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
              'label': i % 7, 'file_name': f'n0{i:04d}.JPEG'} for i in range(400)]

  def sides(records):
    source = tfds_source.CroppingSource(records, image_size=8, random_resized_crop=True)
    splits = base.DatasetSplits('imagenet2012', source, source, 1000, (0.,), (1.,))
    reduced, held = validation.hold_out(splits, 0.2)
    ids = source.record_ids()
    return {ids[i]: False for i in reduced.train.indices} | {
        ids[i]: True for i in held.indices}

  before = sides(records)
  assert b'file_name:n00007.JPEG' in before
  assert 40 < sum(before.values()) < 120
  for removed in (0, 123, 399):
    assert _moved(before, sides(records[:removed] + records[removed + 1:])) == 0
  plain = [{k: v for k, v in r.items() if k != 'file_name'} for r in records[:3]]
  source = tfds_source.CroppingSource(plain, image_size=8)
  assert source.record_ids() == [record_split.content_id(r['image'], r['label'])
                                 for r in plain]


def test_validation_split_holds_out_the_same_records_at_every_image_size(tmp_path):
  """The validation split of an in-memory dataset is keyed on each record as loaded,
  not as resized: MNIST from its IDX files at its native 28x28 and resized to 32 or 40
  holds out the same records in the same order (the resized images of exactly those),
  so validation accuracies at different `config.data.image_size` compare the same
  records. The fingerprint still hashes the resized images that are trained on."""
  from image_classification.data import fingerprint  # pylint: disable=g-import-not-at-top
  from image_classification.data import sources  # pylint: disable=g-import-not-at-top
  from tests.data import test_local_files as formats  # pylint: disable=g-import-not-at-top
  from tests.data import test_sources  # pylint: disable=g-import-not-at-top
  train_x, train_y, _, _ = formats.write_mnist(tmp_path, n_train=300, rows=28, cols=28)
  # The split every image size must give: each record's side by its content as read.
  expected_train, expected_held = record_split.split(
      record_split.content_ids(train_x[..., None], train_y), 0.2,
      record_split.VALIDATION_KEY)
  assert 30 < len(expected_held) < 90
  fingerprints = set()
  for size in (0, 28, 32, 40):
    splits = sources.load_dataset(test_sources.data_config(
        name='mnist', path=str(tmp_path), image_size=size))
    reduced, held = validation.hold_out(splits, 0.2)
    for source, expected in ((reduced.train, expected_train), (held, expected_held)):
      images, labels = source.get(np.arange(source.num_examples))
      np.testing.assert_array_equal(labels, train_y[expected])
      side = (size or 28)
      assert images.shape == (len(expected), side, side, 1)
      np.testing.assert_array_equal(
          images[:3], [test_sources._bilinear(train_x[i][..., None], side)
                       if size not in (0, 28) else train_x[i][..., None]
                       for i in expected[:3]])
    # What a multi-host check compares: the images trained on, so 32 and 40 differ.
    print_ = fingerprint.of(reduced.train)
    assert print_.records_by == 'image content'
    fingerprints.add(print_.records)
  assert len(fingerprints) == 3  # 0 and 28 are the same data; 32 and 40 are not


def test_resizing_keeps_an_image_folders_file_path_ids():
  ids = np.array([b'train/a/0.png', b'train/b/1.png'], dtype=object)
  splits = base.DatasetSplits(
      name='folder', train=base.ArraySource(np.zeros((2, 4, 4, 3), np.uint8),
                                            np.array([0, 1], np.int32), ids),
      test=base.ArraySource(np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1, np.int32)),
      num_classes=2, mean=(0.0,) * 3, std=(1.0,) * 3)
  from image_classification.data import sources  # pylint: disable=g-import-not-at-top
  resized = sources.resize_in_memory(splits, 8)
  assert resized.train.image_shape == (8, 8, 3)
  assert list(record_split.source_ids(resized.train)) == list(ids)
  assert resized.train.record_ids_kind == base.IDS_FILE_PATHS
  assert resized.test.record_ids_kind == base.IDS_CONTENT_AS_LOADED
  assert list(record_split.source_ids(resized.test.take(np.array([0])))) == \
      record_split.content_ids(np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1))
