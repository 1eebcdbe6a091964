"""The benchmark writes a well-formed benchmark.json (no timing assertions)."""
import json
import os

import ml_collections
import pytest

from configs import base
from image_classification import config as config_lib
from image_classification.training import benchmark
from tests import test_configs


def _tiny_config():
  config = base.get_config()
  config.model.name = 'cnn'
  config.model.kwargs.channels = (4,)
  config.privacy.noise_multiplier = None  # left to calibration: a placeholder is used
  config.training.num_steps = 10
  config.benchmark = ml_collections.ConfigDict({'image_shape': (6, 6, 1),
                                                'num_classes': 3})
  return config


def test_benchmark_json_is_well_formed(tmp_path, capsys):
  out = benchmark.run_benchmark(_tiny_config(), str(tmp_path), batch_sizes=[4, 8],
                                augmults=[1, 2], implementations=['vmap', 'fast'],
                                reps=2, warmup=1)
  with open(os.path.join(tmp_path, benchmark.BENCHMARK_FILE)) as f:
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
  out = benchmark.run_benchmark(config, str(tmp_path), batch_sizes=[2], augmults=[1],
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
  assert row['images_per_step'] == 4 * augmult
  assert row['dp_images_per_sec'] > 0 and row['nonprivate_images_per_sec'] > 0
  assert os.path.exists(os.path.join(tmp_path, benchmark.BENCHMARK_FILE))


def test_batch_smaller_than_the_micro_batch_is_one_pass_and_bad_sizes_are_named(tmp_path):
  config = _tiny_config()
  config.training.micro_batch_size = 4
  out = benchmark.run_benchmark(config, str(tmp_path), batch_sizes=[2, 8], augmults=[1],
                                reps=1, warmup=0, include_nonprivate=False)
  assert [r['micro_batch_size'] for r in out['rows']] == [0, 4]
  with pytest.raises(config_lib.ConfigError, match='micro_batch_size=4'):
    benchmark.run_benchmark(config, str(tmp_path), batch_sizes=[6], augmults=[1])
