"""Readers for datasets in their original distribution formats, from a local path.

Each reader returns a ``LocalData`` (train and test ``ArraySource``s held in host
memory, or on-disk sources for an image folder read from disk). Every missing or
malformed input raises ``base.DataError`` naming the path and the layout that was
expected. Formats:

* CIFAR-10 / CIFAR-100 "python version": the official ``.tar.gz`` or its extracted
  folder (pickled batches of 3072-byte rows in channel-major order).
* MNIST-family IDX files (MNIST, Fashion-MNIST), gzipped or not.
* An image folder: ``path/train/<class>/*.png|jpg`` and optionally
  ``path/test/<class>/*.png|jpg``; read into memory, or left on disk
  (``load_image_folder_on_disk``: each read decodes and crops, input/on_disk.py).
* A ``.npz`` file with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
  the number of classes given in the config.

Nothing here computes statistics of the images: normalisation constants are fixed
per dataset in datasets.py.
"""
import dataclasses
import gzip
import io
import os
import pickle
import tarfile
from typing import Callable
import zipfile
import zlib

import numpy as np

from image_classification.data import base
from image_classification.input import on_disk
from image_classification.data import record_split


@dataclasses.dataclass(frozen=True)
class LocalData:
  """Train and test splits read from local files."""
  train: base.ImageSource  # an ArraySource, or an on-disk source (on_disk.py)
  test: base.ImageSource
  num_classes: int
  class_names: tuple[str, ...] = ()
  private_evaluation_note: str = ''  # see base.DatasetSplits


# --------------------------------------------------------------------------- CIFAR

@dataclasses.dataclass(frozen=True)
class _CifarLayout:
  archive: str          # official archive name
  folder: str           # folder inside the archive
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  label_key: bytes
  num_classes: int


CIFAR_LAYOUTS = {
    'cifar10': _CifarLayout(
        archive='cifar-10-python.tar.gz', folder='cifar-10-batches-py',
        train_files=tuple(f'data_batch_{i}' for i in range(1, 6)),
        test_files=('test_batch',), label_key=b'labels', num_classes=10),
    'cifar100': _CifarLayout(
        archive='cifar-100-python.tar.gz', folder='cifar-100-python',
        train_files=('train',), test_files=('test',), label_key=b'fine_labels',
        num_classes=100),
}

_CIFAR_ROW_BYTES = 3 * 32 * 32

