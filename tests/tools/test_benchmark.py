"""The benchmark writes a well-formed benchmark.json (no timing assertions)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import base
from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.models import features
from image_classification.privacy import bandmf
from image_classification.privacy import privatizers
from image_classification.workdir import run_files
from image_classification.tools import benchmark
from tests import test_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config():
  config = base.get_config()
  config.model.name = 'cnn'
  config.model.kwargs.channels = (4,)
  config.privacy.noise_multiplier = None  # left to calibration: a placeholder is used
  config.training.num_steps = 10
  return config


def _run(config, workdir, **kwargs):
  """run_benchmark on tiny random images (6x6x1, 3 classes) instead of digits'."""
  return benchmark.run_benchmark(config, str(workdir), image_shape=(6, 6, 1),
                                 num_classes=3, **kwargs)


def test_benchmark_json_is_well_formed(tmp_path, capsys):
  out = _run(_tiny_config(), tmp_path, batch_sizes=[4, 8],
                                augmults=[1, 2], implementations=['vmap', 'fast'],
                                reps=2, warmup=1)
  with open(os.path.join(tmp_path, run_files.BENCHMARK)) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(out))
  for key in ('device', 'model', 'jax_version', 'num_params', 'rows'):
    assert key in written
  assert written['model'] == 'cnn'
  assert written['noise_multiplier'] == 1.0
  rows = written['rows']
  assert len(rows) == 2 * 2 * 2
  seen = {(r['batch_size'], r['augmult'], r['per_example_grads']) for r in rows}
  assert seen == {(b, k, i) for b in (4, 8) for k in (1, 2) for i in ('vmap', 'fast')}
  for r in rows:
    assert r['images_per_step'] == r['batch_size'] * r['augmult']
    for key in ('dp_images_per_sec', 'nonprivate_images_per_sec'):
      assert r[key] > 0
    assert r['dp_over_nonprivate_time'] == pytest.approx(
        r['dp_step_sec'] / r['nonprivate_step_sec'])
    assert r['peak_memory_bytes'] > 0 and r['peak_memory_source']
    assert len(r['dp_step_sec_reps']) == 2
  table = capsys.readouterr().out
  assert '| batch | augmult |' in table and 'DP/non-private' in table


def test_default_implementation_comes_from_config(tmp_path):
  config = _tiny_config()
  assert config.training.per_example_grads == 'fast'  # the platform's default
  config.training.per_example_grads = 'ghost'
  out = _run(config, tmp_path, batch_sizes=[2], augmults=[1],
                                reps=1, warmup=0, include_nonprivate=False)
  assert [r['per_example_grads'] for r in out['rows']] == ['ghost']
  assert 'nonprivate_images_per_sec' not in out['rows'][0]


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in test_configs.SLOW_TRAINING else n
    for n in test_configs.CONFIG_NAMES])
def test_benchmark_runs_for_every_config(name, tmp_path):
  """`launch.py --config=configs/<name>.py --benchmark` on the shrunk experiment: the
  config's own model family, per-example gradient implementation, augmentation and
  dataset shape (from the catalog, nothing is read), DP and non-private rows."""
  config = test_configs.shrink(test_configs.get_config(name))
  augmult = config.data.augmult
  out = benchmark.run_benchmark(config, str(tmp_path), batch_sizes=[4],
                                augmults=[augmult], reps=1, warmup=0)
  (row,) = out['rows']
  assert out['model'] == config.model.name
  assert row['per_example_grads'] == config.training.per_example_grads
  views = features.num_views(config)  # the fixed views of features, stored stacked
  assert row['images_per_step'] == 4 * augmult * views
  assert out['feature_views'] == views
  assert row['dp_images_per_sec'] > 0 and row['nonprivate_images_per_sec'] > 0
  assert os.path.exists(os.path.join(tmp_path, run_files.BENCHMARK))


def test_batch_smaller_than_the_micro_batch_is_one_pass_and_bad_sizes_are_named(tmp_path):
  config = _tiny_config()
  config.training.micro_batch_size = 4
  out = _run(config, tmp_path, batch_sizes=[2, 8], augmults=[1],
                                reps=1, warmup=0, include_nonprivate=False)
  assert [r['micro_batch_size'] for r in out['rows']] == [0, 4]
  with pytest.raises(config_lib.ConfigError, match='micro_batch_size=4'):
    _run(config, tmp_path, batch_sizes=[6], augmults=[1])


