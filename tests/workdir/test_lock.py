"""One training process per workdir (workdir/lock.py): a second command training into a
busy workdir fails at once, naming the workdir and what to do, and writes nothing; the
lock is released when the run ends, however it ends."""
import contextlib
import fcntl
import os
import subprocess
import sys

import pytest

from configs import quickstart
from image_classification.training import loop
from image_classification.workdir import lock
from image_classification.workdir import run_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  config = quickstart.get_config()
  config.training.num_steps = 2
  config.training.eval_every_steps = 0
  config.model.kwargs.channels = (4,)
  config.wandb.mode = 'disabled'
  return config


@contextlib.contextmanager
def _another_process_holds(workdir):
  """The workdir's flock, taken as another process's run takes it."""
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(workdir, os.O_RDONLY)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  try:
    yield
  finally:
    os.close(fd)


def _listing(workdir):
  return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else None


def test_a_busy_workdir_is_refused_and_left_as_it_was(tmp_path):
  workdir = str(tmp_path / 'run')
  with _another_process_holds(workdir):
    before = _listing(workdir)
    with pytest.raises(lock.WorkdirBusy, match=r'--workdir=.*run is in use'):
      loop.train(_config(), workdir)
    assert _listing(workdir) == before == []
  summary = loop.train(_config(), workdir)  # released: the same command now trains
  assert summary['status'] == 'complete'
  with _another_process_holds(workdir):  # and the finished run released it
    pass


def test_the_lock_goes_with_a_failed_run(tmp_path):
  workdir = str(tmp_path / 'run')
  config = _config()
  config.training.num_steps = 0
  config.training.num_epochs = 0.0  # refused before the lock
  with pytest.raises(Exception):
    loop.train(config, workdir)
  with _another_process_holds(workdir):
    pass


def test_a_second_launch_says_so_in_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  with _another_process_holds(workdir):
    proc = subprocess.run(
        [sys.executable, 'launch.py', '--config=configs/quickstart.py',
         f'--workdir={workdir}', '--config.training.num_steps=2',
         '--config.wandb.mode=disabled'], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'is in use' in proc.stderr and 'Traceback' not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, run_files.CONFIG))


def test_a_busy_workdir_is_refused_before_its_data_loads_and_nothing_is_removed(
    tmp_path):
  """The lock comes first: a command whose config would fail while loading (a batch
  larger than the data) into a busy workdir says the workdir is busy, and neither a
  dry run's plan.json nor the cleanup of unfinished files touches the live run's
  folder."""
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  live = os.path.join(workdir, 'checkpoint_in_progress.tmp')
  open(live, 'w').close()
  config = _config()
  config.training.batch_size = 4000  # > the 1438 digits: refused while loading
  with _another_process_holds(workdir):
    for dry_run in (False, True):
      with pytest.raises(lock.WorkdirBusy):
        loop.train(config, workdir, dry_run=dry_run)
  assert _listing(workdir) == ['checkpoint_in_progress.tmp']


def test_a_sweep_point_already_running_keeps_its_job_record(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from image_classification.sweeps import point_job  # pylint: disable=g-import-not-at-top
  point = str(tmp_path / 'point')
  os.makedirs(point)
  record = {'state': 'running', 'pid': 12345, 'host': 'elsewhere'}
  with open(os.path.join(point, run_files.SWEEP_JOB), 'w') as f:
    json.dump(record, f)
  with _another_process_holds(point):
    with pytest.raises(lock.WorkdirBusy):
      point_job.run_point(_config(), point, loop.train, executor='sequential')
  with open(os.path.join(point, run_files.SWEEP_JOB)) as f:
    assert json.load(f) == record
  assert not os.path.exists(os.path.join(point, run_files.SWEEP_ERROR))
  # Free again: the point trains, its own record re-entering the lock it holds.
  point_job.run_point(_config(), point, loop.train, executor='sequential')
  assert point_job.read_record(point)['state'] == 'complete'


def test_every_process_of_a_job_stops_at_a_busy_workdir(tmp_path):
  """Only process 0 takes the lock; the others learn it is busy and stop too, at once,
  instead of waiting in a collective for a process that has left."""
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', PYTHONPATH=ROOT)
  with _another_process_holds(workdir):
    start = time.time()
    procs = [subprocess.Popen(
        [sys.executable, 'launch.py', '--config=configs/quickstart.py',
         f'--workdir={workdir}', '--config.training.num_steps=2',
         '--config.wandb.mode=disabled', f'--coordinator_address=localhost:{port}',
         '--num_processes=2', f'--process_id={i}'], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
  assert time.time() - start < 120
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 2 and 'is in use' in err, err[-2000:]


def test_the_holder_may_enter_again_and_the_lock_is_released_after_the_outer_block(
    tmp_path):
  workdir = str(tmp_path / 'run')
  with lock.held(workdir) as outer:
    with lock.held(workdir) as inner:
      assert outer and inner
    with pytest.raises(BlockingIOError):  # still held after the inner block
      with _another_process_holds(workdir):
        pass
  with _another_process_holds(workdir):  # released
    pass
  with lock.held(str(tmp_path / 'new'), create=False) as locked:
    assert not locked and not os.path.exists(tmp_path / 'new')
