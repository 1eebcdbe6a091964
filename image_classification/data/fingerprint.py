"""What identifies a training split: its size, its labels and its records, in index order.

Several processes (hosts) each read the dataset themselves. If their copies differ
(another tfds data_dir, an image folder with one file more), each calibrates its own
sigma and sampling rate from its own N, the indices that every process draws name
different records on different hosts, one record can fill two slots of a batch
(sensitivity 2C), and the "replicated" noise differs between processes. The trainer
therefore compares every process's ``Fingerprint`` with process 0's before the first
step (training/distributed.py ``check_same_data``; docs/privacy.md, invariant 12).

- ``labels``: SHA-256 of the int32 labels in index order, where the source holds them
  without decoding images (arrays in memory, image folders); '' where it does not (a
  tfds split on disk, whose files carry the labels).
- ``records``: SHA-256 over the records in index order, by what identifies them
  (data/record_split.py's stable ids where a source has them):
  * an image file: its path relative to the dataset root (no file is read; a file
    whose content differs under the same path is not seen);
  * arrays in memory without file paths (npz, IDX, CIFAR, digits, tfds read into
    memory): the images' dtype, shape and bytes as held, i.e. after any resize to
    ``config.data.image_size``;
  * a tfds split on disk: its array_record files (name, size, the examples each
    contributes), since reading every record would be a pass over the dataset;
  * any other source (an audit's view): the record ids of record_split.source_ids,
    which may read the records.
- A view of a source (the first ``max_train_examples``, a validation subset, worker
  processes) derives its fingerprint from its source's and the view's own selection.

A source states its fingerprint with a ``fingerprint()`` method; ``of`` gives it for
any source.
"""
import dataclasses
import hashlib
from typing import Iterable

import numpy as np

from image_classification.data import base
from image_classification.data import record_split


@dataclasses.dataclass(frozen=True)
class Fingerprint:
  num_examples: int
  labels: str       # hex SHA-256 of the labels in index order; '' where not read
  records: str      # hex SHA-256 of the records in index order
  records_by: str   # what identifies a record ('file paths', 'image content', ...)

  def view(self, num_examples: int, selection: np.ndarray, what: str) -> 'Fingerprint':
    """The fingerprint of a view that keeps the records ``selection`` (indices)."""
    tag = what.encode() + np.asarray(selection, '<i8').tobytes()
    return Fingerprint(
        num_examples=int(num_examples),
        labels=digest([tag, self.labels.encode()]) if self.labels else '',
        records=digest([tag, self.records.encode()]), records_by=self.records_by)


def digest(parts: Iterable[bytes]) -> str:
  """Hex SHA-256 of ``parts``, each prefixed by its length (no two lists collide)."""
  h = hashlib.sha256()
  for part in parts:
    view = memoryview(part).cast('B')
    h.update(len(view).to_bytes(8, 'little'))
    h.update(view)
  return h.hexdigest()


def labels_digest(labels: np.ndarray) -> str:
  return digest([np.asarray(labels).astype('<i4').tobytes()])


def of_ids(num_examples: int, labels, ids, records_by: str) -> Fingerprint:
  """A source whose records are named by ``ids`` (bytes, in index order)."""
  return Fingerprint(int(num_examples), '' if labels is None else labels_digest(labels),
                     digest(ids), records_by)


def _of_arrays(source: base.ArraySource) -> Fingerprint:
  if source.record_ids is not None and source.record_ids_kind == base.IDS_FILE_PATHS:
    return of_ids(source.num_examples, source.labels, source.record_ids, 'file paths')
  # Arrays resized in memory keep their records' content ids from before the resize
  # (for the splits); the fingerprint hashes what is trained on, the resized images.
  images = np.ascontiguousarray(source.images)
  content = digest([f'{images.dtype.str}{images.shape}'.encode(), images])
  return Fingerprint(source.num_examples, labels_digest(source.labels), content,
                     'image content')


def of(source) -> Fingerprint:
  """The fingerprint of an ImageSource (see the module docstring)."""
  own = getattr(source, 'fingerprint', None)
  if callable(own):
    return own()
  if isinstance(source, base.ArraySource):
    return _of_arrays(source)
  return of_ids(source.num_examples, None, record_split.source_ids(source),
                'record ids (content or file name)')