@pytest.mark.parametrize('sizes,augmults,impls,expected', [
    (['64', 'abc'], ['1'], None, "--benchmark_batch_sizes=64,abc: 'abc' is not an integer"),
    (['0'], ['1'], None, '--benchmark_batch_sizes=0: 0 is not positive'),
    (['-8'], ['1'], None, '--benchmark_batch_sizes=-8: -8 is not positive'),
    (['64'], ['0'], None, '--benchmark_augmults=0: 0 is not positive'),
    ([], ['1'], None, '--benchmark_batch_sizes=: give a comma-separated list'),
    (['64'], [], None, '--benchmark_augmults=: give a comma-separated list'),
    (['64'], ['1'], ['fast', 'turbo'],
     "--benchmark_implementations=fast,turbo: unknown ['turbo']; choose from"),
    (['64'], ['1'], [], '--benchmark_implementations=: give at least one of'),
])
def test_bad_benchmark_flags_are_named_before_anything_runs(
    sizes, augmults, impls, expected, tmp_path, monkeypatch):
  with pytest.raises(config_lib.ConfigError) as e:
    benchmark.parse_flags(sizes, augmults, impls)
  assert str(e.value).startswith(expected)
  # The library entry point checks the same before building anything.
  monkeypatch.setattr(benchmark.registry, 'build', lambda *a, **k: pytest.fail('built'))
  with pytest.raises(config_lib.ConfigError):
    _run(_tiny_config(), tmp_path,
                            batch_sizes=[int(s) if s.lstrip('-').isdigit() else s
                                         for s in sizes],
                            augmults=[int(k) for k in augmults], implementations=impls)
  assert not os.listdir(tmp_path)


def test_good_flags_parse():
  assert benchmark.parse_flags(['64', ' 256'], ['1', '4'], None) == ([64, 256], [1, 4],
                                                                     None)
  assert benchmark.parse_flags(['8'], ['1'], ['vmap', 'ghost'])[2] == ('vmap', 'ghost')


def test_a_failure_after_some_rows_keeps_the_rows_measured(tmp_path, monkeypatch):
  calls = []
  real = benchmark._peak_memory  # pylint: disable=protected-access

  def peak_then_fail(devices):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError('out of memory (simulated)')
    return real(devices)

  monkeypatch.setattr(benchmark, '_peak_memory', peak_then_fail)
  with pytest.raises(RuntimeError, match='simulated'):
    _run(_tiny_config(), tmp_path, batch_sizes=[2, 4],
                            augmults=[1], reps=1, warmup=0, include_nonprivate=False)
  with open(os.path.join(tmp_path, run_files.BENCHMARK)) as f:
    written = json.load(f)
  assert [r['batch_size'] for r in written['rows']] == [2]
  assert written['error'].startswith('stopped after 1 row(s): RuntimeError: out of '
                                     'memory (simulated)')


def test_bad_model_kwarg_is_named_before_timing(tmp_path):
  config = _tiny_config()
  config.model.kwargs.activation = 'relu6'
  with pytest.raises(config_lib.ConfigError, match=r"config.model.kwargs=.*'relu6'.*"
                     r"do not build model 'cnn'"):
    _run(config, tmp_path, batch_sizes=[2], augmults=[1])
  assert not os.listdir(tmp_path)


def test_compute_dtypes_are_rows_and_validated(tmp_path, capsys):
  out = _run(_tiny_config(), tmp_path, batch_sizes=[2],
                                augmults=[1], implementations=['fast'], reps=1,
                                warmup=0, dtypes=['float32', 'bfloat16'])
  assert [r['compute_dtype'] for r in out['rows']] == ['float32', 'bfloat16']
  assert out['compute_dtypes'] == ['float32', 'bfloat16']
  assert all(r['nonprivate_images_per_sec'] > 0 for r in out['rows'])
  assert '| bfloat16 |' in capsys.readouterr().out
  assert benchmark.parse_dtypes(None) is None
  assert benchmark.parse_dtypes([' bfloat16']) == ('bfloat16',)
  for bad in ([], ['float16'], ['float32', '']):
    with pytest.raises(config_lib.ConfigError, match='--benchmark_dtypes'):
      benchmark.parse_dtypes(bad)
  config = _tiny_config()
  config.training.compute_dtype = 'bfloat16'  # the default row follows the config
  out = _run(config, tmp_path, batch_sizes=[2], augmults=[1],
                                reps=1, warmup=0, include_nonprivate=False)
  assert [r['compute_dtype'] for r in out['rows']] == ['bfloat16']


