"""The on-disk input pipeline: image folders read from disk (input/on_disk.py) and the
worker processes that decode them (input/input_pipeline.py, on grain).

- The batch of (step, indices) is the same with 0, 1 and 2 workers, for repeated and
  unsorted indices, whole and partial chunks, and after the workers are stopped and
  started again (a restart); every worker reads a share of a small request.
- Each of two JAX processes reads only the rows its devices hold, and the assembled
  global batch equals the one-process read.
- Bad config.data.num_workers values are refused with a message naming the field.
- Privacy: a failed read of the private split names neither the file nor the index;
  nothing appears under /dev/shm or the temporary folder while the workers run (the
  images pass through a memfd, the requests through an abstract socket); no repr or
  worker command line holds the channel's key.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from multiprocessing import connection

import numpy as np
from PIL import Image
import pytest

from configs import base as base_config
from image_classification import config as config_lib
from image_classification.data import base
from image_classification.input import input_pipeline
from image_classification.data.readers import local_files
from image_classification.input import on_disk
from image_classification.data import record_split
from image_classification.data import sources
from image_classification.data import validation
from tests.data import image_folders

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return image_folders.write_jpeg_folder(tmp_path_factory.mktemp('images'))


def data_config(**overrides):
  config = base_config.get_config().data
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_an_image_folder_on_disk_decodes_and_crops_when_read(folder):
  data = local_files.load_image_folder_on_disk(folder, SIZE)
  train, test = data.train, data.test
  assert (train.num_examples, test.num_examples) == (40, 8)
  assert train.image_shape == test.image_shape == (SIZE, SIZE, 3)
  assert data.class_names == ('c0', 'c1', 'c2', 'c3') and data.num_classes == 4
  assert not data.private_evaluation_note  # there is a test/ folder
  np.testing.assert_array_equal(train.labels, np.repeat(np.arange(4), 10))
  # Evaluation: the padded centre crop of the decoded file, the same every time.
  images, labels = test.get(np.array([3, 0]))
  with Image.open(test.file(3)) as picture:
    array = np.asarray(picture.convert('RGB'))
  box = on_disk.center_crop_box(array.shape[0], array.shape[1], SIZE)
  np.testing.assert_array_equal(images[0], on_disk.crop_and_resize(array, box, SIZE))
  np.testing.assert_array_equal(test.get(np.array([3, 0]))[0], images)
  assert list(labels) == [int(test.labels[3]), int(test.labels[0])]
  # Training: random resized crops drawn from (seed, step, record) alone.
  batch, _ = train.get(np.array([5, 9, 5]), step=2)
  np.testing.assert_array_equal(batch[0], batch[2])
  np.testing.assert_array_equal(train.get(np.array([9]), step=2)[0][0], batch[1])
  assert not np.array_equal(train.get(np.array([5]), step=3)[0][0], batch[0])


def test_a_file_added_to_the_folder_changes_no_other_files_crop(folder, tmp_path):
  """The random crop of a file at a step is keyed by the file's path, not by its index:
  a file added with a name sorted first shifts every other file's index, and with
  index-keyed crops (public randomness) each of them would be cropped differently in
  the two neighbouring datasets, so the sum would change by more than the added
  example's contribution (docs/privacy.md, invariant 18)."""
  grown = shutil.copytree(folder, str(tmp_path / 'grown'))
  classes = sorted(os.listdir(os.path.join(grown, 'train')))
  first = sorted(os.listdir(os.path.join(grown, 'train', classes[0])))[0]
  shutil.copy(os.path.join(grown, 'train', classes[0], first),
              os.path.join(grown, 'train', classes[0], '0000_added' + os.path.splitext(first)[1]))
  before = local_files.load_image_folder_on_disk(folder, SIZE).train
  after = local_files.load_image_folder_on_disk(grown, SIZE).train
  assert after.num_examples == before.num_examples + 1
  ids_after = after.record_ids()
  assert ids_after[0].endswith(b'0000_added' + os.path.splitext(first)[1].encode())
  where = {record: i for i, record in enumerate(ids_after)}
  old = np.arange(before.num_examples)
  new = np.array([where[record] for record in before.record_ids()])
  assert (new == old + 1).all()  # every other file moved one index on
  for step in (0, 7):
    np.testing.assert_array_equal(after.get(new, step=step)[0], before.get(old, step=step)[0])


