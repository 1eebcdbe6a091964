"""load_dataset: dispatch on config.data.name, constants, truncation, import weight."""
import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import base as base_config
from configs import quickstart
from image_classification.data import base
from image_classification.data import catalog
from image_classification.data import datasets
from image_classification.data.readers import digits
from image_classification.data import sources
from tests.data import test_local_files as formats

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# The four original MNIST IDX files, when you have them: MNIST_IDX_DIR=DIR python -m
# pytest tests/data/test_sources.py checks the reader against their known counts.
REAL_MNIST = pathlib.Path(os.environ.get('MNIST_IDX_DIR', '/nonexistent'))
# Likewise Fashion-MNIST's four original IDX files: FASHION_MNIST_IDX_DIR=DIR.
REAL_FASHION_MNIST = pathlib.Path(os.environ.get('FASHION_MNIST_IDX_DIR', '/nonexistent'))


def data_config(**overrides):
  config = base_config.get_config().data
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_dataset_names():
  assert datasets.names() == (
      'digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn_cropped',
      'imagenet2012', 'image_folder', 'npz')
  assert set(sources.LOCAL_READERS) == {
      s.local_format for s in datasets.DATASETS.values() if s.local_format}


def test_digits_loads_with_its_test_split_cut():
  splits = sources.load_dataset(data_config(max_test_examples=10))
  assert splits.name == 'digits' and splits.num_classes == 10
  # All 1797 digits, minus the per-record test split (data/record_split.py).
  assert splits.train.num_examples == digits.load().train.num_examples
  assert splits.test.num_examples == 10
  assert splits.train.image_shape == (8, 8, 1)


def _bilinear(image, size):
  """A reference resize: PIL's bilinear filter on one-channel planes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.stack([np.asarray(Image.fromarray(image[..., c]).resize(
      (size, size), Image.Resampling.BILINEAR)) for c in range(image.shape[-1])], -1)


def test_image_size_resizes_digits():
  """`--config=configs/quickstart.py --config.data.image_size=16` trains on 16x16
  digits (it stayed 8x8), and the dry run's shape agrees."""
  config = quickstart.get_config()
  config.data.image_size = 16
  native = sources.load_dataset(data_config())
  splits = sources.load_dataset(config.data)
  assert splits.train.image_shape == splits.test.image_shape == (16, 16, 1)
  assert splits.train.num_examples == native.train.num_examples == 1438
  images, labels = splits.train.get(np.arange(5))
  original, original_labels = native.train.get(np.arange(5))
  np.testing.assert_array_equal(labels, original_labels)
  assert images.dtype == np.uint8
  for got, source in zip(images, original):
    np.testing.assert_array_equal(got, _bilinear(source, 16))
  assert catalog.image_shape('digits', 16) == (16, 16, 1)
  assert catalog.image_shape('digits') == (8, 8, 1)


def test_image_size_resizes_mnist_from_idx_files_and_tfds_shapes(tmp_path):
  train_x, _, test_x, _ = formats.write_mnist(tmp_path, rows=4, cols=5)
  splits = sources.load_dataset(data_config(name='mnist', path=str(tmp_path),
                                            image_size=12))
  assert splits.train.image_shape == splits.test.image_shape == (12, 12, 1)
  images, _ = splits.test.get(np.arange(3))
  for got, source in zip(images, test_x):
    np.testing.assert_array_equal(got, _bilinear(source[..., None], 12))
  # A uniform image stays uniform; 0 keeps the native size.
  assert sources.resize_in_memory(dataclasses.replace(
      splits, train=base.ArraySource(np.full((2, 4, 5, 3), 77, np.uint8),
                                     np.zeros(2, np.int32))), 9).train.get(
          np.arange(2))[0].tolist() == np.full((2, 9, 9, 3), 77).tolist()
  native = sources.load_dataset(data_config(name='mnist', path=str(tmp_path)))
  assert native.train.image_shape == (4, 5, 1)
  # Without a path MNIST comes from tfds: the dry run's shape honours image_size too.
  assert catalog.shape_only_splits(
      data_config(name='mnist', image_size=32)).train.image_shape == (32, 32, 1)


def test_image_size_cannot_resize_a_source_read_on_demand():
  class OnDemand:
    num_examples, image_shape = 4, (10, 10, 3)

    def get(self, indices, step=0):
      raise AssertionError('not read')

  splits = dataclasses.replace(sources.load_dataset(data_config(max_train_examples=20)),
                               train=OnDemand())
  with pytest.raises(base.DataError, match='image_size=7.*set it to 0'):
    sources.resize_in_memory(splits, 7)


