"""Held-out splits decided per record: which side a record falls on depends on that
record alone.

Privacy: the accountant's guarantee is about the training split, and DP-SGD's
neighbouring relation is add/remove-one. A split that permutes the records (one RNG
over the whole dataset) makes the training split depend on every record: removing one
record from the data the user supplied moves thousands of others between the training
and the held-out side, so two neighbouring datasets give training splits that differ
in thousands of records, and the printed epsilon holds only for the split taken as
fixed. Here a record is held out when a keyed hash of its stable identifier falls
below ``fraction``: adding or removing one record adds or removes at most that record
on its side and moves no other. The training split is thus a per-record function of
the user's data, and the guarantee holds for the data the user supplied.

Identifiers (``record_ids``):

* an image file: its path relative to the dataset root (``train/cat/001.png``), as
  ``local_files.load_image_folder`` passes them in ``ArraySource.record_ids``;
* a record held in memory (npz, IDX, CIFAR, digits, a tfds split read into memory):
  the SHA-256 of its content as loaded, the image's shape, dtype and bytes and its
  label, before any resize to ``config.data.image_size`` (data/sources.py keeps
  these ids on the resized arrays), so a record is on the same side at every image
  size;
* a source with its own ids (``record_ids()``, e.g. tfds_source.CroppingSource):
  those.

The keys are fixed, public constants, one per purpose, so the splits are the same in
every run and every resume (never ``config.seed``), and the test and the validation
split are independent draws: a validation split taken from what an image folder's
test split left is ``fraction`` of it, not empty. Class balance is approximate (each
class's held-out count is binomial); a class may land wholly on one side.
"""
import hashlib
import os
from typing import Sequence

import numpy as np

from image_classification.data import base

TEST_KEY = b'image_classification/held-out/test/v1'
VALIDATION_KEY = b'image_classification/held-out/validation/v1'
TEST_FRACTION = 0.2  # the evaluation split carved out of data that comes without one
_READ_CHUNK = 4096


def content_id(image: np.ndarray, label) -> bytes:
  """The SHA-256 of one record's content: its image (shape, dtype, bytes) and label."""
  image = np.ascontiguousarray(image)
  digest = hashlib.sha256()
  digest.update(f'{image.dtype.str}{image.shape}{int(label)}|'.encode())
  digest.update(image.tobytes())
  return digest.digest()


def content_ids(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
  """``content_id`` of every row."""
  return [content_id(image, label) for image, label in zip(images, labels)]


def path_ids(files: Sequence[str], root: str) -> np.ndarray:
  """Each file's path relative to ``root``, '/'-separated, as bytes."""
  return np.array([os.path.relpath(f, root).replace(os.sep, '/').encode()
                   for f in files], dtype=object)


def source_ids(source, count: int | None = None) -> Sequence[bytes]:
  """The identifiers of the first ``count`` (default: all) records of an ImageSource
  (see the module docstring).

  An ArraySource gives its ``record_ids`` or its content; another source its
  ``record_ids(count)`` method; a source with neither is read through ``get``
  (deterministic reads only: a source whose reads depend on the index, such as a
  random crop, must have ``record_ids``).
  """
  n = source.num_examples if count is None else min(count, source.num_examples)
  if isinstance(source, base.ArraySource):
    if source.record_ids is not None:
      return list(source.record_ids[:n])
    return content_ids(source.images[:n], source.labels[:n])
  if hasattr(source, 'record_ids'):
    return source.record_ids(n)
  out = []
  for start in range(0, n, _READ_CHUNK):
    out.extend(content_ids(*source.get(np.arange(start, min(start + _READ_CHUNK, n)))))
  return out


def held_out(ids: Sequence[bytes], fraction: float, key: bytes) -> np.ndarray:
  """Boolean mask: True for the records held out.

  A record is held out when the first 8 bytes of BLAKE2b(id, key) read as an
  integer are below ``fraction`` * 2^64: a function of the record's id alone, held
  out with probability ``fraction`` over the ids.
  """
  if not 0 <= fraction <= 1:
    raise ValueError(f'fraction {fraction} outside [0, 1]')
  threshold = int(fraction * 2 ** 64)
  return np.array([int.from_bytes(hashlib.blake2b(bytes(i), digest_size=8,
                                                  key=key).digest(), 'big') < threshold
                   for i in ids], dtype=bool)


def split(ids: Sequence[bytes], fraction: float, key: bytes
          ) -> tuple[np.ndarray, np.ndarray]:
  """(kept indices, held-out indices), each sorted int64; see ``held_out``."""
  mask = held_out(ids, fraction, key)
  return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)