def test_on_disk_and_in_memory_folders_have_the_same_records(folder, tmp_path):
  """The same record ids (paths relative to the root), hence the same validation
  split, and, without a test/ folder, the same held-out evaluation split."""
  without_test = shutil.copytree(os.path.join(folder, 'train'),
                                 tmp_path / 'no_test' / 'train')
  for root in (folder, os.path.dirname(without_test)):
    memory = local_files.load_image_folder(root, SIZE)
    disk = local_files.load_image_folder_on_disk(root, SIZE)
    for a, b in ((memory.train, disk.train), (memory.test, disk.test)):
      assert list(record_split.source_ids(a)) == list(record_split.source_ids(b))
      np.testing.assert_array_equal(a.labels, b.labels)
    assert memory.private_evaluation_note == disk.private_evaluation_note
    wrapped = input_pipeline.ParallelSource(disk.train, 2)  # never started here
    assert list(record_split.source_ids(wrapped)) == list(
        record_split.source_ids(disk.train))
    splits = sources.load_dataset(data_config(
        name='image_folder', path=root, image_size=SIZE, random_resized_crop=True,
        num_workers=0))
    held = validation.hold_out(splits, 0.25)[1]
    assert held.num_examples == validation.hold_out(
        sources.load_dataset(data_config(name='image_folder', path=root,
                                         image_size=SIZE)), 0.25)[1].num_examples
  assert disk.private_evaluation_note and disk.test.private  # errors name no file


def test_random_resized_crop_keeps_an_image_folder_on_disk(folder):
  in_memory = sources.load_dataset(data_config(name='image_folder', path=folder,
                                               image_size=SIZE))
  assert isinstance(in_memory.train, base.ArraySource)
  config = data_config(name='image_folder', path=folder, image_size=SIZE,
                       random_resized_crop=True, num_workers=0)
  assert sources.reads_on_disk(config)
  assert not sources.reads_on_disk(data_config(name='image_folder', path=folder))
  on_disk_splits = sources.load_dataset(config)
  assert isinstance(on_disk_splits.train, on_disk.ImageFolderSource)
  config.num_workers = 2
  parallel = sources.load_dataset(config)
  assert isinstance(parallel.train, input_pipeline.ParallelSource)
  assert parallel.train.num_workers == 2 and not parallel.train.running  # lazy start
  assert isinstance(parallel.test, input_pipeline.ParallelSource)
  # In-memory datasets never get workers.
  assert isinstance(sources.load_dataset(data_config(name='digits', num_workers=2)).train,
                    base.ArraySource)


def test_the_same_batches_with_0_1_2_workers_and_after_a_restart(folder, monkeypatch):
  source = local_files.load_image_folder_on_disk(folder, SIZE).train
  # 40 rows pass through a ring of fewer slots (32 for 1 worker and chunks of up to 8,
  # 21 for 2 workers and chunks of up to 3, 4 for 1 worker and chunks of 1): slots are
  # reused within a get. The 5 rows of the first request come in chunks of 2, 2, 1
  # (1 worker, up to 8: two chunks per worker) or of 1 (2 workers).
  requests = [(3, np.array([5, 0, 39, 5, 17])), (4, np.arange(40)[::-1]),
              (0, np.array([7]))]
  expected = [source.get(indices, step=step) for step, indices in requests]
  for workers, chunk in ((1, 8), (2, 3), (1, 1), ('pipes', 3)):
    if workers == 'pipes':  # without the shared ring (as off Linux): images pickled
      monkeypatch.setattr(input_pipeline._ImageRing, 'available', lambda: False)  # pylint: disable=protected-access
      workers = 2
    pipeline = input_pipeline.ParallelSource(source, workers, rows_per_element=chunk)
    try:
      for (step, indices), (images, labels) in zip(requests, expected):
        got_images, got_labels = pipeline.get(indices, step=step)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
      assert pipeline.running
      ring = pipeline._state['ring']  # pylint: disable=protected-access
      assert (ring is None) == (not input_pipeline._ImageRing.available())  # pylint: disable=protected-access
      if chunk == 8:
        pipeline.close()  # a restart: new workers, a new request channel
        assert not pipeline.running
        step, indices = requests[1]
        np.testing.assert_array_equal(pipeline.get(indices, step=step)[0],
                                      expected[1][0])
    finally:
      pipeline.close()
  # A restarted process lists the folder again: the same batch.
  reloaded = local_files.load_image_folder_on_disk(folder, SIZE).train
  np.testing.assert_array_equal(reloaded.get(requests[0][1], step=3)[0], expected[0][0])