@pytest.mark.parametrize('shape', [(4, 6, 6, 2), (4, 6, 6, 5)])
def test_npz_images_with_two_or_five_channels_are_refused_with_the_rule(tmp_path, shape):
  """`--config.data.name=npz --config.data.path=x.npz` with [n, H, W, 2] images was
  accepted; docs/data_formats.md allows 1, 3 or 4 channels."""
  path = tmp_path / 'x.npz'
  np.savez(path, x_train=np.zeros(shape, np.uint8), y_train=np.array([0, 1, 0, 1]),
           x_test=np.zeros(shape, np.uint8)[:2], y_test=np.array([0, 1]))
  with pytest.raises(base.DataError) as e:
    sources.load_dataset(data_config(name='npz', path=str(path), num_classes=2))
  message = str(e.value)
  assert f'x_train of shape {shape} has {shape[-1]} channels' in message
  assert '1 (grey), 3 (RGB) or 4 (RGBA)' in message and '[n, H, W, C]' in message
  for channels in (1, 3, 4):  # the allowed counts still load
    np.savez(path, x_train=np.zeros(shape[:3] + (channels,), np.uint8),
             y_train=np.array([0, 1, 0, 1]), y_test=np.array([0, 1]),
             x_test=np.zeros((2,) + shape[1:3] + (channels,), np.uint8))
    splits = sources.load_dataset(data_config(name='npz', path=str(path), num_classes=2))
    assert splits.train.image_shape == (6, 6, channels)


def test_npz_path_that_is_a_directory_says_so_and_names_the_files_in_it(tmp_path):
  """It said 'does not exist'."""
  with pytest.raises(base.DataError) as e:
    sources.load_dataset(data_config(name='npz', path=str(tmp_path), num_classes=2))
  message = str(e.value)
  assert 'does not exist' not in message
  assert f'config.data.path={str(tmp_path)!r} is a directory' in message
  assert 'the .npz file itself' in message
  np.savez(tmp_path / 'mine.npz', x_train=np.zeros((2, 3, 3), np.uint8))
  with pytest.raises(base.DataError, match=r'this directory holds mine\.npz'):
    sources.load_dataset(data_config(name='npz', path=str(tmp_path), num_classes=2))


def test_cifar10_from_path_has_fixed_constants(tmp_path):
  train_rows, train_labels, _, _ = formats.write_cifar10(tmp_path, archive=True)
  splits = sources.load_dataset(data_config(
      name='cifar10', path=str(tmp_path), max_train_examples=4))
  assert splits.num_classes == 10
  assert splits.mean == datasets.DATASETS['cifar10'].mean
  assert splits.std == datasets.DATASETS['cifar10'].std
  assert splits.class_names[0] == 'airplane'
  assert splits.train.num_examples == 4 and splits.test.num_examples == 4
  images, labels = splits.train.get(np.arange(4))
  np.testing.assert_array_equal(images, formats.chw_rows_to_hwc(train_rows[:4]))
  np.testing.assert_array_equal(labels, train_labels[:4])


def test_fashion_mnist_from_path(tmp_path):
  formats.write_mnist(tmp_path)
  splits = sources.load_dataset(data_config(name='fashion_mnist', path=str(tmp_path)))
  assert splits.mean == (0.2860,) and splits.num_classes == 10
  assert splits.train.num_examples == 6


def test_npz_and_image_folder_get_generic_constants(tmp_path):
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=np.zeros((3, 2, 2, 3), np.uint8), y_train=[0, 1, 4],
           x_test=np.zeros((1, 2, 2, 3), np.uint8), y_test=[4])
  splits = sources.load_dataset(data_config(name='npz', path=str(path), num_classes=6))
  assert splits.num_classes == 6  # from the config, not 1 + the largest label
  assert splits.mean == (0.5,) * 3 and splits.std == (0.5,) * 3
  assert splits.class_names == ()

  for name in ('x', 'y'):
    for i in range(2):
      formats.write_png(str(tmp_path / 'f' / 'train' / name / f'{i}.png'),
                        np.zeros((5, 5), np.uint8))
  splits = sources.load_dataset(data_config(
      name='image_folder', path=str(tmp_path / 'f'), image_size=3))
  assert splits.num_classes == 2 and splits.mean == (0.5,)
  assert splits.class_names == ('x', 'y')
  assert splits.train.image_shape == (3, 3, 1)


def _npz(path, y_train, y_test):
  x = np.zeros((len(y_train), 4, 4, 1), np.uint8)
  np.savez(path, x_train=x, y_train=y_train, x_test=x[:len(y_test)], y_test=y_test)
  return str(path)