# The only globals a CIFAR batch pickle may reference: numpy array reconstruction
# (old and new numpy module paths) and the bytes constructor that Python 3 writes in
# protocol 2. Anything else is refused, so a malicious pickle cannot run code.
_SAFE_PICKLE_GLOBALS = frozenset({
    ('_codecs', 'encode'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'),
    ('numpy._core.numeric', '_frombuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
})


class _SafeUnpickler(pickle.Unpickler):
  """Unpickles plain containers and numpy arrays, nothing else."""

  def find_class(self, module, name):
    if (module, name) in _SAFE_PICKLE_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f'refusing to load {module}.{name}: a CIFAR batch holds only numpy '
        'arrays, lists and dicts')


def _cifar_layout_text(layout: _CifarLayout) -> str:
  files = ', '.join(layout.train_files + layout.test_files)
  return (f'the official {layout.archive}, or its extracted folder '
          f'{layout.folder}/ with the pickled batches {files}, or a folder '
          'containing either')


def _find_cifar(path: str, layout: _CifarLayout) -> tuple[str, str]:
  """Returns ('folder' | 'archive', location) for a CIFAR path."""
  expected = _cifar_layout_text(layout)
  if not path or not os.path.exists(path):
    raise base.DataError(f'CIFAR path {path!r} does not exist; expected {expected}')
  if os.path.isfile(path):
    return 'archive', path
  names = layout.train_files + layout.test_files
  if any(os.path.isfile(os.path.join(path, n)) for n in names):
    return 'folder', path
  folder = os.path.join(path, layout.folder)
  if os.path.isdir(folder):
    return 'folder', folder
  archive = os.path.join(path, layout.archive)
  if os.path.isfile(archive):
    return 'archive', archive
  raise base.DataError(f'no CIFAR data found in {path!r}; expected {expected}')


def _unpickle(data: bytes, where: str) -> dict:
  try:
    batch = _SafeUnpickler(io.BytesIO(data), encoding='bytes').load()
  except Exception as e:  # pylint: disable=broad-except
    raise base.DataError(f'{where} is not a readable CIFAR batch pickle: {e}') from e
  if not isinstance(batch, dict):
    raise base.DataError(f'{where} should hold a dict, found {type(batch).__name__}')
  return batch


def _cifar_batch(batch: dict, layout: _CifarLayout, where: str):
  """Decodes one batch dict into (images uint8 [n,32,32,3], labels int32 [n])."""
  def field(key: bytes):
    for k in (key, key.decode()):
      if k in batch:
        return batch[k]
    raise base.DataError(
        f'{where} has no {key!r} entry (found keys {sorted(map(str, batch))}); '
        f'a CIFAR batch holds {b"data"!r} and {layout.label_key!r}')

  data = np.asarray(field(b'data'))
  labels = np.asarray(field(layout.label_key))
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW_BYTES:
    raise base.DataError(
        f'{where}: {b"data"!r} should be uint8 [n, {_CIFAR_ROW_BYTES}], got '
        f'{data.dtype} {data.shape}')
  if labels.shape != (data.shape[0],):
    raise base.DataError(
        f'{where}: {data.shape[0]} images but {labels.shape} labels')
  _check_labels(labels, layout.num_classes, where)
  # Rows are 1024 red, 1024 green, then 1024 blue values, each plane row-major.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _check_labels(labels: np.ndarray, num_classes: int, where: str):
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise base.DataError(
        f'{where}: labels must lie in [0, {num_classes}), found '
        f'[{labels.min()}, {labels.max()}]')


def load_cifar(path: str, name: str) -> LocalData:
  """Reads CIFAR-10 (``name='cifar10'``) or CIFAR-100 (fine labels) from ``path``."""
  layout = CIFAR_LAYOUTS[name]
  kind, location = _find_cifar(path, layout)
  if kind == 'folder':
    def read(file_name):
      file_path = os.path.join(location, file_name)
      if not os.path.isfile(file_path):
        raise base.DataError(
            f'{file_path!r} is missing; expected {_cifar_layout_text(layout)}')
      with open(file_path, 'rb') as f:
        return f.read(), file_path
    return _read_cifar_files(read, layout)
  wanted = {f'{layout.folder}/{n}' for n in layout.train_files + layout.test_files}
  contents = {}
  try:
    # One sequential pass: seeking back in a gzip stream would decompress it again.
    with tarfile.open(location, 'r:*') as archive:
      for member in archive:
        name = member.name[2:] if member.name.startswith('./') else member.name
        if member.isfile() and name in wanted:
          contents[name] = archive.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise base.DataError(
        f'{location!r} is not a readable tar.gz archive ({e}); expected '
        f'{_cifar_layout_text(layout)}') from e

  def read_member(file_name):
    name = f'{layout.folder}/{file_name}'
    if name not in contents:
      raise base.DataError(
          f'archive {location!r} has no member {name}; expected '
          f'{_cifar_layout_text(layout)}')
    return contents[name], f'{location}:{name}'
  return _read_cifar_files(read_member, layout)


def _read_cifar_files(read: Callable[[str], tuple[bytes, str]],
                      layout: _CifarLayout) -> LocalData:
  def split(file_names):
    parts = [_decode(*read(n), layout) for n in file_names]
    images, labels = zip(*parts)
    return base.ArraySource(np.concatenate(images), np.concatenate(labels))
  return LocalData(train=split(layout.train_files), test=split(layout.test_files),
                   num_classes=layout.num_classes)


def _decode(data: bytes, where: str, layout: _CifarLayout):
  return _cifar_batch(_unpickle(data, where), layout, where)


# --------------------------------------------------------------------------- IDX

MNIST_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
_IDX_IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _mnist_layout_text() -> str:
  names = ', '.join(MNIST_FILES.values())
  return f'a folder with the IDX files {names} (each optionally gzipped, .gz)'


def read_idx(file_path: str, expected_magic: int) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) of unsigned bytes, checking its header."""
  try:
    if file_path.endswith('.gz'):
      with gzip.open(file_path, 'rb') as f:
        raw = f.read()
    else:
      with open(file_path, 'rb') as f:
        raw = f.read()
  except (OSError, EOFError) as e:
    raise base.DataError(f'cannot read IDX file {file_path!r}: {e}') from e
  if len(raw) < 4:
    raise base.DataError(f'IDX file {file_path!r} is truncated: {len(raw)} bytes')
  magic = int.from_bytes(raw[:4], 'big')
  if magic != expected_magic:
    raise base.DataError(
        f'IDX file {file_path!r} has magic number 0x{magic:08x}, expected '
        f'0x{expected_magic:08x}')
  ndim = expected_magic & 0xff
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise base.DataError(
        f'IDX file {file_path!r} is truncated: {len(raw)} bytes, header needs {header}')
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  expected = header + int(np.prod(dims))
  if len(raw) != expected:
    raise base.DataError(
        f'IDX file {file_path!r} has {len(raw)} bytes but its header {dims} needs '
        f'{expected}: {"truncated" if len(raw) < expected else "trailing bytes"}')
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: str, stem: str) -> str:
  for candidate in (stem, stem + '.gz'):
    file_path = os.path.join(folder, candidate)
    if os.path.isfile(file_path):
      return file_path
  raise base.DataError(
      f'{os.path.join(folder, stem)}[.gz] is missing; expected {_mnist_layout_text()}')


def load_idx(path: str, num_classes: int = 10) -> LocalData:
  """Reads MNIST or Fashion-MNIST from a folder of IDX files."""
  if not path or not os.path.isdir(path):
    raise base.DataError(
        f'IDX folder {path!r} does not exist; expected {_mnist_layout_text()}')

  def split(prefix):
    images_path = _find_idx(path, MNIST_FILES[f'{prefix}_images'])
    labels_path = _find_idx(path, MNIST_FILES[f'{prefix}_labels'])
    images = read_idx(images_path, _IDX_IMAGE_MAGIC)
    labels = read_idx(labels_path, _IDX_LABEL_MAGIC)
    if images.shape[0] != labels.shape[0]:
      raise base.DataError(
          f'{images_path!r} has {images.shape[0]} images but {labels_path!r} has '
          f'{labels.shape[0]} labels')
    _check_labels(labels, num_classes, labels_path)
    return base.ArraySource(images[..., None].copy(), labels.astype(np.int32))

  return LocalData(train=split('train'), test=split('test'), num_classes=num_classes)


# --------------------------------------------------------------------------- folder

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def _folder_layout_text() -> str:
  return ('path/train/<class>/*.png|jpg|jpeg and optionally '
          'path/test/<class>/*.png|jpg|jpeg (one sub-folder per class)')


def _list_images(class_dir: str) -> list[str]:
  return sorted(os.path.join(class_dir, n) for n in os.listdir(class_dir)
                if n.lower().endswith(IMAGE_EXTENSIONS)
                and os.path.isfile(os.path.join(class_dir, n)))


# PIL modes of one integer channel wider than 8 bits: a 16-bit grey PNG opens as
# 'I;16' (older Pillow: 'I'). PIL's convert('L') CLIPS them to 255 (a 16-bit image
# becomes nearly all white); convert_picture scales 0..65535 to 0..255 instead.
WIDE_GRAY_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
GRAY_MODES = ('1', 'L') + WIDE_GRAY_MODES
_WIDE_GRAY_MAX = 65535


def convert_picture(picture, mode: str, file_path: str):
  """A PIL image in ``mode`` ('L' or 'RGB') with 8-bit values, read as the file means
  them: 16-bit grey (0..65535) is scaled to 0..255, not clipped. Refuses, naming the
  file, what has no 0..255 reading (float images, integers outside 0..65535)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    if picture.mode in WIDE_GRAY_MODES:
      values = np.asarray(picture)
      if values.size and (values.min() < 0 or values.max() > _WIDE_GRAY_MAX):
        raise base.DataError(
            f'image {file_path!r} (PIL mode {picture.mode}) has values '
            f'{values.min()}..{values.max()}, outside the 16-bit range 0..65535; save '
            'it as 8-bit (0..255) or 16-bit PNG')
      scaled = np.round(values.astype(np.float64) * (255.0 / _WIDE_GRAY_MAX))
      picture = Image.fromarray(scaled.astype(np.uint8), mode='L')
    elif picture.mode == 'F' or picture.mode.startswith('I'):
      raise base.DataError(
          f'image {file_path!r} has PIL mode {picture.mode} (float or wide integer '
          'pixels) with no fixed 0..255 reading; save it as an 8-bit or 16-bit PNG '
          'or a JPEG')
    return picture.convert(mode)
  except (OSError, ValueError) as e:
    if isinstance(e, base.DataError):
      raise
    raise base.DataError(f'cannot decode image {file_path!r}: {e}') from e


