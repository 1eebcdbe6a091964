"""Protecting long runs: SIGTERM saves a checkpoint and exits cleanly (a real
launch.py process), a failing final evaluation keeps the final checkpoint, the timer
checkpoints by wall time, and the wall time adds up over segments."""
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
from image_classification.workdir import checkpoint_store
from image_classification.training import evaluation
from image_classification.training import loop
from image_classification.workdir import run_control

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny, fast quickstart: many cheap steps, so that the run is surely still training
# when the signal comes; a fixed noise multiplier (no calibration).
LONG_RUN = {
    'training.num_steps': 3000,
    'training.log_every_steps': 1,
    'training.eval_every_steps': 0,
    'training.batch_size': 32,
    'privacy.noise_multiplier': 5.0,
    'privacy.target_epsilon': 50.0,
    'model.kwargs.channels': (4,),
    'wandb.mode': 'disabled',
}


def _config(overrides):
  config = quickstart.get_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _command(workdir, overrides):
  flags = [f'--config.{k}={v}'.replace(' ', '') for k, v in overrides.items()]
  return [sys.executable, 'launch.py', '--config=configs/quickstart.py', *flags,
          f'--workdir={workdir}']


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled', PYTHONPATH=ROOT)


def _checkpoint_steps(workdir):
  folder = os.path.join(workdir, checkpoint_store.CHECKPOINTS)
  if not os.path.isdir(folder):
    return []
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def _stop_once_training(workdir, sig, min_rows):
  """Starts LONG_RUN, sends ``sig`` once ``min_rows`` metrics rows exist; returns
  (returncode, stdout, stderr)."""
  metrics_path = os.path.join(workdir, run_files.METRICS)
  proc = subprocess.Popen(_command(workdir, LONG_RUN), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 240
    # Training is under way once a few metrics rows exist.
    while proc.poll() is None and not (
        os.path.exists(metrics_path) and len(_metrics(workdir)) >= min_rows):
      assert time.time() < deadline, 'training did not start'
      time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, stdout, stderr


# Slow (about 110 s: it resumes a 3000-step run to the end). The stop itself is also
# test_ctrl_c_stops_with_a_checkpoint_and_status_130, the exact resume test_resume.py.
# `python -m pytest -q -m slow` runs it.
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_cleanly_and_the_same_command_resumes(
    tmp_path):
  workdir = str(tmp_path / 'run')
  returncode, stdout, stderr = _stop_once_training(workdir, signal.SIGTERM, 3)
  assert returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert 'stopped by SIGTERM at step' in stderr
  assert 'To resume, run the same command again' in stderr and 'launch.py' in stderr
  steps = _checkpoint_steps(workdir)
  assert steps and 0 < steps[-1] < 3000
  stopped_at = steps[-1]
  assert f'at step {stopped_at} of 3000' in stderr
  assert not os.path.exists(os.path.join(workdir, run_files.SUMMARY))
  rows = _metrics(workdir)
  assert rows[-1]['step'] == stopped_at  # the stopping step has its row
  # The checkpoint is complete and verified, at the step the message names.
  ckpts = checkpoint_store.Checkpoints(workdir, read_only=True)
  try:
    assert ckpts.restore_latest().step == stopped_at
  finally:
    ckpts.close()

  # The same command resumes from that checkpoint and counts both segments' time.
  result = subprocess.run(_command(workdir, LONG_RUN), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=400, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert f'resuming from the checkpoint of step {stopped_at}' in result.stdout
  summary = run_files.read_json(workdir, run_files.SUMMARY)
  assert summary['status'] == 'complete' and summary['steps'] == 3000
  assert summary['resumed_from_step'] == stopped_at
  assert summary['segments'] == 2
  wall = run_files.read_json(workdir, run_files.WALL_TIME)
  first, second = wall['segments']
  assert first['to_step'] == stopped_at and second['from_step'] == stopped_at
  assert first['seconds'] > 0 and second['seconds'] > 0
  assert summary['wall_time_sec_last_segment'] == pytest.approx(second['seconds'],
                                                                rel=0.2)
  assert summary['wall_time_sec'] == pytest.approx(
      first['seconds'] + second['seconds'], rel=0.05)
  assert summary['wall_time_sec'] > summary['wall_time_sec_last_segment']


def test_ctrl_c_stops_with_a_checkpoint_and_status_130(tmp_path):
  workdir = str(tmp_path / 'run')
  returncode, _, stderr = _stop_once_training(workdir, signal.SIGINT, 2)
  assert returncode == 130, stderr[-3000:]
  assert 'stopped by SIGINT at step' in stderr and 'Traceback' not in stderr
  steps = _checkpoint_steps(workdir)
  assert steps and f'at step {steps[-1]} of 3000' in stderr


SHORT_RUN = {
    'training.num_steps': 6,
    'training.log_every_steps': 2,
    'training.eval_every_steps': 0,
    'training.batch_size': 64,
    'privacy.noise_multiplier': 2.0,
    'model.kwargs.channels': (4,),
    'wandb.mode': 'disabled',
}


def test_a_failing_final_evaluation_keeps_the_final_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = _config(SHORT_RUN)

  def broken(*args, **kwargs):
    raise RuntimeError('evaluation failed')

  monkeypatch.setattr(evaluation, 'evaluate', broken)
  with pytest.raises(RuntimeError, match='evaluation failed'):
    loop.train(config, workdir)
  # The training survived: the final checkpoint and the exported parameters.
  assert _checkpoint_steps(workdir) == [6]
  assert os.path.exists(os.path.join(workdir, run_files.EXPORT, run_files.PARAMS))
  assert not os.path.exists(os.path.join(workdir, run_files.SUMMARY))

  monkeypatch.undo()
  summary = loop.train(config, workdir)  # the same command again: evaluates only
  assert summary['status'] == 'complete' and summary['resumed_from_step'] == 6
  assert 0 <= summary['test_accuracy'] <= 1
  rows = _metrics(workdir)
  final = [r for r in rows if r['step'] == 6]
  assert len(final) == 1 and final[0]['test_accuracy'] == summary['test_accuracy']
  assert [r['step'] for r in rows] == [2, 4, 6]


def test_checkpoints_by_wall_time(tmp_path, monkeypatch):
  # Every step takes "a minute": the timer is due after each one.
  clock = [0.0]

  def monotonic():
    clock[0] += 61.0
    return clock[0]

  monkeypatch.setattr(run_control, '_now', monotonic)
  workdir = str(tmp_path / 'run')
  config = _config({**SHORT_RUN, 'training.checkpoint_every_minutes': 1.0})
  assert config.training.checkpoint_every_steps == 0
  seen = []
  save = checkpoint_store.Checkpoints.save

  def recording_save(self, state, metadata):
    seen.append(metadata['step'])
    return save(self, state, metadata)

  monkeypatch.setattr(checkpoint_store.Checkpoints, 'save', recording_save)
  loop.train(config, workdir)
  assert seen == [1, 2, 3, 4, 5, 6]


def test_timer_is_due_after_the_interval_and_off_at_zero(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(run_control, '_now', lambda: now[0])
  control = run_control.RunControl(checkpoint_every_minutes=10)
  assert not control.checkpoint_due()
  now[0] += 599
  assert not control.checkpoint_due()
  now[0] += 2
  assert control.checkpoint_due()
  control.checkpoint_saved()
  assert not control.checkpoint_due()
  off = run_control.RunControl(checkpoint_every_minutes=0)
  now[0] += 1e9
  assert not off.checkpoint_due()


def test_signals_set_a_flag_inside_and_are_restored_outside():
  def handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

  before = handlers()
  with pytest.raises(run_control.Stopped):
    with run_control.RunControl() as control:
      assert not control.stop_requested()
      os.kill(os.getpid(), signal.SIGINT)  # recorded: no KeyboardInterrupt
      time.sleep(0.01)
      assert control.stop_requested() and control.signum == signal.SIGINT
      stopped = control.stopped(7, 10, '/some/checkpoints')
      assert stopped.exit_code == 130 and 'at step 7 of 10' in stopped.message
      with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
      raise stopped
  assert handlers() == before
  assert stop_signals.received() is None  # acted on: the next run starts clean
  # A signal that nothing acted on before the block ended is not lost.
  with pytest.raises(KeyboardInterrupt, match='SIGTERM'):
    with run_control.RunControl():
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.01)
  assert handlers() == before and stop_signals.received() is None
  assert not issubclass(run_control.Stopped, Exception)  # sweeps must not swallow it


def test_wall_clock_adds_segments(tmp_path):
  workdir = str(tmp_path)
  first = run_control.WallClock(workdir, 0, start_time=time.time() - 30)
  first.update(5)
  second = run_control.WallClock(workdir, 5, start_time=time.time() - 10)
  second.update(9)
  assert second.num_segments == 2
  assert second.last_segment() == pytest.approx(10, abs=1)
  assert second.total() == pytest.approx(40, abs=1)
  saved = run_files.read_json(workdir, run_files.WALL_TIME)
  assert [(s['from_step'], s['to_step']) for s in saved['segments']] == [(0, 5), (5, 9)]


@pytest.mark.parametrize('field, value', [
    ('training.checkpoint_every_minutes', -1.0),
    ('data.validation_fraction', 1.0),
    ('data.validation_fraction', -0.5),
])
def test_bad_values_are_named_before_anything_runs(field, value):
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  config = _config({field: value})
  with pytest.raises(config_lib.ConfigError, match=f'config.{field}={value}'):
    config_lib.validate(config, 1)