def test_class_count_comes_from_the_spec_and_labels_must_fit(tmp_path):
  path = _npz(tmp_path / 'd.npz', [0, 1, 1, 0], [1, 2])
  with pytest.raises(base.DataError, match=r"test split has class\(es\) 2 that the "
                     'training split lacks'):
    sources.load_dataset(data_config(name='npz', path=path, num_classes=3))
  path = _npz(tmp_path / 'one.npz', [1, 1, 1, 1], [1])
  with pytest.raises(base.DataError, match='holds only class 1; .*at least 2 classes'):
    sources.load_dataset(data_config(name='npz', path=path, num_classes=2))
  # Checked on the whole splits: a short quick look still loads.
  path = _npz(tmp_path / 'ok.npz', [0, 0, 0, 1], [1, 0])
  splits = sources.load_dataset(data_config(name='npz', path=path, num_classes=2,
                                            max_train_examples=2))
  assert splits.train.num_examples == 2


def test_configured_class_count_must_match_a_named_dataset():
  with pytest.raises(base.DataError, match=r"config.data.num_classes=7 but digits has "
                     r"10 classes \(0 \('0'\),"):
    sources.load_dataset(data_config(num_classes=7))
  splits = sources.load_dataset(data_config(num_classes=10))
  assert splits.num_classes == 10 and splits.class_names[3] == '3'


def test_test_class_missing_from_train_is_refused_for_every_in_memory_source():
  splits = sources.load_dataset(data_config())
  train = base.ArraySource(*splits.train.get(np.flatnonzero(
      splits.train.labels != 9)))
  broken = dataclasses.replace(splits, train=train)
  with pytest.raises(base.DataError, match=r"class\(es\) 9 \('9'\) that the training"):
    sources.check_classes(broken)


@pytest.mark.parametrize('name', ['image_folder', 'npz'])
def test_path_required(name):
  with pytest.raises(base.DataError, match='set config.data.path'):
    sources.load_dataset(data_config(name=name))


@pytest.mark.parametrize('name', ['svhn_cropped', 'imagenet2012', 'digits'])
def test_path_refused_where_unused(name):
  with pytest.raises(base.DataError, match='not read from local files'):
    sources.load_dataset(data_config(name=name, path='/some/where'))


def test_unknown_name():
  with pytest.raises(base.DataError, match='choose one of'):
    sources.load_dataset(data_config(name='cifar11'))


def test_truncate_keeps_lazy_sources_lazy():
  calls = []

  class Lazy:
    num_examples = 100
    image_shape = (2, 2, 1)

    def get(self, indices, step=0):
      calls.append(np.asarray(indices))
      return np.zeros((len(indices), 2, 2, 1), np.uint8), np.zeros(len(indices))

  splits = base.DatasetSplits('lazy', Lazy(), Lazy(), 2, (0.5,), (0.5,))
  truncated = sources._truncate(splits, data_config(max_train_examples=10))
  assert truncated.train.num_examples == 10 and not calls
  truncated.train.get(np.array([3, 9]))
  np.testing.assert_array_equal(calls[0], [3, 9])
  with pytest.raises(IndexError):
    truncated.train.get(np.array([10]))
  assert truncated.test.num_examples == 100


def test_import_stays_light():
  code = ('import sys, image_classification\n'
          'from image_classification.data import sources\n'
          'from image_classification.data.readers import local_files, tfds_source\n'
          'heavy = [m for m in ("tensorflow", "tensorflow_datasets", "PIL") '
          'if m in sys.modules]\n'
          'assert not heavy, heavy\n')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO_ROOT,
                 env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})


def _read_official_idx(name, folder):
  """All four arrays of an MNIST-family dataset read from its original IDX files,
  after checking the split sizes and image shape every such release has."""
  splits = sources.load_dataset(data_config(name=name, path=str(folder)))
  assert splits.train.num_examples == 60000 and splits.test.num_examples == 10000
  assert splits.train.image_shape == (28, 28, 1)
  return splits.train.get(np.arange(60000)) + splits.test.get(np.arange(10000))


@pytest.mark.skipif(not REAL_MNIST.is_dir(),
                    reason='set MNIST_IDX_DIR to a folder of the four MNIST IDX files')
def test_real_mnist_files():
  train_images, train_labels, _, test_labels = _read_official_idx('mnist', REAL_MNIST)
  np.testing.assert_array_equal(
      np.bincount(train_labels),
      [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      np.bincount(test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                 1009])
  assert abs(train_images.mean() - 33.32) < 0.01


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(),
                    reason='set FASHION_MNIST_IDX_DIR to a folder of the four '
                    'Fashion-MNIST IDX files')
def test_real_fashion_mnist_files():
  train_images, train_labels, test_images, test_labels = _read_official_idx(
      'fashion_mnist', REAL_FASHION_MNIST)
  np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
  # The official release's pixel means (0.2860 and 0.2868 of 255).
  assert abs(train_images.mean() - 72.94) < 0.01
  assert abs(test_images.mean() - 73.15) < 0.01
