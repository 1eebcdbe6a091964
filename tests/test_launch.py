"""launch.py end to end, as a user runs it: the quickstart for a few steps (its run
files, the epoch in the logs, wandb off by default, the privacy calculator's numbers
against its privacy.json), --dry_run, a bad field, a diverging run's warning, and four
fake CPU devices."""
import json
import os
import subprocess
import sys

import pytest

from image_classification import privacy_calculator
from image_classification.data.readers import digits
from tests.reporting import fake_runs
from tests.training import wiring_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--config.training.num_steps=6', '--config.training.log_every_steps=2',
        '--config.training.eval_every_steps=3', '--config.training.batch_size=128',
        '--config.wandb.mode=disabled']


def _launch(args, env=None, timeout=400):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'WANDB_MODE': 'disabled', **(env or {})}
  return subprocess.run([sys.executable, 'launch.py', '--config=configs/quickstart.py']
                        + args, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def test_quickstart_few_steps_leaves_every_run_file(tmp_path):
  workdir = str(tmp_path / 'run')
  # wandb as configured: off unless a config or an override turns it on.
  proc = _launch([a for a in FAST if 'wandb' not in a] + [f'--workdir={workdir}'],
                 env={'WANDB_MODE': ''})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'done: test accuracy' in proc.stdout
  assert 'step 6/6' in proc.stdout and 'img/s' in proc.stdout and 'ETA' in proc.stdout
  assert not os.path.exists(os.path.join(workdir, 'wandb'))
  config = _read(workdir, 'config.json')
  assert config['training']['batch_size'] == 128
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [2, 3, 4, 6]
  for row in rows:
    assert {'step', 'epoch', 'epsilon', 'train_loss', 'images_per_sec'} <= set(row)
  assert 'test_accuracy' in rows[1] and 'test_accuracy' in rows[-1]
  assert all(a['epsilon'] < b['epsilon'] for a, b in zip(rows, rows[1:]))
  privacy = _read(workdir, 'privacy.json')
  for key in ('noise_multiplier', 'clipping_norm', 'sampling', 'sampling_rate',
              'expected_batch_size', 'steps', 'delta', 'epsilon', 'accountant',
              'neighboring_relation', 'dataset_size'):
    assert key in privacy, key
  assert privacy['sampling'] == 'poisson' and privacy['accountant'] == 'rdp'
  assert privacy['neighboring_relation'] == 'add_or_remove_one'
  splits = digits.load()
  n, n_test = splits.train.num_examples, splits.test.num_examples
  assert privacy['dataset_size'] == n and privacy['expected_batch_size'] == 128
  # The epoch beside the step: steps x B / N, in metrics.jsonl and on the console.
  assert [r['epoch'] for r in rows] == [round(r['step'] * 128 / n, 4) for r in rows]
  assert f'step 6/6 | epoch {6 * 128 / n:.2f} | eps' in proc.stdout
  summary = _read(workdir, 'summary.json')
  # Epsilon of the 6 steps taken with the sigma the run reports, recomputed with
  # dp-accounting (a plan-level "epsilon <= target" could never fail: the plan
  # refuses such runs before training).
  eps = wiring_helpers.reference_epsilon(
      sigma=privacy['noise_multiplier'], n=n, b=128, steps=summary['steps'],
      delta=1e-5)
  assert privacy['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert summary['epsilon'] == pytest.approx(eps, rel=1e-6)
  for row in rows:
    assert row['epsilon'] == pytest.approx(wiring_helpers.reference_epsilon(
        sigma=privacy['noise_multiplier'], n=n, b=128, steps=row['step'],
        delta=1e-5), rel=1e-6)
  # The accuracy counts the held-out digits and is the one logged at step 6.
  assert summary['test_accuracy'] * n_test == pytest.approx(
      round(summary['test_accuracy'] * n_test), abs=1e-9)
  assert rows[-1]['test_accuracy'] == summary['test_accuracy']
  assert summary['steps'] == 6 and summary['delta'] == 1e-5
  assert summary['noise_multiplier'] == pytest.approx(privacy['noise_multiplier'])
  assert summary['wall_time_sec'] > 0
  assert summary['warnings'] == [] and 'warning:' not in proc.stdout
  # The privacy calculator gives this run's numbers from N, B, steps and sigma alone.
  calc = subprocess.run(
      [sys.executable, 'launch.py', '--privacy_calculator', f'--dataset_size={n}',
       '--batch_size=128', '--steps=6',
       f'--noise_multiplier={privacy["noise_multiplier"]!r}', '--delta=1e-5'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
      text=True, timeout=300, check=False)
  assert calc.returncode == 0 and not calc.stderr, calc.stderr
  epsilon_line = [l for l in calc.stdout.splitlines() if l.split()[:1] == ['epsilon']]
  assert epsilon_line[0].split()[1] == (
      f'{privacy_calculator.round_up(privacy["epsilon"]):.4g}')
  assert privacy_calculator.calculate(  # sigma from the target, to the last bit
      dataset_size=n, batch_size=128, steps=6, target_epsilon=4.0
  ).plan.noise_multiplier == privacy['noise_multiplier']
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
      sigma=plan['noise_multiplier'], n=plan['dataset_size'], b=512, steps=plan['steps'],
      delta=1e-5),
      rel=1e-6)
  assert plan['num_params'] > 0
  assert plan['dataset_size'] == digits.load().train.num_examples
  assert sorted(os.listdir(workdir)) == ['plan.json']


def test_bad_field_exits_with_a_message_naming_it(tmp_path):
  proc = _launch([f'--workdir={tmp_path}', '--config.privacy.target_epsilon=-1'])
  assert proc.returncode == 2
  assert 'config.privacy.target_epsilon=-1' in proc.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_a_diverging_run_says_so_after_done_and_in_summary_json(tmp_path):
  """A learning rate of 100 makes the loss grow from the first rows on (issue 28)."""
  workdir = str(tmp_path / 'run')
  proc = _launch(['--config.training.num_steps=20', '--config.training.batch_size=64',
                  '--config.training.log_every_steps=2',
                  '--config.training.eval_every_steps=0',
                  '--config.training.optimizer.learning_rate=100',
                  '--config.privacy.insecure_seeded_noise=True',
                  f'--workdir={workdir}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  warnings = _read(workdir, 'summary.json')['warnings']
  assert warnings and warnings[0].startswith('the train loss (no noise) grew from')
  lines = proc.stdout.splitlines()
  done = next(i for i, l in enumerate(lines) if l.startswith('done: '))
  assert lines[done + 1] == f'warning: {warnings[0]}'


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


def _error_line(proc):
  """The one `error:` line a refused command ends with (no traceback)."""
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines and lines[-1].startswith('error: '), proc.stderr[-3000:]
  assert sum(line.startswith('error: ') for line in lines) == 1
  return lines[-1]


def _npz_file(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  good = tmp_path / 'good.npz'
  x = np.zeros((20, 8, 8, 1), np.uint8)
  np.savez(good, x_train=x, y_train=np.arange(20) % 2, x_test=x[:4],
           y_test=np.arange(4) % 2)
  truncated = tmp_path / 'truncated.npz'
  truncated.write_bytes(good.read_bytes()[:300])
  return truncated


# One case per way out of launch.py (a DataError, a ConfigError from the plan in a dry
# run, a flag the config lacks, the workdir check, the benchmark flags); the library
# tests check every message in-process.
@pytest.mark.parametrize('case', ['truncated_npz', 'target_epsilon', 'undeclared_kwarg',
                                  'workdir_file', 'benchmark_flag'])
def test_bad_input_ends_in_one_error_line_and_exit_2(tmp_path, case):
  truncated = _npz_file(tmp_path)
  workdir = tmp_path / 'run'
  npz = ['--config.data.name=npz', '--config.data.num_classes=2',
         '--config.training.batch_size=8']
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  args, expected = {
      'truncated_npz': (npz + [f'--config.data.path={truncated}'],
                        f"error: '{truncated}' is truncated or corrupt"),
      'target_epsilon': (['--config.privacy.target_epsilon=0.001', '--dry_run'],
                         'error: config.privacy.target_epsilon=0.001: no noise '
                         'multiplier below 1e5'),
      'undeclared_kwarg': (['--config.model.kwargs.normalization=group_norm'],
                           'error: --config.model.kwargs.normalization: '
                           'configs/quickstart.py has no field'),
      'workdir_file': ([f'--workdir={a_file}'], 'is a file, not a folder'),
      'benchmark_flag': (['--benchmark', '--benchmark_batch_sizes=64,abc'],
                         "error: --benchmark_batch_sizes=64,abc: 'abc' is not an "
                         'integer'),
  }[case]
  if not any(a.startswith('--workdir') for a in args):
    args = args + [f'--workdir={workdir}']
  proc = _launch(args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert expected in _error_line(proc)
  assert not workdir.exists()  # refused before anything was written
  if case == 'undeclared_kwarg':
    assert "model 'cnn' accepts ['activation', 'channels', 'flatten', 'hidden']" in \
        proc.stderr


def test_sweep_exit_codes(tmp_path):
  bad = tmp_path / 'bad_sweep.py'
  bad.write_text('def get_sweep():\n'
                 "  return [{'seed': 0}, {'training.eval_batch_size': 0}]\n")
  proc = _launch([f'--sweep={bad}', f'--workdir={tmp_path / "bad"}'])
  assert proc.returncode == 2
  assert 'error: 1 of 2 sweep points have a bad config; nothing was trained' in \
      _error_line(proc)
  assert not (tmp_path / 'bad').exists()

  corrupt = tmp_path / 'corrupt.npz'
  corrupt.write_bytes(b'not weights')
  failing = tmp_path / 'failing_sweep.py'
  # Passes the checks (the file exists), fails in training when the weights are read.
  failing.write_text('def get_sweep():\n'
                     f"  return [{{'model.pretrained_path': '{corrupt}'}}]\n")
  workdir = tmp_path / 'sweep'
  proc = _launch(['--config.training.num_steps=2', '--config.wandb.mode=disabled',
                  f'--sweep={failing}', f'--workdir={workdir}'])
  assert proc.returncode == 1, proc.stderr[-3000:]
  line = _error_line(proc)
  assert line.startswith('error: 1 of 1 sweep points failed')
  assert 'run the same command again' in line
  assert (workdir / 'sweep.md').exists()


def test_report_command(tmp_path):
  """launch.py --report is the report's entry point (no --config needed)."""
  a = fake_runs.write_run(str(tmp_path / 'a' / 'run'))
  b = fake_runs.write_run(str(tmp_path / 'b' / 'run'))
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, 'launch.py', f'--report={a},{b}',
                         f'--workdir={out}'], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=400,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == f"wrote {out / 'report.md'}"
  md = (out / 'report.md').read_text()
  assert '| run |' in md and '| run_2 |' in md
