"""Training end to end on an image folder read from disk: the worker processes of the
input pipeline (config.data.num_workers=2, on grain) train exactly what the loading
thread alone trains (num_workers=0) for the same seed, and the exported model card
tells --predict to centre-crop as the evaluation did.

Seeded noise (privacy.insecure_seeded_noise, this test only) makes the two runs draw
the same batches and noise, so any difference in what the pipeline returns for a
step's indices (another crop, another example, another order) would change the loss
rows and the final parameters.
"""
import json
import os

import flax.serialization
import numpy as np

from configs import quickstart
from image_classification.workdir import run_files
from image_classification.training import loop
from tests.data import image_folders


def _config(folder: str, num_workers: int):
  config = quickstart.get_config()
  config.data.name = 'image_folder'
  config.data.path = folder
  config.data.image_size = 12
  config.data.random_resized_crop = True  # stays on disk, cropped when read
  config.data.num_workers = num_workers
  config.model.kwargs.channels = (4,)
  config.training.batch_size = 16
  config.training.num_steps = 4
  config.training.log_every_steps = 1
  config.training.eval_every_steps = 0
  config.training.ema.decay = 0.0
  config.privacy.noise_multiplier = 2.0
  config.privacy.target_epsilon = 1000.0
  config.privacy.insecure_seeded_noise = True
  config.wandb.mode = 'disabled'
  return config


def _params(workdir):
  with open(os.path.join(workdir, 'export', 'params.msgpack'), 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _flat(value, f'{prefix}/{key}')
  else:
    yield prefix, np.asarray(tree)


def _rows(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for row in rows:
    row.pop('images_per_sec', None)  # wall time
  return rows


def test_workers_train_what_the_loading_thread_trains(tmp_path):
  folder = image_folders.write_jpeg_folder(tmp_path / 'images')
  summaries = {}
  for workers in (0, 2):
    workdir = str(tmp_path / f'workers{workers}')
    summaries[workers] = loop.train(_config(folder, workers), workdir)
  one, two = (str(tmp_path / f'workers{w}') for w in (0, 2))
  rows = _rows(one)
  assert [r['step'] for r in rows] == [1, 2, 3, 4]
  assert _rows(two) == rows  # losses, clip fractions, realised batch sizes, accuracy
  flat_one, flat_two = dict(_flat(_params(one))), dict(_flat(_params(two)))
  assert flat_one.keys() == flat_two.keys()
  for key, value in flat_one.items():
    np.testing.assert_array_equal(flat_two[key], value, err_msg=key)
  assert summaries[0]['test_accuracy'] == summaries[2]['test_accuracy']
  assert summaries[2]['image_shape'] == [12, 12, 3]
  # --predict reads new images as the run evaluated: a centre crop, not a squeeze.
  with open(os.path.join(two, run_files.EXPORT, run_files.MODEL_CARD)) as f:
    assert json.load(f)['center_crop'] is True