def test_no_data_is_read_a_missing_path_still_runs(tmp_path):
  """The images are random of the published shape: cifar10 from a folder that does
  not exist is timed all the same; a dataset whose files decide the shape needs it
  given, and is named before anything is built."""
  config = _tiny_config()
  config.data.name, config.data.path = 'cifar10', str(tmp_path / 'no_such_folder')
  out = benchmark.run_benchmark(config, str(tmp_path / 'out'), batch_sizes=[2],
                                augmults=[1], reps=1, warmup=0, include_nonprivate=False)
  assert out['image_shape'] == [32, 32, 3] and out['num_classes'] == 10
  assert not os.path.exists(config.data.path)
  config.data.name = 'image_folder'
  with pytest.raises(config_lib.ConfigError, match='--benchmark_image_shape=H,W,C'):
    benchmark.run_benchmark(config, str(tmp_path / 'out'), batch_sizes=[2],
                            augmults=[1])
  with pytest.raises(config_lib.ConfigError, match='--benchmark_num_classes=N'):
    benchmark.run_benchmark(config, str(tmp_path / 'out'), batch_sizes=[2],
                            augmults=[1], image_shape=(8, 8, 3))
  with pytest.raises(config_lib.ConfigError, match='--benchmark_image_shape=8,8'):
    benchmark.parse_shape(['8', '8'])


def test_the_benchmark_is_a_tool_of_its_own(tmp_path):
  """python -m image_classification.tools.benchmark: launch.py's --benchmark without
  launch.py; a missing flag is one error line."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  tool = [sys.executable, '-m', 'image_classification.tools.benchmark']
  proc = subprocess.run(
      tool + ['--config=configs/quickstart.py', '--config.model.kwargs.channels=(4,)',
              f'--workdir={tmp_path}', '--benchmark_batch_sizes=8'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (row,) = run_files.read_json(str(tmp_path), run_files.BENCHMARK)['rows']
  assert row['batch_size'] == 8 and row['dp_images_per_sec'] > 0
  assert '| batch | augmult |' in proc.stdout
  proc = subprocess.run(tool + ['--config=configs/quickstart.py'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: --config and --workdir are required, e.g. python -m '
      'image_classification.tools.benchmark --config=configs/quickstart.py '
      '--workdir=/tmp/benchmark']
  # launch.py's process flags act before JAX is imported: the tool names the command.
  proc = subprocess.run(tool + ['--config=configs/quickstart.py', f'--workdir={tmp_path}',
                                '--host_devices=2'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: --host_devices is a flag of launch.py, applied before JAX is imported; '
      'run the same command as python launch.py --benchmark --config=... '
      '--workdir=... --host_devices=2 (or set '
      'XLA_FLAGS=--xla_force_host_platform_device_count=N for the device count)']


def test_a_bandmf_config_times_bandmf_noise(tmp_path):
  """privacy.mechanism='bandmf' times BandMF's step (its b - 1 past draws in the state
  and the streaming solve), not DP-SGD's; placeholder coefficients, nothing optimised."""
  config = _tiny_config()
  config.privacy.mechanism, config.privacy.num_bands = 'bandmf', 3
  privatizer = plan_lib.timing_privatizer(config)
  assert isinstance(privatizer, bandmf.BandMFPrivatizer)
  assert privatizer.num_bands == 3
  assert privatizer.steps == plan_lib.TIMING_STEPS
  assert np.linalg.norm(privatizer.coefs) == pytest.approx(1.0)
  params = {'w': np.zeros((4, 2), np.float32)}
  past_draws = jax.tree_util.tree_leaves(privatizer.init(params))
  assert sum(x.size for x in past_draws) >= 2 * 8  # b - 1 copies of the parameters
  out = _run(config, tmp_path, batch_sizes=[4], augmults=[1],
             implementations=['vmap'], reps=1, warmup=1)
  assert out['mechanism'] == 'bandmf (b = 3 bands)'
  assert 'mechanism bandmf (b = 3 bands)' in benchmark.format_table(out)
  config.privacy.num_bands = 1  # b = 1 is DP-SGD
  assert isinstance(plan_lib.timing_privatizer(config), privatizers.GaussianPrivatizer)
  dp_sgd = _run(_tiny_config(), tmp_path / 'dp_sgd', batch_sizes=[4], augmults=[1],
                implementations=['vmap'], reps=1, warmup=1)
  assert dp_sgd['mechanism'] == 'dp-sgd'
