"""Readers of the original distribution formats, on small files written in tmp_path.

The writers below produce the official layouts byte for byte: CIFAR "python version"
pickles (protocol 2, bytes keys, uint8 rows of 3072 values in R, G, B plane order,
numpy.core module paths as in the 2009 release) and big-endian IDX files.
"""
import gzip
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from image_classification.data import base
from image_classification.data.readers import local_files
from image_classification.data import record_split

# ----------------------------------------------------------------------- writers


def cifar_rows(n: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def cifar_pickle(rows: np.ndarray, labels, label_key: bytes = b'labels',
                 extra=None) -> bytes:
  """One batch as the official files store it."""
  batch = {b'batch_label': b'batch', label_key: list(map(int, labels)),
           b'data': rows, b'filenames': [b'x.png'] * len(rows)}
  batch.update(extra or {})
  data = pickle.dumps(batch, protocol=2)
  # The 2009 files were written by numpy 1.x under Python 2.
  return data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')


def write_cifar10(root, per_batch=3, n_test=4, archive=False, skip=()):
  """Writes cifar-10-batches-py/ (or the .tar.gz); returns the expected arrays."""
  files, train_rows, train_labels = {}, [], []
  for i in range(1, 6):
    rows = cifar_rows(per_batch, seed=i)
    labels = (np.arange(per_batch) + i) % 10
    files[f'data_batch_{i}'] = cifar_pickle(rows, labels)
    train_rows.append(rows)
    train_labels.append(labels)
  test_rows, test_labels = cifar_rows(n_test, seed=9), (np.arange(n_test) + 1) % 10
  files['test_batch'] = cifar_pickle(test_rows, test_labels)
  files['batches.meta'] = pickle.dumps({b'label_names': [b'a'] * 10}, protocol=2)
  for name in skip:
    del files[name]
  _write_tree(root, 'cifar-10-batches-py', files, archive and 'cifar-10-python.tar.gz')
  return (np.concatenate(train_rows), np.concatenate(train_labels), test_rows,
          test_labels)


def _write_tree(root, folder, files, archive_name):
  if archive_name:
    with tarfile.open(os.path.join(root, archive_name), 'w:gz') as tar:
      for name, data in files.items():
        info = tarfile.TarInfo(f'{folder}/{name}')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  else:
    os.makedirs(os.path.join(root, folder))
    for name, data in files.items():
      with open(os.path.join(root, folder, name), 'wb') as f:
        f.write(data)


def chw_rows_to_hwc(rows):
  return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  header = magic.to_bytes(4, 'big') + b''.join(
      d.to_bytes(4, 'big') for d in array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=6, n_test=3, rows=4, cols=5, gz=True,
                overrides=None):
  """Writes the four IDX files; returns (train_x, train_y, test_x, test_y)."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  arrays = {
      'train-images-idx3-ubyte': rng.integers(0, 256, (n_train, rows, cols)),
      'train-labels-idx1-ubyte': np.arange(n_train) % 10,
      't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test, rows, cols)),
      't10k-labels-idx1-ubyte': (np.arange(n_test) + 3) % 10,
  }
  for name, array in arrays.items():
    data = idx_bytes(array, 0x803 if array.ndim == 3 else 0x801)
    data = (overrides or {}).get(name, data)
    path = os.path.join(folder, name + ('.gz' if gz else ''))
    with (gzip.open if gz else open)(path, 'wb') as f:
      f.write(data)
  return tuple(a.astype(np.uint8) for a in arrays.values())


def write_png(path, array):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


# ----------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize('where', ['folder', 'parent', 'archive', 'parent_of_archive'])
def test_cifar10_reads_back_exactly(tmp_path, where):
  archive = where in ('archive', 'parent_of_archive')
  train_rows, train_labels, test_rows, test_labels = write_cifar10(
      tmp_path, archive=archive)
  path = {'folder': tmp_path / 'cifar-10-batches-py', 'parent': tmp_path,
          'archive': tmp_path / 'cifar-10-python.tar.gz',
          'parent_of_archive': tmp_path}[where]
  data = local_files.load_cifar(str(path), 'cifar10')
  assert data.num_classes == 10
  assert data.train.num_examples == 15 and data.test.num_examples == 4
  assert data.train.image_shape == (32, 32, 3)
  images, labels = data.train.get(np.arange(15))
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  np.testing.assert_array_equal(images, chw_rows_to_hwc(train_rows))
  np.testing.assert_array_equal(labels, train_labels)
  # HWC order spelled out: row = 1024 red, then green, then blue, each row-major.
  y, x = 5, 17
  for c in range(3):
    assert images[7, y, x, c] == train_rows[7, c * 1024 + y * 32 + x]
  test_images, test_y = data.test.get(np.arange(4))
  np.testing.assert_array_equal(test_images, chw_rows_to_hwc(test_rows))
  np.testing.assert_array_equal(test_y, test_labels)


@pytest.mark.parametrize('archive', [False, True])
def test_cifar100_uses_fine_labels(tmp_path, archive):
  train_rows, test_rows = cifar_rows(5, 1), cifar_rows(2, 2)
  fine_train, fine_test = np.array([99, 0, 42, 7, 63]), np.array([12, 88])
  files = {
      'train': cifar_pickle(train_rows, fine_train, b'fine_labels',
                            {b'coarse_labels': [1] * 5}),
      'test': cifar_pickle(test_rows, fine_test, b'fine_labels',
                           {b'coarse_labels': [2] * 2}),
  }
  _write_tree(tmp_path, 'cifar-100-python', files,
              archive and 'cifar-100-python.tar.gz')
  data = local_files.load_cifar(str(tmp_path), 'cifar100')
  assert data.num_classes == 100
  images, labels = data.train.get(np.arange(5))
  np.testing.assert_array_equal(images, chw_rows_to_hwc(train_rows))
  np.testing.assert_array_equal(labels, fine_train)
  np.testing.assert_array_equal(data.test.get(np.arange(2))[1], fine_test)


def test_cifar_missing_path_names_path_and_layout(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(base.DataError, match='nowhere') as error:
    local_files.load_cifar(str(missing), 'cifar10')
  for expected in ('cifar-10-python.tar.gz', 'cifar-10-batches-py', 'data_batch_1',
                   'test_batch'):
    assert expected in str(error.value)


def test_cifar_empty_folder_is_an_error(tmp_path):
  with pytest.raises(base.DataError, match='no CIFAR data found'):
    local_files.load_cifar(str(tmp_path), 'cifar100')


def test_cifar_archive_missing_test_batch(tmp_path):
  write_cifar10(tmp_path, archive=True, skip=('test_batch',))
  archive = str(tmp_path / 'cifar-10-python.tar.gz')
  with pytest.raises(base.DataError,
                     match='cifar-10-batches-py/test_batch') as error:
    local_files.load_cifar(archive, 'cifar10')
  assert archive in str(error.value)


def test_cifar_folder_missing_batch(tmp_path):
  write_cifar10(tmp_path, skip=('data_batch_3',))
  with pytest.raises(base.DataError, match='data_batch_3.*is missing'):
    local_files.load_cifar(str(tmp_path), 'cifar10')


def test_cifar_not_an_archive(tmp_path):
  bogus = tmp_path / 'cifar-10-python.tar.gz'
  bogus.write_bytes(b'not a tar file')
  with pytest.raises(base.DataError, match='not a readable tar.gz'):
    local_files.load_cifar(str(bogus), 'cifar10')


def test_cifar_wrong_row_size(tmp_path):
  write_cifar10(tmp_path)
  bad = cifar_pickle(np.zeros((2, 3000), np.uint8), [0, 1])
  (tmp_path / 'cifar-10-batches-py' / 'test_batch').write_bytes(bad)
  with pytest.raises(base.DataError, match='3072'):
    local_files.load_cifar(str(tmp_path), 'cifar10')


def test_cifar_pickle_cannot_run_code(tmp_path):
  write_cifar10(tmp_path)

  class Exploit:
    def __reduce__(self):
      return (os.system, ('echo pwned',))

  (tmp_path / 'cifar-10-batches-py' / 'test_batch').write_bytes(
      pickle.dumps({b'data': Exploit()}, protocol=2))
  with pytest.raises(base.DataError, match='refusing to load'):
    local_files.load_cifar(str(tmp_path), 'cifar10')


# ----------------------------------------------------------------------- IDX


@pytest.mark.parametrize('gz', [True, False])
def test_idx_reads_back_exactly(tmp_path, gz):
  train_x, train_y, test_x, test_y = write_mnist(tmp_path, gz=gz)
  data = local_files.load_idx(str(tmp_path))
  assert data.num_classes == 10
  # Non-square images: rows (height) then columns (width), one channel.
  assert data.train.image_shape == (4, 5, 1)
  images, labels = data.train.get(np.arange(6))
  np.testing.assert_array_equal(images[..., 0], train_x)
  np.testing.assert_array_equal(labels, train_y)
  assert labels.dtype == np.int32
  images, labels = data.test.get(np.arange(3))
  np.testing.assert_array_equal(images[..., 0], test_x)
  np.testing.assert_array_equal(labels, test_y)


def test_idx_missing_folder_lists_files(tmp_path):
  with pytest.raises(base.DataError, match='nowhere') as error:
    local_files.load_idx(str(tmp_path / 'nowhere'))
  for name in local_files.MNIST_FILES.values():
    assert name in str(error.value)


def test_idx_missing_file(tmp_path):
  write_mnist(tmp_path)
  os.remove(tmp_path / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(base.DataError, match='t10k-labels-idx1-ubyte'):
    local_files.load_idx(str(tmp_path))


def test_idx_truncated_payload(tmp_path):
  full = idx_bytes(np.zeros((6, 4, 5)), 0x803)
  write_mnist(tmp_path, overrides={'train-images-idx3-ubyte': full[:-7]})
  with pytest.raises(base.DataError, match='train-images-idx3-ubyte.gz.*truncated'):
    local_files.load_idx(str(tmp_path))


def test_idx_truncated_gzip_stream(tmp_path):
  write_mnist(tmp_path)
  path = tmp_path / 'train-images-idx3-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(base.DataError, match='train-images-idx3-ubyte.gz'):
    local_files.load_idx(str(tmp_path))


def test_idx_wrong_magic(tmp_path):
  labels_as_images = idx_bytes(np.zeros((6,)), 0x801)
  write_mnist(tmp_path, overrides={'train-images-idx3-ubyte': labels_as_images})
  with pytest.raises(base.DataError, match='magic number 0x00000801.*0x00000803'):
    local_files.load_idx(str(tmp_path))


def test_idx_count_mismatch(tmp_path):
  labels = idx_bytes(np.zeros((5,)), 0x801)
  write_mnist(tmp_path, overrides={'train-labels-idx1-ubyte': labels})
  with pytest.raises(base.DataError, match='6 images but .* 5 labels'):
    local_files.load_idx(str(tmp_path))


# ----------------------------------------------------------------------- folder


def _pixels(seed, shape):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_image_folder_with_test_split(tmp_path):
  expected = {}
  for split, count in (('train', 2), ('test', 1)):
    for c, name in enumerate(['zebra', 'ant', 'mole']):  # Sorted: ant, mole, zebra.
      for i in range(count):
        pixels = _pixels(100 * c + 10 * i + (split == 'test'), (6, 7, 3))
        write_png(str(tmp_path / split / name / f'{i}.png'), pixels)
        expected.setdefault(split, []).append((name, pixels))
  data = local_files.load_image_folder(str(tmp_path))
  assert data.class_names == ('ant', 'mole', 'zebra')
  assert data.num_classes == 3
  assert data.train.image_shape == (6, 7, 3)
  images, labels = data.train.get(np.arange(6))
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
  by_class = {name: [p for n, p in expected['train'] if n == name]
              for name in data.class_names}
  for k, name in enumerate(data.class_names):
    np.testing.assert_array_equal(images[2 * k:2 * k + 2], np.stack(by_class[name]))
  assert data.private_evaluation_note == ''  # a test/ folder: not the private data
  test_images, test_labels = data.test.get(np.arange(3))
  np.testing.assert_array_equal(test_labels, [0, 1, 2])
  np.testing.assert_array_equal(
      test_images[2], [p for n, p in expected['test'] if n == 'zebra'][0])


def test_image_folder_held_out_split_and_grayscale(tmp_path):
  for name in ('a', 'b'):
    for i in range(5):
      write_png(str(tmp_path / 'train' / name / f'{i}.png'), _pixels(i, (4, 4)))
  data = local_files.load_image_folder(str(tmp_path))
  assert data.train.image_shape == (4, 4, 1)
  # Each image's side is its path's (tests/data/test_record_split.py): the split
  # holds exactly the images whose path the hash holds out, whatever the others.
  paths = [f'train/{n}/{i}.png'.encode() for n in ('a', 'b') for i in range(5)]
  held = record_split.held_out(paths, record_split.TEST_FRACTION, record_split.TEST_KEY)
  assert list(data.test.record_ids) == [p for p, h in zip(paths, held) if h]
  assert list(data.train.record_ids) == [p for p, h in zip(paths, held) if not h]
  assert data.train.num_examples + data.test.num_examples == 10
  assert data.test.num_examples >= 1 and set(data.train.labels) == {0, 1}
  test_images, test_labels = data.test.get(np.arange(data.test.num_examples))
  np.testing.assert_array_equal(test_labels, [int(p[6:7] == b'b') for p in paths
                                              if p in set(data.test.record_ids)])
  again = local_files.load_image_folder(str(tmp_path))
  np.testing.assert_array_equal(again.test.get(np.arange(data.test.num_examples))[0],
                                test_images)
  # The evaluation split is carved out of the private folder: the report must say so.
  assert 'private data' in data.private_evaluation_note
  assert 'WITHOUT noise' in data.private_evaluation_note


def test_image_folder_sizes(tmp_path):
  write_png(str(tmp_path / 'train' / 'a' / '0.png'), _pixels(0, (8, 8, 3)))
  write_png(str(tmp_path / 'train' / 'a' / '1.jpg'), _pixels(1, (9, 12, 3)))
  write_png(str(tmp_path / 'train' / 'b' / '0.png'), _pixels(2, (8, 8, 3)))
  write_png(str(tmp_path / 'test' / 'b' / '0.png'), _pixels(3, (5, 5, 3)))
  with pytest.raises(base.DataError, match='1.jpg.*image_size'):
    local_files.load_image_folder(str(tmp_path))
  data = local_files.load_image_folder(str(tmp_path), image_size=6)
  assert data.train.image_shape == (6, 6, 3)
  assert data.test.num_examples == 1


def write_png16(path, values):
  """A 16-bit grey PNG (PIL mode I;16) of uint16 ``values``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(values.astype(np.uint16)).save(path)
  with Image.open(path) as picture:
    assert picture.mode == 'I;16'


def test_image_folder_scales_16_bit_pngs_to_0_255(tmp_path):
  """A 16-bit grey PNG holds 257 * v for the 8-bit value v; it was read as nearly
  all 255 (PIL's convert clips)."""
  eight_bit = {}
  for name in ('a', 'b'):
    for i in range(3):
      pixels = _pixels(10 * len(name) + i + (name == 'b'), (4, 5))
      eight_bit[(name, i)] = pixels
      write_png16(str(tmp_path / 'train' / name / f'{i}.png'),
                  pixels.astype(np.uint16) * 257)
  data = local_files.load_image_folder(str(tmp_path))
  assert data.train.image_shape == (4, 5, 1)
  images = np.concatenate([data.train.get(np.arange(data.train.num_examples))[0],
                           data.test.get(np.arange(data.test.num_examples))[0]])
  expected = np.stack(list(eight_bit.values()))[..., None]
  # Every 8-bit image comes back exactly (the split only reorders them).
  assert sorted(map(bytes, images)) == sorted(map(bytes, expected))
  assert images.mean() == pytest.approx(expected.mean())  # not ~255
  # Beside colour images, 16-bit grey becomes grey RGB with the same scaled values.
  write_png(str(tmp_path / 'train' / 'b' / 'rgb.png'), _pixels(7, (4, 5, 3)))
  mixed = local_files.load_image_folder(str(tmp_path))
  assert mixed.train.image_shape == (4, 5, 3)
  got = set(map(bytes, np.concatenate(
      [mixed.train.get(np.arange(mixed.train.num_examples))[0],
       mixed.test.get(np.arange(mixed.test.num_examples))[0]])))
  assert {bytes(np.repeat(e, 3, -1)) for e in expected} <= got


def test_images_without_a_0_255_reading_are_refused_naming_the_file():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  floats = Image.fromarray(np.full((2, 2), 0.5, np.float32))
  with pytest.raises(base.DataError, match=r"'x\.png'.*mode F.*8-bit"):
    local_files.convert_picture(floats, 'L', 'x.png')
  wide = Image.fromarray(np.full((2, 2), 70000, np.int32))
  with pytest.raises(base.DataError, match=r"'y\.png'.*outside the 16-bit range"):
    local_files.convert_picture(wide, 'L', 'y.png')
  # 32-bit integer mode 'I' within 0..65535 (older Pillow's 16-bit PNGs) is scaled.
  old_style = Image.fromarray(np.array([[0, 257], [65535, 32896]], np.int32))
  assert np.asarray(local_files.convert_picture(old_style, 'L', 'z.png')).tolist() == [
      [0, 1], [255, 128]]


def test_image_folder_errors(tmp_path):
  with pytest.raises(base.DataError, match='train/<class>'):
    local_files.load_image_folder(str(tmp_path))
  os.makedirs(tmp_path / 'train' / 'a')
  with pytest.raises(base.DataError, match=r"1 class sub-folder\(s\) \['a'\].*at least 2"):
    local_files.load_image_folder(str(tmp_path))  # one class: always "right"
  os.makedirs(tmp_path / 'train' / 'b')
  with pytest.raises(base.DataError, match='holds no'):
    local_files.load_image_folder(str(tmp_path))
  write_png(str(tmp_path / 'train' / 'a' / '0.png'), _pixels(0, (4, 4, 3)))
  write_png(str(tmp_path / 'train' / 'b' / '0.png'), _pixels(1, (4, 4, 3)))
  write_png(str(tmp_path / 'test' / 'stray' / '0.png'), _pixels(0, (4, 4, 3)))
  with pytest.raises(base.DataError, match='stray'):
    local_files.load_image_folder(str(tmp_path))


# ----------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
  path = tmp_path / 'data.npz'
  x_train, x_test = _pixels(0, (5, 3, 4)), _pixels(1, (2, 3, 4))
  np.savez(path, x_train=x_train, y_train=np.array([[0], [3], [1], [2], [0]]),
           x_test=x_test, y_test=np.array([1, 2]))
  data = local_files.load_npz(str(path), num_classes=4)
  assert data.num_classes == 4
  assert data.train.image_shape == (3, 4, 1)
  images, labels = data.train.get(np.arange(5))
  np.testing.assert_array_equal(images[..., 0], x_train)
  np.testing.assert_array_equal(labels, [0, 3, 1, 2, 0])
  np.testing.assert_array_equal(data.test.get(np.arange(2))[0][..., 0], x_test)


def test_npz_errors(tmp_path):
  with pytest.raises(base.DataError, match='x_train, y_train, x_test, y_test'):
    local_files.load_npz(str(tmp_path / 'missing.npz'), num_classes=2)
  path = tmp_path / 'partial.npz'
  np.savez(path, x_train=np.zeros((1, 2, 2, 1), np.uint8), y_train=np.zeros(1, int))
  with pytest.raises(base.DataError, match="'x_test', 'y_test'"):
    local_files.load_npz(str(path), num_classes=2)
  path = tmp_path / 'floats.npz'
  np.savez(path, x_train=np.zeros((1, 2, 2, 1)), y_train=np.zeros(1, int),
           x_test=np.zeros((1, 2, 2, 1)), y_test=np.zeros(1, int))
  with pytest.raises(base.DataError, match='integer pixels'):
    local_files.load_npz(str(path), num_classes=2)


def _save_npz(path, x_train, y_train, x_test=None, y_test=None):
  x_test = x_train[:2] if x_test is None else x_test
  y_test = np.asarray(y_train)[:2] if y_test is None else y_test
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return str(path)


@pytest.mark.parametrize('shape', [(4, 3, 32, 32), (4, 1, 28, 28), (4, 3, 8, 5)])
def test_npz_channel_first_is_refused_with_the_transpose(tmp_path, shape):
  path = _save_npz(tmp_path / 'chw.npz', np.zeros(shape, np.uint8), [0, 1, 0, 1])
  with pytest.raises(base.DataError) as e:
    local_files.load_npz(path, num_classes=2)
  message = str(e.value)
  assert f'x_train of shape {shape} looks channel-first' in message
  assert 'x.transpose(0, 2, 3, 1)' in message
  assert str((shape[0], shape[2], shape[3], shape[1])) in message


@pytest.mark.parametrize('shape', [(4, 3, 32, 3), (4, 32, 32, 3), (4, 1, 5, 1),
                                   (4, 3, 7, 4), (4, 28, 28)])
def test_npz_channels_last_shapes_still_load(tmp_path, shape):
  path = _save_npz(tmp_path / 'hwc.npz', np.zeros(shape, np.uint8), [0, 1, 0, 1])
  data = local_files.load_npz(path, num_classes=2)
  assert data.train.image_shape == (shape + (1,))[1:4]


def test_npz_needs_num_classes_and_refuses_labels_outside(tmp_path):
  x = np.zeros((3, 4, 4, 1), np.uint8)
  path = _save_npz(tmp_path / 'd.npz', x, [0, 1, 7], x[:1], [1])
  with pytest.raises(base.DataError, match=r'config.data.num_classes=0: .*'
                     r'--config.data.num_classes=10'):
    local_files.load_npz(path)  # {0, 1, 7} used to give an 8-way head silently
  with pytest.raises(base.DataError, match=r"y_train \(config.data.num_classes=3\): "
                     r'labels must lie in \[0, 3\), found \[0, 7\]'):
    local_files.load_npz(path, num_classes=3)
  assert local_files.load_npz(path, num_classes=8).num_classes == 8
  path = _save_npz(tmp_path / 'neg.npz', x, [0, 1, -1], x[:1], [1])
  with pytest.raises(base.DataError, match='labels must lie in'):
    local_files.load_npz(path, num_classes=2)


def test_npz_truncated_or_not_a_zip(tmp_path):
  good = _save_npz(tmp_path / 'good.npz', _pixels(0, (20, 8, 8, 3)), [0, 1] * 10)
  with open(good, 'rb') as f:
    raw = f.read()
  cases = {
      'truncated.npz': (raw[:len(raw) // 2], 'is truncated or corrupt'),
      'truncated_end.npz': (raw[:-30], 'is truncated or corrupt'),
      'text.npz': (b'x_train,y_train\n1,2\n', "is not a zip archive \\(starts with b'x_tr'"),
      'empty.npz': (b'', 'is not a zip archive'),
  }
  buffer = io.BytesIO()
  np.save(buffer, np.zeros(3))
  cases['array.npz'] = (buffer.getvalue(), r'is a single .npy array \(np.save\)')
  for name, (content, expected) in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(base.DataError, match=expected) as e:
      local_files.load_npz(str(path), num_classes=2)
    assert 'allow_pickle' not in str(e.value) and 'x_train, y_train' in str(e.value)


def test_image_folder_path_that_is_a_file_says_so(tmp_path):
  picture = tmp_path / 'one.png'
  picture.write_bytes(b'not read')
  with pytest.raises(base.DataError, match=r"'.*one.png' is a file, not a folder.*"
                     r'train/<class>/'):
    local_files.load_image_folder(str(picture))
