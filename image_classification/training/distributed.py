"""Several processes (hosts) on jax.distributed: joining, one writer, host-local batches.

JAX's multi-controller runtime does the work: every process runs the same program, the
mesh (training/mesh.py) spans the devices of all processes, and the DP step's
shard_map psum sums the clipped per-example gradients across all of them. This module
holds the few things the trainer must add:

- ``initialize``: joins the job (explicit coordinator/num_processes/process_id, or
  cluster auto-detection), within a bounded time and with a message that names the
  process and the cause; then checks that every process was told the same number of
  processes.
  Which scheduler ``--distributed`` joins is schedulers.py's.
- ``is_writer``: process 0 alone writes the run files and prints.
- ``global_batch``: each process reads only its rows of a logical batch and the global
  array is assembled with ``jax.make_array_from_process_local_data``; no host ever
  holds the whole batch.
- ``broadcast_from_writer``: process 0's bytes to every process (the run's secret:
  workdir/secret_file.py ``for_run``; it never reaches a published file).
- ``check_same``: a value that must be equal on every process (the config) is compared.
- ``check_same_data``: before the first step, every process's training data (its size
  N, its labels and its record list: data/fingerprint.py) and its privacy plan
  (plan.json) are compared with process 0's; a process that read another copy of the
  data stops the job with one line naming it and what differs.

Privacy (docs/privacy.md, invariant 12): every process draws the same global batch indices
(a batch selection's ``indices(step)`` depends only on the step and the shared secret
sampling seed) and passes the same noise key to the step; each loads only its slice;
the step adds the noise once, after the global sum. Nothing about the guarantee depends on the
number of processes. That holds only if the processes hold the same data: with other
copies each would calibrate its own sigma and q from its own N, one index would name
different records on different hosts (a record could fill two slots: sensitivity
2C), and the noise would no longer be the same everywhere; ``check_same_data``
refuses such a job before anything is compiled.
"""
import hashlib
import json
from typing import Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from image_classification.data import fingerprint as fingerprint_lib
from image_classification.hosts import schedulers

# A multi-process job cannot start or continue (defined beside the scheduler checks).
DistributedError = schedulers.DistributedError


# ---------------------------------------------------------------------- collectives
def _allgather(x: np.ndarray) -> np.ndarray:
  """``x`` of every process, stacked in process order (x itself with one process)."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))


def broadcast_from_writer(x: np.ndarray) -> np.ndarray:
  """Process 0's ``x`` on every process (a collective: every process calls it)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))


def is_writer() -> bool:
  """Whether this process writes the run files and prints (process 0)."""
  return jax.process_index() == 0


def check_same(value: str, what: str) -> None:
  """Raises DistributedError on every process unless ``value`` is equal on all."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(value.encode()).digest(), np.uint8)
  digests = _allgather(digest)
  differ = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
  if differ:
    raise DistributedError(
        f'process(es) {differ} run with a different {what} than process 0: every '
        'process of a job must get the same --config and --config.* overrides')


def data_row(fingerprint: fingerprint_lib.Fingerprint, plan: dict) -> np.ndarray:
  """N (8 bytes), then the labels', the records' and plan.json's SHA-256 (32 each)."""
  def digest32(hexdigest: str) -> bytes:
    return bytes.fromhex(hexdigest) if hexdigest else bytes(32)
  plan_digest = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode())
  return np.frombuffer(
      int(fingerprint.num_examples).to_bytes(8, 'little') + digest32(fingerprint.labels)
      + digest32(fingerprint.records) + plan_digest.digest(), np.uint8)


def _data_differences(rows: np.ndarray, process: int, records_by: str) -> list[str]:
  """What differs between ``process``'s row and process 0's (see ``data_row``)."""
  mine, first = rows[process], rows[0]
  out = []
  n0, n = (int.from_bytes(bytes(r[:8]), 'little') for r in (first, mine))
  if n0 != n:
    out.append(f'N {n0} vs {n}')
  if not np.array_equal(mine[8:40], first[8:40]):
    out.append('the labels differ')
  if not np.array_equal(mine[40:72], first[40:72]):
    out.append(f'the record list differs (by {records_by})')
  if not np.array_equal(mine[72:], first[72:]):
    out.append('the privacy plan (plan.json) differs')
  return out


def data_mismatch(rows: np.ndarray, records_by: str) -> str | None:
  """The error of a job whose processes' ``data_row``s are ``rows`` (in process
  order), naming the first process that differs from process 0 and what differs;
  None when all agree."""
  differ = [i for i in range(1, len(rows)) if not np.array_equal(rows[i], rows[0])]
  if not differ:
    return None
  first = differ[0]
  found = _data_differences(rows, first, records_by)
  others = (f' (so do process(es) {", ".join(map(str, differ[1:]))})'
            if len(differ) > 1 else '')
  if found == ['the privacy plan (plan.json) differs']:
    return (f"process {first}'s privacy plan (plan.json) differs from process 0's "
            f'although their training data agree{others}: every process must run the '
            'same code and package versions (the plan is computed from the config and N)')
  return (f"process {first}'s training data differs from process 0's: "
          f"{'; '.join(found)}{others}. Every process must read the same dataset (the "
          'same files at config.data.path, or the same tfds_data_dir, on every host): '
          'each would otherwise calibrate its own noise and sampling rate and draw '
          'other records')


def check_same_data(fingerprint: Callable[[], fingerprint_lib.Fingerprint],
                    plan_json: Callable[[], dict]) -> None:
  """Raises DistributedError on every process unless each holds process 0's training
  data (``fingerprint()``: N, labels, records) and privacy plan (``plan_json()``).

  Called before the first step and before anything long is compiled; nothing is
  computed with one process.
  """
  if jax.process_count() == 1:
    return
  mine = fingerprint()
  message = data_mismatch(_allgather(data_row(mine, plan_json())), mine.records_by)
  if message is not None:
    raise DistributedError(message)


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------- batches
def local_rows(sharding, size: int) -> slice:
  """The rows of a [size, ...] array, sharded by ``sharding`` along its first axis,
  that this process's devices hold (one contiguous block: the mesh lists each
  process's devices together)."""
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map((size,)).values():
    rows = index[0]
    starts.append(rows.start or 0)
    stops.append(size if rows.stop is None else rows.stop)
  start, stop = min(starts), max(stops)
  covered = sum(b - a for a, b in set(zip(starts, stops)))
  if covered != stop - start:
    raise ValueError(f'this process\'s rows of the batch are not contiguous '
                     f'({sorted(set(zip(starts, stops)))}): the mesh must list each '
                     'process\'s devices together')
  return slice(start, stop)


def global_batch(sharding, indices: np.ndarray, mask: np.ndarray, load):
  """(images, labels, mask) as global arrays sharded by ``sharding``.

  ``indices``/``mask``: the padded global batch (the same on every process);
  ``load(indices) -> (images, labels)`` reads examples. Only this process's rows
  are loaded.
  """
  rows = local_rows(sharding, len(indices))
  return assemble(sharding, len(indices), (*load(indices[rows]), mask[rows]))


def assemble(sharding, size: int, local_arrays):
  """Global arrays of ``size`` rows from each process's rows (see local_rows)."""
  return tuple(jax.make_array_from_process_local_data(sharding, x, (size,) + x.shape[1:])
               for x in local_arrays)