def _read_images(files: list[str], image_size: int) -> np.ndarray:
  """Reads image files into uint8 [n, H, W, C]; one channel only if all are gray
  (8- or 16-bit; 16-bit values are scaled to 0..255, see convert_picture)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def open_image(file_path):
    try:
      return Image.open(file_path)
    except (OSError, ValueError) as e:
      raise base.DataError(f'cannot read image {file_path!r}: {e}') from e

  modes = []
  for file_path in files:  # Headers only: the mode is known without decoding.
    with open_image(file_path) as picture:
      modes.append(picture.mode)
  grayscale = all(m in GRAY_MODES for m in modes)
  arrays = []
  first_size = None
  for file_path in files:
    with open_image(file_path) as picture:
      picture = convert_picture(picture, 'L' if grayscale else 'RGB', file_path)
    if image_size:
      picture = picture.resize((image_size, image_size), Image.Resampling.BILINEAR)
    elif first_size is None:
      first_size = picture.size
    elif picture.size != first_size:
      raise base.DataError(
          f'image {file_path!r} is {picture.size[0]}x{picture.size[1]} (width x '
          f'height) but {files[0]!r} is {first_size[0]}x{first_size[1]}; set '
          'config.data.image_size to resize all images to one square size')
    array = np.asarray(picture, dtype=np.uint8)
    arrays.append(array[..., None] if grayscale else array)
  return np.stack(arrays)


@dataclasses.dataclass(frozen=True)
class _FolderListing:
  """The files and labels of an image folder, before any image is read."""
  path: str
  train_dir: str
  train_files: list[str]
  train_labels: np.ndarray
  test_dir: str | None  # None: no test/ folder
  test_files: list[str]
  test_labels: np.ndarray
  class_names: tuple[str, ...]

  def held_out_split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Without a test/ folder: (train indices, test indices, ids) of train/'s files,
    each file's side decided by a keyed hash of its path (data/record_split.py)."""
    ids = record_split.path_ids(self.train_files, self.path)
    train_idx, test_idx = record_split.split(ids, record_split.TEST_FRACTION,
                                             record_split.TEST_KEY)
    _check_held_out_split(self.train_dir, self.class_names, self.train_labels,
                          train_idx, test_idx)
    return train_idx, test_idx, ids

  @property
  def private_evaluation_note(self) -> str:
    if self.test_dir is not None:
      return ''
    return (
        f'The evaluation split is about {record_split.TEST_FRACTION:.0%} of the private '
        f'folder {self.train_dir} (there is no test/ folder), each image chosen by a '
        'hash of its path: it is private data, held out from training, and the '
        'accuracy measured on it is released WITHOUT noise (it is not covered by the '
        'guarantee). Add a test/ folder of data you may publish results on to avoid '
        'this.')


