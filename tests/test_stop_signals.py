"""Ctrl-C and SIGTERM at any moment of launch.py (issue 28, bug 5): during the imports,
at one second (the issue's reproduction: the signal was lost and the run trained to
its end), before the first step, after the last step. Each ends in a checkpoint or
nothing to save, a message saying how to go on, exit 130 / 143 and no traceback; the
same command then finishes the run. (Mid-training stops: test_run_control.py.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import quickstart
from image_classification.workdir import run_files
from image_classification import stop_signals
from image_classification.trained import export as export_lib
from image_classification.training import loop
from image_classification.workdir import run_control

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Q with 300 steps, smaller to keep the test short.
Q = ['--config=configs/quickstart.py', '--config.training.num_steps=40',
     '--config.training.batch_size=32', '--config.training.log_every_steps=10',
     '--config.model.kwargs.channels=(4,)']


def _command(workdir):
  return [sys.executable, 'launch.py', *Q, f'--workdir={workdir}']


def _start(workdir):
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  return subprocess.Popen(_command(workdir), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _catches_sigterm(pid) -> bool:
  """Whether the process has installed a SIGTERM handler (Linux's /proc; Python alone
  has none): launch.py's first lines do, before its imports."""
  with open(f'/proc/{pid}/status') as f:
    mask = next(int(l.split()[1], 16) for l in f if l.startswith('SigCgt:'))
  return bool(mask & (1 << (signal.SIGTERM - 1)))


def _wait_for(proc, condition, what):
  deadline = time.time() + 240
  while not condition():
    assert proc.poll() is None, f'the run ended before {what}: {proc.communicate()}'
    assert time.time() < deadline, f'no {what}'
    time.sleep(0.01)


def _stop(proc, sig):
  proc.send_signal(sig)
  try:
    stdout, stderr = proc.communicate(timeout=240)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 128 + sig, stdout[-2000:] + stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert 'run the same command again' in stderr and 'launch.py' in stderr, stderr
  return stdout, stderr


def _finishes(workdir):
  """The same command completes the run."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  proc = subprocess.run(_command(workdir), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=400, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert run_files.read_json(workdir, run_files.SUMMARY)['steps'] == 40
  return proc


def test_ctrl_c_during_the_imports_stops_with_nothing_to_save(tmp_path):
  workdir = tmp_path / 'run'
  proc = _start(workdir)
  _wait_for(proc, lambda: _catches_sigterm(proc.pid), 'signal handler')
  _, stderr = _stop(proc, signal.SIGINT)  # the imports take seconds more
  assert 'stopped by SIGINT before the command started: nothing was done' in stderr
  assert not workdir.exists()


def test_ctrl_c_at_one_second_is_not_lost(tmp_path):
  """The issue's reproduction: the run used to train to its end and exit 0."""
  workdir = str(tmp_path / 'run')
  proc = _start(workdir)
  time.sleep(1.0)
  _, stderr = _stop(proc, signal.SIGINT)
  assert 'stopped by SIGINT' in stderr
  assert not os.path.exists(os.path.join(workdir, run_files.SUMMARY))
  _finishes(workdir)


def test_sigterm_before_the_first_step_saves_nothing_and_exits_143(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _start(workdir)
  # config.json is written just before the model is built and the first step compiles.
  _wait_for(proc, lambda: os.path.exists(os.path.join(workdir, run_files.CONFIG)),
            'config.json')
  _, stderr = _stop(proc, signal.SIGTERM)
  assert ('stopped by SIGTERM before the first step of this attempt (step 0 of 40); '
          'nothing was trained yet, so nothing was saved' in stderr
          or 'stopped by SIGTERM at step 1 of 40; checkpoint saved' in stderr), stderr
  _finishes(workdir)


def test_a_signal_after_the_last_step_keeps_the_training(tmp_path, monkeypatch):
  """In-process (as from a notebook): a signal while the final parameters are exported
  stops before the evaluation; the same call then evaluates without training."""
  config = quickstart.get_config()
  config.training.update(num_steps=6, batch_size=64, log_every_steps=3,
                         eval_every_steps=0)
  config.model.kwargs.channels = (4,)
  workdir = str(tmp_path / 'run')
  export = export_lib.export_params

  def export_then_signal(*args, **kwargs):
    export(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)

  monkeypatch.setattr(export_lib, 'export_params', export_then_signal)
  with pytest.raises(run_control.Stopped) as stopped:
    loop.train(config, workdir)
  assert stopped.value.exit_code == 130
  assert stopped.value.message.startswith(
      'stopped by SIGINT after the last step (6 of 6); the final checkpoint and '
      'export/ are saved, the final evaluation and the run files not yet')
  assert not os.path.exists(os.path.join(workdir, run_files.SUMMARY))
  assert stop_signals.received() is None  # acted on: the next call starts clean
  monkeypatch.setattr(export_lib, 'export_params', export)
  summary = loop.train(config, workdir)
  assert summary['status'] == 'complete' and summary['resumed_from_step'] == 6
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == [3, 6]  # the final row once
