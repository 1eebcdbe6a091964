"""Sweeps on a cluster (sweeps/cluster.py): submitit's local executor for real, Slurm
through a fake sbatch (no Slurm needed), one point alone, the table while jobs run.

The trained points are the quickstart shrunk to a few steps of a 4-channel CNN; each
local job is a fresh Python process, so these tests take tens of seconds, not minutes.
"""
import csv
import os
import socket
import stat
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import quickstart
from image_classification.workdir import run_files
from image_classification import sweeps
from image_classification import runs
from image_classification.privacy import mechanism_secret
from image_classification.sweeps import cluster
from image_classification.sweeps import point_job
from image_classification.sweeps import resources
from image_classification.sweeps import runner as sweep_runner
from tests.reporting import fake_runs
from tests.sweeps import cluster_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {'model.kwargs.channels': (4,), 'training.batch_size': 64,
        'training.num_steps': 4, 'training.log_every_steps': 2,
        'training.eval_every_steps': 0, 'privacy.noise_multiplier': 2.0}


@pytest.fixture(scope='module', autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One persistent compilation cache for this module's point jobs (they take this
  process's JAX options, as they take launch.py's): the tiny points share their
  programs, so later jobs skip most of the compiling."""
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs')
  before = {name: jax.config.values[name] for name in names}
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jax_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  yield
  for name, value in before.items():
    jax.config.update(name, value)


def tiny_config(**more):
  return sweeps.apply_overrides(quickstart.get_config(), {**TINY, **more})


def write_sweep(path, points):
  path.write_text(f'def get_sweep():\n  return {points!r}\n')
  return str(path)


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def without_wall_time(md_text):
  """sweep.md with the wall-time column blanked (the one column that differs)."""
  out = []
  for line in md_text.splitlines():
    cells = line.split('|')
    if line.startswith('|'):  # ... | wall time | status |
      cells[-3] = ''
    out.append('|'.join(cells))
  return '\n'.join(out)


# Slow (about 20 s; the local executor also runs in
# test_local_jobs_draw_their_own_secrets_and_the_submitit_folder_holds_none).
# `python -m pytest -q -m slow` runs it.
@pytest.mark.slow
def test_local_executor_table_equals_the_sequential_sweep(tmp_path):
  # Seeded noise, so that two trainings of a point are equal.
  config = tiny_config(**{'privacy.insecure_seeded_noise': True})
  sweep_file = write_sweep(tmp_path / 's.py', [{'seed': 0}, {'seed': 1}])
  sequential, local = str(tmp_path / 'sequential'), str(tmp_path / 'local')
  sweep_runner.run_sweep(config, sweep_file, sequential)
  rows = cluster.submit(config, sweep_file, local, 'local', {'parallelism': 2})
  assert [r['status'] for r in rows] == ['complete', 'complete']
  a = read_csv(os.path.join(sequential, run_files.SWEEP_CSV))
  b = read_csv(os.path.join(local, run_files.SWEEP_CSV))
  for row in a + b:
    assert float(row.pop('wall_time_sec')) > 0
  assert a == b
  assert [r['seed'] for r in a] == ['0', '1'] and a[0]['test_accuracy']
  md = [open(os.path.join(d, run_files.SWEEP_MD)).read() for d in (sequential, local)]
  assert without_wall_time(md[0]) == without_wall_time(md[1])
  # The local points ran as submitit jobs: their records say so.
  for name in ('seed=0', 'seed=1'):
    record = point_job.read_record(os.path.join(local, name))
    assert record['executor'] == 'local' and record['state'] == 'complete'
    assert point_job.read_record(os.path.join(sequential, name))['executor'] == 'sequential'


def _needles(config, secret_hex):
  """Byte strings that would betray the point's secret or its batches if found."""
  secret = bytes.fromhex(secret_hex)
  randomness = mechanism_secret.from_secret(secret)
  needles = {'secret hex': secret_hex.encode(), 'secret bytes': secret,
             'secret HEX': secret_hex.upper().encode(),
             'sampling seed': str(randomness.sampling_seed).encode(),
             'sampling seed bytes': randomness.sampling_seed.to_bytes(32, 'little'),
             'noise key': randomness.noise_key().astype('<u4').tobytes(),
             'noise key (big-endian)': randomness.noise_key().astype('>u4').tobytes(),
             'augmentation key': randomness.augment_key().astype('<u4').tobytes(),
             'augmentation key (big-endian)': randomness.augment_key().astype('>u4').tobytes()}
  selection = runs.check(config).plan.batch_selection(randomness.sampling_seed)
  for step in range(config.training.num_steps):
    idx = np.asarray(selection.indices(step))
    assert len(idx) >= 4  # a batch of ~64 out of 1438
    needles[f'step {step} indices int64'] = idx.astype(np.int64).tobytes()
    needles[f'step {step} indices int32'] = idx.astype(np.int32).tobytes()
    for sep in (', ', ' ', ','):
      needles[f'step {step} indices text {sep!r}'] = sep.join(map(str, idx[:4])).encode()
  return needles


