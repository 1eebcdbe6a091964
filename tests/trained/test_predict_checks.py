"""--predict on files that are not like the training images, and the input checks of
inference.load(...).probabilities: an unreadable file is a row with its error and the
others are still classified; a file whose aspect ratio or channel count differs from
the training images is warned about (console and CSV); earlier predictions are never
overwritten without --output. The run is a quickstart model with its initial
parameters, exported as a finished run would be (no training needed here)."""
import csv
import os
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from image_classification.workdir import run_files
from image_classification.models import registry
from image_classification.trained import inference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A digits run's export: 8x8 grey images, 10 classes."""
  folder = str(tmp_path_factory.mktemp('predict') / 'run')
  config = quickstart.get_config()
  run_files.write_json(folder, run_files.CONFIG, config.to_dict())
  model = registry.build('cnn', 10, **config.model.kwargs.to_dict())
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)),
                      is_training=False)['params']
  export = os.path.join(folder, run_files.EXPORT)
  card = {'model': 'cnn', 'model_kwargs': config.model.kwargs.to_dict(),
          'num_classes': 10, 'class_names': [str(i) for i in range(10)],
          'image_shape': [8, 8, 1], 'mean': [0.3], 'std': [0.3], 'dataset': 'digits',
          'center_crop': False, 'resized_from_any_shape': False, 'ema': False}
  run_files.write_json(export, run_files.MODEL_CARD, card)
  with open(os.path.join(export, run_files.PARAMS), 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(jax.device_get(params)))
  run_files.write_json(export, run_files.PARAMS_INFO,
                       {'step': 1, 'epsilon': 1.0, 'delta': 1e-5})
  return folder


def _images(folder):
  """The issue's files: a 300x10 image, an RGB one, a good one, a broken one."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  Image.fromarray(np.full((10, 300), 200, np.uint8)).save(f'{folder}/a_wide.png')
  Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(f'{folder}/b_rgb.png')
  Image.fromarray(np.full((8, 8), 90, np.uint8)).save(f'{folder}/c_good.png')
  with open(f'{folder}/d_broken.png', 'wb') as f:
    f.write(b'not a png')
  return folder


def _predict(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, 'launch.py'] + list(args), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _rows(path):
  with open(path) as f:
    return {os.path.basename(r['file']): r for r in csv.DictReader(f)}


def test_predict_reports_bad_files_goes_on_and_never_overwrites(workdir, tmp_path):
  folder = _images(str(tmp_path / 'images'))
  proc = _predict(f'--predict={workdir}', f'--images={folder}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  first = os.path.join(workdir, run_files.PREDICTIONS)
  rows = _rows(first)
  assert list(next(iter(rows.values()))) == list(inference.PREDICTION_COLUMNS)
  assert 'cannot identify image file' in rows['d_broken.png']['error']
  assert rows['d_broken.png']['class'] == rows['d_broken.png']['probability'] == ''
  assert 'aspect ratio 300x10' in rows['a_wide.png']['warning']
  assert "3 channel(s) (RGB) converted to the training images' grey" in (
      rows['b_rgb.png']['warning'])
  for name in ('a_wide.png', 'b_rgb.png', 'c_good.png'):  # classified all the same
    assert rows[name]['class'] in [str(i) for i in range(10)] and not rows[name]['error']
  assert rows['c_good.png']['warning'] == ''
  # The console: a warning per file on stderr, the classified ones on stdout.
  assert 'a_wide.png: aspect ratio 300x10' in proc.stderr
  assert 'd_broken.png: not classified' in proc.stderr
  assert '3 classified, 1 unreadable, 2 with warnings' in proc.stdout
  # The next --predict without --output writes beside it (what launch.py calls).
  assert inference.new_predictions_path(workdir) == os.path.join(workdir,
                                                                 'predictions-2.csv')
  # --output goes where asked (replacing that file), and predictions.csv stays.
  out = str(tmp_path / 'mine.csv')
  with open(out, 'w') as f:
    f.write('old')
  before = open(first).read()
  assert _predict(f'--predict={workdir}', f'--images={folder}/c_good.png',
                  f'--output={out}').returncode == 0
  assert list(_rows(out)) == ['c_good.png'] and open(first).read() == before


def test_predict_with_no_readable_file_is_an_error(workdir, tmp_path):
  folder = _images(str(tmp_path / 'images'))
  out = str(tmp_path / 'p.csv')
  proc = _predict(f'--predict={workdir}', f'--images={folder}/d_broken.png',
                  f'--output={out}')
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert errors == [f'error: the one file could not be read as an image (the reasons '
                    f'are in {out} and above)']
  assert _rows(out)['d_broken.png']['error']


@pytest.mark.parametrize('images, message', [
    (np.zeros((2, 8, 8, 1), np.float32), r'got dtype float32: floats in \[0, 1\]'),
    (np.zeros((8, 8, 1), np.uint8), r'got shape \[8, 8, 1\]: one image: add a batch'),
    (np.zeros((2, 8, 8), np.uint8), r'got shape \[2, 8, 8\]: add the channel axis'),
    (np.zeros((2, 28, 28, 1), np.uint8), 'trained on 8x8x1 images: resize them'),
    (np.zeros((2, 8, 8, 1), np.int64), 'got dtype int64'),
])
def test_probabilities_checks_dtype_and_shape(workdir, images, message):
  model = inference.load(workdir)
  with pytest.raises(inference.InferenceError,
                     match=r'expected uint8 images of shape \[N, 8, 8, 1\] with values '
                     r'0..255 .*' + message):
    model.probabilities(images)
  assert model.probabilities(np.zeros((2, 8, 8, 1), np.uint8)).shape == (2, 10)


def test_no_aspect_warning_where_training_images_had_no_one_shape(tmp_path):
  """Resized from any shape (an image folder with data.image_size) or centre-cropped
  (ImageNet): the training images had no single aspect ratio to compare with."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'wide.png')
  Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(path)
  card = {'image_shape': [8, 8, 3]}
  assert 'aspect ratio' in inference.read_image_and_warnings(path, card)[1][0]
  for flag in ('resized_from_any_shape', 'center_crop'):
    array, warnings = inference.read_image_and_warnings(path, {**card, flag: True})
    assert warnings == [] and array.shape == (8, 8, 3)
  tolerable = str(tmp_path / 'almost.png')  # 8.5 x 8: within ASPECT_TOLERANCE
  Image.fromarray(np.zeros((16, 17, 3), np.uint8)).save(tolerable)
  assert inference.read_image_and_warnings(tolerable, card)[1] == []