def _list_image_folder(path: str) -> _FolderListing:
  """Lists ``path/train/<class>/*`` (and ``path/test/<class>/*``); checks the layout."""
  train_dir = os.path.join(path or '', 'train')
  if path and os.path.isfile(path):
    raise base.DataError(
        f'image folder {path!r} is a file, not a folder; give the folder that holds '
        'train/<class>/ (and optionally test/<class>/)')
  if not path or not os.path.isdir(train_dir):
    raise base.DataError(
        f'image folder {path!r} has no train/ sub-folder; expected '
        f'{_folder_layout_text()}')
  class_names = tuple(sorted(
      n for n in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, n))))
  if len(class_names) < 2:
    raise base.DataError(
        f'{train_dir!r} has {len(class_names)} class sub-folder(s) {list(class_names)}; '
        'a classifier needs at least 2 (with one class every prediction is right). '
        f'Expected {_folder_layout_text()}')

  def collect(split_dir, require_images):
    files, labels = [], []
    for label, name in enumerate(class_names):
      class_dir = os.path.join(split_dir, name)
      found = _list_images(class_dir) if os.path.isdir(class_dir) else []
      if require_images and not found:
        raise base.DataError(
            f'{class_dir!r} holds no {"/".join(IMAGE_EXTENSIONS)} images; expected '
            f'{_folder_layout_text()}')
      files.extend(found)
      labels.extend([label] * len(found))
    return files, np.array(labels, np.int32)

  train_files, train_labels = collect(train_dir, require_images=True)
  test_dir = os.path.join(path, 'test')
  if not os.path.isdir(test_dir):
    return _FolderListing(path, train_dir, train_files, train_labels, None, [],
                          np.zeros(0, np.int32), class_names)
  unknown = sorted(
      n for n in os.listdir(test_dir)
      if os.path.isdir(os.path.join(test_dir, n)) and n not in class_names)
  if unknown:
    raise base.DataError(
        f'{test_dir!r} has classes {unknown} that train/ lacks; every test class '
        f'needs a train/ folder. Expected {_folder_layout_text()}')
  test_files, test_labels = collect(test_dir, require_images=False)
  return _FolderListing(path, train_dir, train_files, train_labels, test_dir,
                        test_files, test_labels, class_names)