def test_local_jobs_draw_their_own_secrets_and_the_submitit_folder_holds_none(
    tmp_path, monkeypatch):
  seen = tmp_path / 'seen_secrets'
  seen.mkdir()
  monkeypatch.setenv(cluster_helpers.SEEN_SECRETS, str(seen))
  config = tiny_config()
  points = [{'seed': 1}, {'seed': 2}, {'seed': cluster_helpers.FAILING_SEED}]
  sweep_file = write_sweep(tmp_path / 's.py', points)
  workdir = str(tmp_path / 'sweep')
  rows = cluster.submit(config, sweep_file, workdir, 'local', {'parallelism': 3},
                        train_fn=cluster_helpers.train_keeping_the_secret)
  assert [r['status'] for r in rows] == ['complete', 'complete', 'failed']
  assert 'planted failure' in rows[2]['error']
  assert os.path.exists(os.path.join(workdir, 'seed=99', run_files.SWEEP_ERROR))

  # Each point drew its own secret, in its own folder, deleted there once complete.
  secrets = {name: (seen / f'{name}.hex').read_text() for name in ('seed=1', 'seed=2')}
  assert len(set(secrets.values())) == 2
  for name in secrets:
    assert not os.path.exists(os.path.join(workdir, name, run_files.MECHANISM_SECRET))

  # Nothing submitit keeps (pickled jobs, results, logs), nor the sweep's own files,
  # holds a secret or a batch's indices.
  folder = os.path.join(workdir, run_files.SWEEP_SUBMITIT)
  files = [os.path.join(folder, f) for f in os.listdir(folder)]
  assert any(f.endswith('_submitted.pkl') for f in files)
  assert any(f.endswith('_result.pkl') for f in files)
  assert any(f.endswith('_log.out') for f in files)
  files += [os.path.join(workdir, f) for f in (
      run_files.SWEEP_CSV, run_files.SWEEP_MD, run_files.SWEEP_JSON, run_files.SWEEP_JOBS)]
  files += [os.path.join(workdir, n, run_files.SWEEP_JOB) for n in ('seed=1', 'seed=2')]
  for name, secret_hex in secrets.items():
    point_config = sweeps.apply_overrides(config, {'seed': int(name.split('=')[1])})
    needles = _needles(point_config, secret_hex)
    for path in files:
      with open(path, 'rb') as f:
        content = f.read()
      for what, needle in needles.items():
        assert needle not in content, f'{what} of point {name} found in {path}'

  # Submitting again skips the complete points; the failed one runs (and fails) again.
  before = set(os.listdir(folder))
  rows = cluster.submit(config, sweep_file, workdir, 'local', {'parallelism': 3},
                        train_fn=cluster_helpers.train_keeping_the_secret)
  assert [r['status'] for r in rows] == ['complete', 'complete', 'failed']
  new = {f for f in set(os.listdir(folder)) - before if f.endswith('_submitted.pkl')}
  assert len(new) == 1
  jobs = run_files.read_json(workdir, run_files.SWEEP_JOBS)['points']
  assert new == {f'{jobs["seed=99"]["job_id"]}_submitted.pkl'}


