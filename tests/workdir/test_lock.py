"""One training process per workdir (workdir/lock.py): a second command training into a
busy workdir fails at once, naming the workdir and what to do, and writes nothing; the
lock is released when the run ends, however it ends."""
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


def _listing(workdir):
  return sorted(os.listdir(workdir)) if os.path.isdir(workdir) else None


def test_a_busy_workdir_is_refused_and_left_as_it_was(tmp_path):
  workdir = str(tmp_path / 'run')
  with lock.held(workdir):  # another process's run (another open file description)
    before = _listing(workdir)
    with pytest.raises(lock.WorkdirBusy, match=r'--workdir=.*run is in use'):
      loop.train(_config(), workdir)
    assert _listing(workdir) == before == []
  summary = loop.train(_config(), workdir)  # released: the same command now trains
  assert summary['status'] == 'complete'
  with lock.held(workdir):  # and the finished run released it
    pass


def test_the_lock_goes_with_a_failed_run(tmp_path):
  workdir = str(tmp_path / 'run')
  config = _config()
  config.training.num_steps = 0
  config.training.num_epochs = 0.0  # refused before the lock
  with pytest.raises(Exception):
    loop.train(config, workdir)
  with lock.held(workdir):
    pass


def test_a_second_launch_says_so_in_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  with lock.held(workdir):
    proc = subprocess.run(
        [sys.executable, 'launch.py', '--config=configs/quickstart.py',
         f'--workdir={workdir}', '--config.training.num_steps=2',
         '--config.wandb.mode=disabled'], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'is in use' in proc.stderr and 'Traceback' not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, run_files.CONFIG))
