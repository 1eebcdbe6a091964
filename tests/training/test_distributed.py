"""training/distributed.py in one process (the multi-process runs are in
test_multiprocess.py): flag checks, host-local rows and global batches, the secret,
the message of processes whose data differ."""
import jax
import numpy as np
import pytest

from image_classification.data import fingerprint
from image_classification.privacy import mechanism_secret
from image_classification.hosts import joining
from image_classification.training import distributed
from image_classification.training import mesh as mesh_lib
from image_classification.workdir import secret_file


def test_one_process_needs_no_flag_and_joins_nothing():
  assert joining.initialize() is False
  assert distributed.is_writer()


@pytest.mark.parametrize('kwargs, match', [
    (dict(coordinator_address='localhost:1234'), 'missing --num_processes, --process_id'),
    (dict(num_processes=2, process_id=0), 'missing --coordinator_address'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=2), r'0\.\.1'),
    (dict(coordinator_address='h:1', num_processes=0, process_id=0), 'at least 1'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=0, timeout_s=0),
     'positive'),
])
def test_incomplete_or_wrong_flags_are_named(kwargs, match):
  with pytest.raises(joining.schedulers.DistributedError, match=match):
    joining.initialize(**kwargs)


def test_one_process_holds_every_row_and_the_global_batch_is_the_batch():
  mesh = mesh_lib.make_mesh()
  sharding = mesh_lib.batch_sharding(mesh)
  n = 4 * len(jax.devices())
  assert distributed.local_rows(sharding, n) == slice(0, n)
  images = np.arange(100 * 3, dtype=np.uint8).reshape(100, 3)
  labels = np.arange(100, dtype=np.int32) % 7
  idx = np.arange(n) * 3 % 100
  mask = np.arange(n) < n - 1
  loaded = []

  def load(i):
    loaded.append(i)
    return images[i], labels[i]

  x, y, m = distributed.global_batch(sharding, idx, mask, load)
  np.testing.assert_array_equal(loaded[0], idx)
  np.testing.assert_array_equal(np.asarray(x), images[idx])
  np.testing.assert_array_equal(np.asarray(y), labels[idx])
  np.testing.assert_array_equal(np.asarray(m), mask)
  assert x.sharding == sharding


def test_shared_randomness_with_one_process_is_the_workdir_secret(tmp_path):
  first = secret_file.for_run(str(tmp_path), 0, insecure=False, resuming=False)
  again = secret_file.for_run(str(tmp_path), 0, insecure=False, resuming=True)
  assert first.noise_key_words == again.noise_key_words
  assert first.sampling_seed == again.sampling_seed
  with pytest.raises(mechanism_secret.SecretError, match='missing'):
    secret_file.for_run(str(tmp_path / 'other'), 0, insecure=False,
                                  resuming=True)


def test_check_same_is_free_with_one_process():
  distributed.check_same('anything', 'config')


def test_a_data_mismatch_names_the_process_and_what_differs():
  """The line every process prints when the processes' training data or plans differ
  (the two-process run is test_multiprocess.py's)."""
  base = fingerprint.Fingerprint(1438, 'aa' * 32, 'bb' * 32, 'image content')
  plan = {'noise_multiplier': 1.2, 'dataset_size': 1438}
  row = lambda f=base, p=plan: distributed.data_row(f, p)  # pylint: disable=unnecessary-lambda-assignment
  assert distributed.data_mismatch(np.stack([row(), row(), row()]), 'image content') is None
  fewer = fingerprint.Fingerprint(1437, 'ab' * 32, 'bc' * 32, 'image content')
  other_plan = {'noise_multiplier': 1.3, 'dataset_size': 1437}
  message = distributed.data_mismatch(
      np.stack([row(), row(), row(fewer, other_plan), row(fewer, other_plan)]),
      'image content')
  assert message.startswith(
      "process 2's training data differs from process 0's: N 1438 vs 1437; the labels "
      'differ; the record list differs (by image content); the privacy plan (plan.json) '
      'differs (so do process(es) 3). Every process must read the same dataset')
  assert '\n' not in message
  one_record = fingerprint.Fingerprint(1438, 'aa' * 32, 'cc' * 32, 'file paths')
  assert "process 1's training data differs from process 0's: the record list differs " \
         '(by file paths).' in distributed.data_mismatch(
             np.stack([row(), row(one_record)]), 'file paths')
  plan_only = distributed.data_mismatch(np.stack([row(), row(base, other_plan)]), '')
  assert plan_only.startswith("process 1's privacy plan (plan.json) differs from "
                              "process 0's although their training data agree")


def test_check_same_data_reads_nothing_with_one_process():
  def fail():
    raise AssertionError('computed with one process')
  distributed.check_same_data(fail, fail)