class _LabelledByReader:
  """An on-disk source whose label is the id of the process that read the row."""

  def __init__(self, source):
    self.source = source
    self.num_examples, self.image_shape = source.num_examples, source.image_shape

  def read_one(self, index, step=0):
    return self.source.read_one(index, step)[0], os.getpid()


def test_every_worker_reads_a_share_of_a_small_request(folder):
  """Rows go to the workers in chunks of at most 8, but a request with fewer than two
  chunks per worker is cut finer: all workers help with every request."""
  source = _LabelledByReader(local_files.load_image_folder_on_disk(folder, SIZE).train)
  pipeline = input_pipeline.ParallelSource(source, 2)
  try:
    # 4 rows: chunks of 1; 12 rows: chunks of 3; 40 rows: five chunks of 8 (the
    # workers take the chunks in turn).
    for count, expected in ((4, [2, 2]), (12, [6, 6]), (40, [16, 24])):
      _, readers = pipeline.get(np.arange(count) % source.num_examples, step=1)
      assert os.getpid() not in readers
      shares = sorted(np.unique(readers, return_counts=True)[1].tolist())
      assert shares == expected, (count, shares)
  finally:
    pipeline.close()


def test_bad_num_workers_is_refused(folder):
  for bad in (-2, 1.5, True, '2', None):
    with pytest.raises(base.DataError, match=r'config\.data\.num_workers='):
      input_pipeline.resolve_num_workers(bad)
  assert input_pipeline.resolve_num_workers(0) == 0
  assert input_pipeline.resolve_num_workers(3) == 3
  auto = input_pipeline.resolve_num_workers(-1)
  assert auto == input_pipeline.default_num_workers()
  assert 1 <= auto <= input_pipeline.MAX_DEFAULT_WORKERS
  config = base_config.get_config()
  config.data.num_workers = -2
  with pytest.raises(config_lib.ConfigError, match=r'config\.data\.num_workers=-2: '):
    config_lib.validate(config, num_devices=1)
  with pytest.raises(base.DataError, match=r'config\.data\.num_workers=-3'):
    sources.load_dataset(data_config(name='image_folder', path=folder, image_size=SIZE,
                                     random_resized_crop=True, num_workers=-3))
  source = local_files.load_image_folder_on_disk(folder, SIZE).train
  with pytest.raises(base.DataError, match=r'num_workers=-1'):
    input_pipeline.ParallelSource(source, -1)
  with pytest.raises(TypeError, match='not an on-disk source'):
    input_pipeline.ParallelSource(base.ArraySource(np.zeros((2, 4, 4, 1), np.uint8),
                                                   np.zeros(2, np.int32)), 1)


def test_a_failed_read_of_the_private_split_names_no_file(folder, tmp_path):
  broken = shutil.copytree(folder, tmp_path / 'broken')
  train_file = os.path.join(broken, 'train', 'c1', 'train_004.jpg')
  test_file = os.path.join(broken, 'test', 'c2', 'test_001.jpg')
  for path in (train_file, test_file):
    with open(path, 'wb') as f:
      f.write(b'not a jpeg')
  data = local_files.load_image_folder_on_disk(str(broken), SIZE)
  bad = data.train.files.tolist().index(b'c1/train_004.jpg')
  pipeline = input_pipeline.ParallelSource(data.train, 1)
  try:
    for read in (data.train.get, pipeline.get):
      with pytest.raises(on_disk.ReadError) as error:
        read(np.array([0, bad, 2]), step=1)
      message = str(error.value)
      assert 'private training split' in message
      for secret in ('train_004', 'c1', str(bad), str(broken)):
        assert secret not in message
      assert error.value.__cause__ is None  # PIL's message (with the path) is dropped
    assert not pipeline.running  # the failed workers were stopped
    np.testing.assert_array_equal(pipeline.get(np.array([0, 2]), step=1)[0],
                                  data.train.get(np.array([0, 2]), step=1)[0])
  finally:
    pipeline.close()
  # The public evaluation split names the file; check_decodable finds the private one.
  with pytest.raises(on_disk.ReadError, match='test_001.jpg'):
    data.test.get(np.arange(data.test.num_examples))
  assert on_disk.check_decodable(data.train) == [train_file]