def load_image_folder(path: str, image_size: int = 0) -> LocalData:
  """Reads ``path/train/<class>/*`` (and ``path/test/<class>/*`` if present).

  Classes are the sub-folders of ``train/``, sorted by name. Without a ``test/``
  folder, about 20% of ``train/`` (record_split.TEST_FRACTION) is held out for
  evaluation, each image by a keyed hash of its path relative to ``path``: adding or
  removing one image moves no other between the splits (data/record_split.py).
  Images are resized to ``image_size`` x ``image_size`` when ``image_size > 0``;
  otherwise they must all share one size. Every training record carries its relative
  path as its id, from which a validation split is decided the same way.
  """
  listing = _list_image_folder(path)
  train_files, train_labels = listing.train_files, listing.train_labels
  if listing.test_dir is not None:
    test_files = listing.test_files
    images = _read_images(train_files + test_files, image_size)
    train = base.ArraySource(images[:len(train_files)], train_labels,
                             record_split.path_ids(train_files, path))
    test = base.ArraySource(images[len(train_files):], listing.test_labels,
                            record_split.path_ids(test_files, path))
  else:
    train_idx, test_idx, ids = listing.held_out_split()
    images = _read_images(train_files, image_size)
    everything = base.ArraySource(images, train_labels, ids)
    train, test = everything.take(train_idx), everything.take(test_idx)
  return LocalData(train=train, test=test, num_classes=len(listing.class_names),
                   class_names=listing.class_names,
                   private_evaluation_note=listing.private_evaluation_note)


