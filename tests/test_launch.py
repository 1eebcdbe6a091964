"""launch.py end to end, as a user runs it: the quickstart for a few steps, --dry_run,
a bad field, and four fake CPU devices."""
import json
import os
import subprocess
import sys

import pytest

from tests.training import wiring_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--config.training.num_steps=6', '--config.training.log_every_steps=2',
        '--config.training.eval_every_steps=3', '--config.training.batch_size=128',
        '--config.wandb.mode=disabled']


def _launch(args, env=None, timeout=400):
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled', **(env or {}))
  return subprocess.run([sys.executable, 'launch.py', '--config=configs/quickstart.py']
                        + args, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def test_quickstart_few_steps_leaves_every_run_file(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _launch(FAST + [f'--workdir={workdir}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'done: test accuracy' in proc.stdout
  assert 'step 6/6' in proc.stdout and 'img/s' in proc.stdout and 'ETA' in proc.stdout
  config = _read(workdir, 'config.json')
  assert config['training']['batch_size'] == 128
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [2, 3, 4, 6]
  for row in rows:
    assert {'step', 'epsilon', 'train_loss', 'images_per_sec'} <= set(row)
  assert 'test_accuracy' in rows[1] and 'test_accuracy' in rows[-1]
  assert all(a['epsilon'] < b['epsilon'] for a, b in zip(rows, rows[1:]))
  privacy = _read(workdir, 'privacy.json')
  for key in ('noise_multiplier', 'clipping_norm', 'sampling', 'sampling_rate',
              'expected_batch_size', 'steps', 'delta', 'epsilon', 'accountant',
              'neighboring_relation', 'dataset_size'):
    assert key in privacy, key
  assert privacy['sampling'] == 'poisson' and privacy['accountant'] == 'rdp'
  assert privacy['neighboring_relation'] == 'add_or_remove_one'
  assert privacy['dataset_size'] == 1437 and privacy['expected_batch_size'] == 128
  summary = _read(workdir, 'summary.json')
  # Epsilon of the 6 steps taken with the sigma the run reports, recomputed with
  # dp-accounting (a plan-level "epsilon <= target" could never fail: the plan
  # refuses such runs before training).
  eps = wiring_helpers.reference_epsilon(
      sigma=privacy['noise_multiplier'], n=1437, b=128, steps=summary['steps'],
      delta=1e-5)
  assert privacy['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert summary['epsilon'] == pytest.approx(eps, rel=1e-6)
  for row in rows:
    assert row['epsilon'] == pytest.approx(wiring_helpers.reference_epsilon(
        sigma=privacy['noise_multiplier'], n=1437, b=128, steps=row['step'],
        delta=1e-5), rel=1e-6)
  # The accuracy counts the 360 held-out digits and is the one logged at step 6.
  assert summary['test_accuracy'] * 360 == pytest.approx(
      round(summary['test_accuracy'] * 360), abs=1e-9)
  assert rows[-1]['test_accuracy'] == summary['test_accuracy']
  assert summary['steps'] == 6 and summary['delta'] == 1e-5
  assert summary['noise_multiplier'] == pytest.approx(privacy['noise_multiplier'])
  assert summary['wall_time_sec'] > 0
  with open(os.path.join(workdir, 'privacy.md')) as f:
    text = f.read()
  assert 'add-or-remove-one' in text and 'WITHOUT noise' in text


def test_dry_run_writes_plan_and_trains_nothing(tmp_path):
  workdir = str(tmp_path / 'plan')
  proc = _launch([f'--workdir={workdir}', '--dry_run'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  plan = _read(workdir, 'plan.json')
  for key in ('num_params', 'noise_multiplier', 'epsilon', 'delta', 'steps',
              'sampling_rate', 'expected_batch_size'):
    assert key in plan, key
  # Calibrated to the target: the budget is used, and it is the epsilon of the plan.
  assert plan['epsilon'] == pytest.approx(4.0, rel=2e-3)
  assert plan['epsilon'] == pytest.approx(wiring_helpers.reference_epsilon(
      sigma=plan['noise_multiplier'], n=1437, b=512, steps=plan['steps'], delta=1e-5),
      rel=1e-6)
  assert plan['num_params'] > 0
  assert sorted(os.listdir(workdir)) == ['plan.json']


def test_bad_field_exits_with_a_message_naming_it(tmp_path):
  proc = _launch([f'--workdir={tmp_path}', '--config.privacy.target_epsilon=-1'])
  assert proc.returncode == 2
  assert 'config.privacy.target_epsilon=-1' in proc.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_four_fake_devices(tmp_path):
  workdir = str(tmp_path / 'run4')
  proc = _launch(FAST + [f'--workdir={workdir}'],
                 env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'cpu x4' in proc.stdout
  assert _read(workdir, 'summary.json')['status'] == 'complete'


def test_host_devices_flag_splits_the_cpu(tmp_path):
  workdir = str(tmp_path / 'run2')
  proc = _launch(FAST + [f'--workdir={workdir}', '--host_devices=2'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'cpu x2' in proc.stdout
  assert _read(workdir, 'summary.json')['status'] == 'complete'
  clash = _launch(FAST + [f'--workdir={tmp_path / "clash"}', '--host_devices=2'],
                  env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert clash.returncode != 0 and 'keep one of them' in clash.stderr