def _children_cmdlines() -> list[str]:
  out = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
      if parent == os.getpid():
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
          out.append(f.read().decode(errors='replace'))
    except (OSError, ValueError, IndexError):
      continue
  return out


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='Linux namespaces')
def test_the_indices_stay_in_memory(folder):
  source = local_files.load_image_folder_on_disk(folder, SIZE).train
  shm_before = set(os.listdir('/dev/shm'))
  tmp_before = set(os.listdir(tempfile.gettempdir()))
  pipeline = input_pipeline.ParallelSource(source, 1)
  try:
    pipeline.get(np.array([31, 7, 12, 7]), step=9)
    channel = pipeline._state['channel']  # pylint: disable=protected-access
    assert channel.address.startswith('\0')  # abstract namespace: no socket file
    ring = pipeline._state['ring']  # pylint: disable=protected-access
    assert os.readlink(f'/proc/self/fd/{ring.fd}').startswith('/memfd:')  # no file
    # While the workers run: no shared-memory segment (Python's psm_*, which grain
    # would use for the images), no temporary file or socket of multiprocessing or of
    # the pipeline. (Other programs may add their own files meanwhile: only these
    # prefixes are ours. multiprocessing's named semaphores, sem.mp-*, hold counters.)
    ours = ('psm_', 'pymp-', 'dp-input-')
    for folder_, before in (('/dev/shm', shm_before),
                            (tempfile.gettempdir(), tmp_before)):
      new = set(os.listdir(folder_)) - before
      assert not [n for n in new if n.startswith(ours)], (folder_, new)
    key = channel.authkey.hex()
    workers = [c for c in _children_cmdlines() if 'spawn_main' in c]
    assert workers
    for text in workers + [repr(pipeline), repr(channel)]:
      assert key not in text and channel.address[1:] not in text
    read = input_pipeline._ReadElement(source, channel.address, channel.authkey)  # pylint: disable=protected-access
    assert repr(read) == 'ReadElement(ImageFolderSource)'
  finally:
    pipeline.close()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_each_process_reads_only_its_rows(folder, tmp_path):
  """Two JAX processes x 2 CPU devices: each asks its pipeline for the rows its devices
  hold (distributed.global_batch), and the global batch equals a one-process read."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'tests.data.two_process_reads', str(i), str(port), folder,
       str(tmp_path / f'process{i}.json')], cwd=ROOT, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for i, proc in enumerate(procs):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f'process {i}:\n{out[-2000:]}\n{err[-3000:]}'
  results = [json.loads((tmp_path / f'process{i}.json').read_text()) for i in range(2)]
  indices = results[0]['indices']
  assert results[0]['asked'] == [indices[:4]] and results[1]['asked'] == [indices[4:]]
  for result in results:
    assert result['global_batch_equals_one_process_read']


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='Linux namespaces')
def test_the_request_channel_admits_only_key_holders():
  """A stranger who connects and stays silent holds nobody up; a wrong key gets
  nothing; a worker with the key gets the requests published before and after."""
  channel = input_pipeline._RequestChannel(None)  # pylint: disable=protected-access
  try:
    channel.publish(0, 0, 1, 7, np.array([4, 2]))  # elements 0, 1: rows 0, 1
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stranger.connect(channel.address)  # never answers the challenge
    with pytest.raises(connection.AuthenticationError):
      connection.Client(channel.address, 'AF_UNIX', authkey=b'wrong key')
    requests = input_pipeline._Requests(channel.address, channel.authkey)  # pylint: disable=protected-access
    assert requests.ring is None
    channel.publish(2, 2, 2, 8, np.array([9, 3, 6]))  # elements 2, 3: rows 2-3, 4
    looked_up = [requests.lookup(k) for k in range(4)]
    assert [(step, first, list(indices)) for step, first, indices in looked_up] == [
        (7, 0, [4]), (7, 1, [2]), (8, 2, [9, 3]), (8, 4, [6])]
    stranger.close()
  finally:
    channel.close()
  with pytest.raises(input_pipeline._Closed):  # pylint: disable=protected-access
    requests.lookup(4)