def load_image_folder_on_disk(path: str, image_size: int, seed: int = 0) -> LocalData:
  """An image folder that stays on disk: each read decodes, crops and resizes.

  The layout, the classes, the held-out evaluation split (without test/) and the
  record ids are those of ``load_image_folder``. Training reads take an
  Inception-style random resized crop, evaluation reads the padded centre crop, both
  resized (bicubic) to ``image_size`` (input/on_disk.py); images are read as RGB.
  Nothing is decoded here: a file that cannot be decoded fails when it is read.
  """
  if image_size <= 0:
    raise base.DataError(
        f'config.data.image_size={image_size}: an image folder read from disk '
        '(config.data.random_resized_crop=True) is cropped and resized when read; set '
        'config.data.image_size (e.g. 224)')
  listing = _list_image_folder(path)

  def source(split_dir, files, labels, train, private):
    relative = np.array([os.fsencode(os.path.relpath(f, split_dir)) for f in files],
                        dtype=bytes)
    prefix = os.path.relpath(split_dir, path).replace(os.sep, '/').encode() + b'/'
    crop = on_disk.HostCrop(image_size, random_resized_crop=train, seed=seed)
    return on_disk.ImageFolderSource(split_dir, relative, labels, crop,
                                     private=private, id_prefix=prefix)

  train_files, train_labels = listing.train_files, listing.train_labels
  if listing.test_dir is not None:
    test = source(listing.test_dir, listing.test_files, listing.test_labels,
                  train=False, private=False)
  else:  # held out of the private folder: its read errors name no file either
    train_idx, test_idx, _ = listing.held_out_split()
    test = source(listing.train_dir, [train_files[i] for i in test_idx],
                  train_labels[test_idx], train=False, private=True)
    train_files = [train_files[i] for i in train_idx]
    train_labels = train_labels[train_idx]
  train = source(listing.train_dir, train_files, train_labels, train=True, private=True)
  return LocalData(train=train, test=test, num_classes=len(listing.class_names),
                   class_names=listing.class_names,
                   private_evaluation_note=listing.private_evaluation_note)


def _check_held_out_split(train_dir: str, class_names: tuple[str, ...],
                          labels: np.ndarray, train_idx: np.ndarray,
                          test_idx: np.ndarray) -> None:
  """Refuses an evaluation split carved out of train/ that is empty, or that took
  every image of a class (the model could never learn it)."""
  why = ('(each image\'s side is decided by a hash of its path alone, so that adding '
         'or removing one image moves no other and the guarantee covers the folder '
         'you supplied)')
  if not len(test_idx) or not len(train_idx):
    raise base.DataError(
        f'{train_dir!r}: holding out about {record_split.TEST_FRACTION:.0%} of its '
        f'{len(labels)} images for evaluation (there is no test/ folder) leaves '
        f'{len(train_idx)} for training and {len(test_idx)} for evaluation {why}. Add '
        'images, or a test/ folder')
  lost = np.setdiff1d(np.unique(labels), np.unique(labels[train_idx]))
  if lost.size:
    names = ', '.join(f'{class_names[i]!r} ({np.sum(labels == i)} image(s))'
                      for i in lost)
    raise base.DataError(
        f'{train_dir!r}: the evaluation split held out of it (there is no test/ '
        f'folder) took every image of class {names}, leaving the class no training '
        f'example {why}. Add images of that class, or a test/ folder')


# --------------------------------------------------------------------------- npz

NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
NPZ_CHANNELS = (1, 3, 4)
# The first bytes of a zip archive (what np.savez writes): a local file header, or
# the end-of-central-directory record of an empty archive.
_ZIP_MAGICS = (b'PK\x03\x04', b'PK\x05\x06')
NPZ_LAYOUT = (
    'a .npz file (np.savez) with arrays x_train, y_train, x_test, y_test: x_* integer '
    'pixels 0..255 of shape [n, H, W, C] (channels last, C in 1, 3, 4) or [n, H, W]; '
    'y_* integer labels 0..num_classes-1 of shape [n] or [n, 1]; '
    'config.data.num_classes set')


def channels_first_hint(shape: tuple[int, ...]) -> str | None:
  """Why ``shape`` ([n, a, b, c]) looks channel-first, or None if it can be HWC.

  [n, 1 or 3, H, W] with W not a channel count (1, 3, 4) cannot be channels-last
  images: read as such it would train on 3 x H images with W channels.
  """
  if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3, 4):
    return (f'{tuple(shape)} looks channel-first ([n, C, H, W]); this platform reads '
            f'[n, H, W, C]: save x.transpose(0, 2, 3, 1) (shape '
            f'{(shape[0], shape[2], shape[3], shape[1])})')
  return None


