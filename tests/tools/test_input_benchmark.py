"""The input benchmark (tools/input_benchmark.py) and its launch.py command: the JSON's
keys, the checks of --benchmark_workers, and datasets it cannot measure."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import base as base_config
from image_classification.data import base
from image_classification.tools import input_benchmark
from image_classification.data.readers import local_files
from tests.data import image_folders

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return image_folders.write_jpeg_folder(tmp_path_factory.mktemp('images'))


def _config(folder, **data):
  config = base_config.get_config()
  config.data.name = 'image_folder'
  config.data.path = folder
  config.data.image_size = 16
  config.data.update(data)
  return config


def test_parse_workers():
  assert input_benchmark.parse_workers(['1', ' 2', '0']) == [1, 2, 0]
  for bad, why in [([], 'a comma-separated list'), (['1', ''], 'a comma-separated'),
                   (['1', 'x'], "'x' is not an integer"), (['-1'], '-1 is negative'),
                   (['2', '2'], '2 is given twice')]:
    with pytest.raises(base.DataError, match=r'--benchmark_workers=') as error:
      input_benchmark.parse_workers(bad)
    assert why in str(error.value)


def test_the_benchmark_writes_rates_per_worker_count(folder, tmp_path):
  result = input_benchmark.run_input_benchmark(
      _config(folder), str(tmp_path), [0, 1], num_images=12, batch_size=5,
      repetitions=1, verbose=False)
  with open(tmp_path / input_benchmark.RESULT_FILE) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(result))
  assert [row['workers'] for row in written['rows']] == [0, 1]
  for row in written['rows']:
    assert row['images_per_sec'] > 0 and row['startup_sec'] >= 0
    assert row['cpu_sec_per_image'] > 0  # this process and its workers, from /proc
    assert row['cpu_sec_per_image'] == pytest.approx(
        row['parent_cpu_sec_per_image'] + row['workers_cpu_sec_per_image'])
  assert written['pil_loop_images_per_sec'] > 0
  assert written['pil_loop_cpu_sec_per_image'] > 0
  assert written['num_images'] == 12 and written['image_size'] == 16
  assert len(written['load_average_before']) == 3


def test_the_plain_pil_loop_does_the_pipelines_work(folder):
  source = input_benchmark.training_source(_config(folder).data)
  assert source.crop.random_resized_crop and source.crop.random_flip
  requests = [(1, np.array([3, 30, 3])), (2, np.array([11]))]
  expected = np.concatenate([source.get(indices, step=step)[0]
                             for step, indices in requests])
  np.testing.assert_array_equal(input_benchmark.pil_loop(source, requests), expected)
  # The flip is part of the work: each view is training's crop, mirrored or not.
  unflipped = local_files.load_image_folder_on_disk(folder, 16).train
  indices = np.arange(12)
  flipped, plain = source.get(indices, step=1)[0], unflipped.get(indices, step=1)[0]
  mirrored = [not np.array_equal(a, b) for a, b in zip(flipped, plain)]
  for a, b, m in zip(flipped, plain, mirrored):
    np.testing.assert_array_equal(a, b[:, ::-1] if m else b)
  assert 0 < sum(mirrored) < len(indices)


def test_what_the_benchmark_cannot_measure(folder, tmp_path):
  with pytest.raises(base.DataError, match="config.data.name='digits'"):
    input_benchmark.training_source(base_config.get_config().data)
  with pytest.raises(base.DataError, match='config.data.image_size=0'):
    input_benchmark.training_source(_config(folder, image_size=0).data)
  with pytest.raises(base.DataError, match='workers'):
    input_benchmark.run_input_benchmark(_config(folder), str(tmp_path), [-3])


def _launch(args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_the_launch_command(folder, tmp_path):
  """The issue's command on a small folder (the ImageNet config's 224 x 224 crops)."""
  workdir = tmp_path / 'bench'
  command = ['--config=configs/imagenet_nf_resnet_50_eps8.py',
             '--config.data.name=image_folder', f'--config.data.path={folder}',
             '--benchmark_input', f'--workdir={workdir}']
  bad = _launch(command + ['--benchmark_workers=1,two'])
  assert bad.returncode == 2, bad.stderr[-2000:]
  lines = [line for line in bad.stderr.splitlines() if line.startswith('error:')]
  assert lines == ["error: --benchmark_workers='1,two': 'two' is not an integer; give "
                   'a comma-separated list of worker counts >= 0 (0: the loading '
                   'thread alone), e.g. 1,2']
  assert not workdir.exists()
  good = _launch(command + ['--benchmark_workers=1,2'])
  assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
  with open(workdir / input_benchmark.RESULT_FILE) as f:
    result = json.load(f)
  assert [row['workers'] for row in result['rows']] == [1, 2]
  assert all(row['images_per_sec'] > 0 for row in result['rows'])
  assert result['pil_loop_images_per_sec'] > 0 and result['image_size'] == 224