def test_a_bad_point_stops_the_local_sweep_before_anything_is_submitted(tmp_path):
  sweep_file = write_sweep(tmp_path / 's.py', [{'privacy.target_epsilon': 4.0},
                                               {'training.eval_batch_size': 0}])
  workdir = tmp_path / 'sweep'
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/quickstart.py',
       f'--sweep={sweep_file}', f'--workdir={workdir}', '--sweep_executor=local',
       '--compilation_cache_dir=none'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1
  assert '1 of 2 sweep points have a bad config; nothing was trained' in errors[0]
  assert 'training.eval_batch_size=0' in errors[0]
  assert not os.path.exists(workdir)


def test_sweep_flags_without_a_sweep_are_one_error_line(tmp_path):
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/quickstart.py',
       f'--workdir={tmp_path / "w"}', '--sweep_executor=slurm', '--sweep_gpus=2',
       '--compilation_cache_dir=none'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 2
  assert result.stderr.strip() == ('error: --sweep_executor, --sweep_gpus: only with '
                                   '--sweep=FILE (a sweep file)')
  assert not os.path.exists(tmp_path / 'w')


class FakeTrainer:
  """Writes a complete run (no training); fails for the seeds in ``fail``."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, config, workdir):
    self.calls.append((config.seed, workdir))
    if config.seed in self.fail:
      raise RuntimeError(f'boom at seed {config.seed}')
    fake_runs.write_run(workdir)


def test_sweep_point_trains_that_point_alone(tmp_path, capsys):
  sweep_file = write_sweep(tmp_path / 's.py', [{'seed': 0}, {'seed': 1}, {'seed': 2}])
  workdir = str(tmp_path / 'sweep')
  trainer = FakeTrainer(fail={2})
  options = cluster.options_from_flags('sequential', 1, False)
  assert cluster.command(tiny_config(), sweep_file, workdir, options, train_fn=trainer,
                         check_fn=None) == 0
  assert trainer.calls == [(1, os.path.join(workdir, 'seed=1'))]
  assert sorted(os.listdir(workdir)) == ['seed=1', run_files.SWEEP_JSON]
  assert point_job.read_record(os.path.join(workdir, 'seed=1'))['state'] == 'complete'
  # Again: complete, nothing to do.
  assert cluster.command(tiny_config(), sweep_file, workdir, options, train_fn=trainer,
                         check_fn=None) == 0
  assert len(trainer.calls) == 1
  assert 'already complete' in capsys.readouterr().out
  # A failing point: exit status 1, one error line, its traceback kept.
  options = cluster.options_from_flags('sequential', 2, False)
  assert cluster.command(tiny_config(), sweep_file, workdir, options, train_fn=trainer,
                         check_fn=None) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: sweep point 2 (seed=2) failed: RuntimeError: boom')
  assert 'boom at seed 2' in open(os.path.join(workdir, 'seed=2',
                                               run_files.SWEEP_ERROR)).read()
  with pytest.raises(sweeps.SweepError, match=r'--sweep_point=3: .* has 3 points; give 0\.\.2'):
    cluster.command(tiny_config(), sweep_file, workdir,
                    cluster.options_from_flags('sequential', 3, False),
                    train_fn=trainer, check_fn=None)


def test_sweep_point_checks_its_config_first(tmp_path):
  sweep_file = write_sweep(tmp_path / 's.py', [{'training.eval_batch_size': 0}])
  trainer = FakeTrainer()
  with pytest.raises(sweeps.SweepError, match='bad config; nothing was trained'):
    cluster.command(tiny_config(), sweep_file, str(tmp_path / 'w'),
                    cluster.options_from_flags('sequential', 0, False), train_fn=trainer)
  assert not trainer.calls


def test_report_only_marks_each_status(tmp_path):
  names = ['complete', 'running', 'stopped', 'killed', 'failed', 'submitted', 'missing']
  sweep_file = write_sweep(tmp_path / 's.py', [{'experiment': n} for n in names])
  workdir = tmp_path / 'sweep'
  point = lambda n: str(workdir / f'experiment={n}')
  here = socket.gethostname()
  fake_runs.write_run(point('complete'), accuracy=0.9)
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  for name, state, pid in (('running', 'running', os.getpid()),
                           ('stopped', 'stopped', dead.pid),
                           ('killed', 'running', dead.pid)):  # died without a word
    fake_runs.write_run(point(name), steps=20, epsilon=2.0, complete=False)
    run_files.write_json(point(name), run_files.SWEEP_JOB,
                         {'state': state, 'executor': 'local', 'host': here, 'pid': pid})
  os.makedirs(point('failed'))
  with open(os.path.join(point('failed'), run_files.SWEEP_ERROR), 'w') as f:
    f.write('Traceback ...\nValueError: diverged\n')
  run_files.write_json(str(workdir), run_files.SWEEP_JOBS, {'points': {
      'experiment=submitted': {'executor': 'local', 'host': here, 'pid': os.getpid()},
      'experiment=missing': {'executor': 'local', 'host': here, 'pid': dead.pid}}})

  status = cluster.command(None, sweep_file, str(workdir),
                           cluster.options_from_flags('sequential', None, True))
  assert status == 0
  table = read_csv(workdir / run_files.SWEEP_CSV)
  assert [r['status'] for r in table] == ['complete', 'running', 'stopped', 'stopped',
                                          'failed', 'submitted', 'missing']
  assert table[4]['error'] == 'ValueError: diverged'
  assert table[1]['steps'] == '20' and float(table[1]['epsilon']) == 2.0  # progress
  md = (workdir / run_files.SWEEP_MD).read_text()
  assert ('Points: 1 complete, 1 running, 2 stopped, 1 failed, 1 submitted, 1 missing'
          in md)


# ---------------------------------------------------------------------- Slurm
FAKE_SBATCH = """#!/bin/sh
# Records the submission file and answers like sbatch.
cp "$1" "{record}/$(ls {record} | wc -l).sbatch"
echo "Submitted batch job 4242"
"""


def fake_slurm_on_path(tmp_path, monkeypatch):
  bin_dir, record = tmp_path / 'bin', tmp_path / 'sbatch_files'
  bin_dir.mkdir()
  record.mkdir()
  for name, text in (('sbatch', FAKE_SBATCH.format(record=record)),
                     ('srun', '#!/bin/sh\nexit 1\n'), ('sacct', '#!/bin/sh\nexit 1\n')):
    path = bin_dir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  return record


def test_slurm_executor_submits_one_array_with_the_resources(tmp_path, monkeypatch):
  record = fake_slurm_on_path(tmp_path, monkeypatch)
  sweep_file = tmp_path / 's.py'
  sweep_file.write_text(textwrap.dedent("""
      def get_sweep():
        return [{'seed': 0}, {'seed': 1}, {'seed': 2}]

      def get_resources():
        return {'partition': 'small', 'gpus': 8, 'time_minutes': 90,
                'slurm': {'qos': 'high', 'account': 'from_file'},
                'setup': ['module load cuda']}
      """))
  workdir = str(tmp_path / 'sweep')
  fake_runs.write_run(os.path.join(workdir, 'seed=1'))  # complete: not submitted
  flags = cluster.options_from_flags(
      'slurm', None, False, partition='gpu', cpus=16, mem_gb=32,
      slurm=['account=proj']).resource_flags
  rows = cluster.submit(tiny_config(), str(sweep_file), workdir, 'slurm', flags,
                        check_fn=None)
  assert [r['status'] for r in rows] == ['submitted', 'complete', 'submitted']
  [sbatch] = [p.read_text() for p in record.iterdir()]
  for line in ('#SBATCH --array=0-1%2', '#SBATCH --partition=gpu',
               '#SBATCH --gpus-per-node=8', '#SBATCH --cpus-per-task=16',
               '#SBATCH --time=90', '#SBATCH --mem=32GB', '#SBATCH --qos=high',
               '#SBATCH --account=proj', '#SBATCH --nodes=1',
               '#SBATCH --ntasks-per-node=1', 'module load cuda'):
    assert line in sbatch.splitlines(), (line, sbatch)
  jobs = run_files.read_json(workdir, run_files.SWEEP_JOBS)['points']
  assert {n: j['job_id'] for n, j in jobs.items()} == {'seed=0': '4242_0',
                                                      'seed=2': '4242_1'}
  # A second submission while they wait (sacct cannot say otherwise) submits nothing.
  rows = cluster.submit(tiny_config(), str(sweep_file), workdir, 'slurm', flags,
                        check_fn=None)
  assert len(list(record.iterdir())) == 1
  assert [r['status'] for r in rows] == ['submitted', 'complete', 'submitted']


def test_slurm_needs_a_time_limit_and_slurm(tmp_path, monkeypatch):
  sweep_file = write_sweep(tmp_path / 's.py', [{'seed': 0}])
  with pytest.raises(sweeps.SweepError, match='needs a time limit per point'):
    cluster.submit(tiny_config(), sweep_file, str(tmp_path / 'w'), 'slurm', {},
                   check_fn=None)
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun
  with pytest.raises(sweeps.SweepError, match='Slurm login node'):
    cluster.submit(tiny_config(), sweep_file, str(tmp_path / 'w'), 'slurm',
                   {'time_minutes': 5}, check_fn=None)


# ---------------------------------------------------------------------- resources
def test_resources_come_from_flags_then_the_sweep_file_then_defaults():
  res = resources.resolve(
      {'gpus': 2, 'slurm': {'account': 'flag'}},
      {'gpus': 8, 'cpus': 4, 'time_minutes': 60, 'slurm': {'account': 'file', 'qos': 'q'}},
      'f.py', 'slurm')
  assert res['gpus'] == 2 and res['cpus'] == 4 and res['time_minutes'] == 60
  assert res['slurm'] == {'account': 'flag', 'qos': 'q'}
  assert resources.describe(res) == (
      'gpus=2 (--sweep_gpus), cpus=4 (sweep file), time_minutes=60 (sweep file), '
      'account=flag (--sweep_slurm), qos=q (sweep file)')
  local = resources.resolve({}, None, 'f.py', 'local')
  assert local['parallelism'] == 1 and local['gpus'] is None
  assert local.sources['parallelism'] == 'default'


@pytest.mark.parametrize('flag_values, file_values, match', [
    ({}, {'gpu': 1}, r"unknown key\(s\) \['gpu'\]"),
    ({'gpus': -1}, None, r'--sweep_gpus: gpus=-1 must be an integer >= 0'),
    ({}, {'time_minutes': 1.5}, r"get_resources\(\): time_minutes=1.5 must be a positive"),
    ({}, {'setup': 'module load x'}, 'must be a list of shell lines'),
])
def test_bad_resources_are_named(flag_values, file_values, match):
  with pytest.raises(sweeps.SweepError, match=match):
    resources.resolve(flag_values, file_values, 'f.py', 'local')


def test_conflicting_sweep_flags_and_bad_slurm_entries():
  with pytest.raises(sweeps.SweepError, match='--sweep_executor=local and --sweep_point=1'):
    cluster.options_from_flags('local', 1, False)
  with pytest.raises(sweeps.SweepError, match='--report_only and --print_only'):
    cluster.options_from_flags('sequential', None, True, True)
  with pytest.raises(sweeps.SweepError, match='write KEY=VALUE'):
    cluster.options_from_flags('slurm', None, False, slurm=['account'])
  assert cluster.options_from_flags('slurm', None, False,
                                    slurm=['qos=high']).resource_flags['slurm'] == {
                                        'qos': 'high'}