def load_npz(path: str, num_classes: int = 0) -> LocalData:
  """Reads a ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

  ``x_*``: pixel values 0..255 (uint8, or any integer type within that range) of
  shape [n, H, W, C] (channels last, C = 1, 3 or 4; any other C is refused) or
  [n, H, W] (one channel); channel-first arrays ([n, 1 or 3, H, W]) are refused with
  the transpose that fixes them. ``path`` is the file itself (a directory is refused
  with the .npz files it holds).
  ``y_*``: integer labels 0..num_classes-1 of shape [n] or [n, 1].

  ``num_classes`` (config.data.num_classes) is required: the model's head must not
  depend on which labels happen to occur in the private data. Labels outside
  [0, num_classes) are refused. Loaded without pickle support.
  """
  layout = NPZ_LAYOUT
  if path and os.path.isdir(path):
    found = sorted(n for n in os.listdir(path) if n.endswith('.npz'))
    raise base.DataError(
        f'config.data.path={path!r} is a directory; an npz dataset is one file: set '
        'config.data.path to the .npz file itself'
        + (f' (this directory holds {", ".join(found[:5])})' if found else '')
        + f'. Expected {layout}')
  if not path or not os.path.isfile(path):
    raise base.DataError(f'npz file {path!r} does not exist; expected {layout}')
  if num_classes < 2:
    raise base.DataError(
        f'config.data.num_classes={num_classes}: an npz dataset must state its number '
        'of classes (>= 2; labels are 0..num_classes-1), e.g. '
        '--config.data.num_classes=10; it is never inferred from the labels')
  with open(path, 'rb') as f:
    magic = f.read(4)
  if magic not in _ZIP_MAGICS:
    what = ('a single .npy array (np.save)' if magic.startswith(b'\x93NUM')
            else f'not a zip archive (starts with {magic!r})')
    raise base.DataError(f'{path!r} is {what}; expected {layout}')
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise base.DataError(
        f'{path!r} is truncated or corrupt ({type(e).__name__}: {e}); write it again '
        f'with np.savez. Expected {layout}') from e
  with npz:
    missing = [k for k in NPZ_KEYS if k not in npz.files]
    if missing:
      raise base.DataError(
          f'{path!r} lacks arrays {missing} (has {sorted(npz.files)}); expected '
          f'{layout}')
    try:
      arrays = {k: npz[k] for k in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise base.DataError(
          f'cannot read the arrays of {path!r}, it is truncated or corrupt or holds '
          f'objects ({type(e).__name__}: {e}); expected {layout}') from e

  def images(key):
    x = arrays[key]
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.integer):
      raise base.DataError(
          f'{path!r}: {key} should be integer pixels [n, H, W, C] or [n, H, W], got '
          f'{x.dtype} {x.shape}')
    hint = channels_first_hint(x.shape)
    if hint:
      raise base.DataError(f'{path!r}: {key} of shape {hint}')
    if x.shape[-1] not in NPZ_CHANNELS:
      raise base.DataError(
          f'{path!r}: {key} of shape {tuple(x.shape)} has {x.shape[-1]} channels; '
          'images have 1 (grey), 3 (RGB) or 4 (RGBA) channels, last ([n, H, W, C]) '
          'or none ([n, H, W], grey)')
    if x.size and (x.min() < 0 or x.max() > 255):
      raise base.DataError(f'{path!r}: {key} has pixel values outside 0..255')
    return x.astype(np.uint8, copy=False)

  def labels(key, n):
    y = arrays[key]
    if y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
      raise base.DataError(
          f'{path!r}: {key} should be {n} integer labels, got {y.dtype} {y.shape}')
    _check_labels(y, num_classes, f'{path!r}: {key} (config.data.num_classes='
                  f'{num_classes})')
    return y.astype(np.int32)

  x_train, x_test = images('x_train'), images('x_test')
  if x_train.shape[1:] != x_test.shape[1:]:
    raise base.DataError(
        f'{path!r}: x_train images are {x_train.shape[1:]} but x_test images are '
        f'{x_test.shape[1:]}')
  y_train = labels('y_train', x_train.shape[0])
  y_test = labels('y_test', x_test.shape[0])
  return LocalData(train=base.ArraySource(x_train, y_train),
                   test=base.ArraySource(x_test, y_test), num_classes=num_classes)
