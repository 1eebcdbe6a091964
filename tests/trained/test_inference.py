"""Using a trained model, on a trained quickstart workdir (launch.py, 20 steps, with a
validation split): --evaluate, --predict, loading the parameters in Python (with the
library and with Flax alone), the export, and the validation split's accounting."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from image_classification.data import class_names
from image_classification.data import datasets
from image_classification.data.readers import digits
from image_classification.data import record_split
from image_classification.data import validation
from image_classification.workdir import run_files
from image_classification.trained import inference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = ['--config.training.num_steps=20', '--config.training.log_every_steps=10',
         '--config.training.eval_every_steps=10', '--config.training.batch_size=128',
         '--config.data.validation_fraction=0.2', '--config.wandb.mode=disabled']


def _launch(args, timeout=400):
  env = dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled')
  return subprocess.run([sys.executable, 'launch.py'] + args, cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  proc = _launch(['--config=configs/quickstart.py', f'--workdir={workdir}'] + TRAIN)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return workdir


def _metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def test_validation_split_is_held_out_of_training_and_reported(workdir):
  train = digits.load().train
  _, held = validation.split_indices(record_split.source_ids(train), 0.2)
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert privacy['dataset_size'] == train.num_examples - len(held)  # N excludes it
  assert privacy['validation_size'] == len(held)
  summary = run_files.read_json(workdir, run_files.SUMMARY)
  assert 0 <= summary['validation_accuracy'] <= 1
  evaluated = [r for r in _metrics(workdir) if 'test_accuracy' in r]
  assert [r['step'] for r in evaluated] == [10, 20]
  assert all(0 <= r['validation_accuracy'] <= 1 for r in evaluated)
  assert evaluated[-1]['validation_accuracy'] == summary['validation_accuracy']


def test_validation_split_is_fixed_disjoint_and_about_the_fraction():
  train = digits.load().train
  ids = record_split.source_ids(train)
  kept, held = validation.split_indices(ids, 0.2)
  again_kept, again_held = validation.split_indices(ids, 0.2)
  np.testing.assert_array_equal(held, again_held)
  np.testing.assert_array_equal(kept, again_kept)
  assert not set(kept) & set(held)
  assert len(kept) + len(held) == len(ids)
  # Per record, so class balance is approximate: each class's held-out count is
  # binomial; every class keeps training examples.
  assert abs(len(held) - 0.2 * len(ids)) < 4 * np.sqrt(len(ids) * 0.16)
  assert set(train.labels[kept]) == set(range(10))


def test_evaluate_writes_top1_equal_to_the_runs_test_accuracy(workdir):
  proc = _launch([f'--evaluate={workdir}'])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert 'test top-1' in proc.stdout and 'validation top-1' in proc.stdout
  result = run_files.read_json(workdir, run_files.EVALUATION)
  summary = run_files.read_json(workdir, run_files.SUMMARY)
  assert result['top1'] == summary['test_accuracy']
  assert result['validation']['top1'] == summary['validation_accuracy']
  assert result['top1'] <= result['top5'] <= 1.0
  n_test = digits.load().test.num_examples
  assert result['num_examples'] == n_test and result['step'] == 20 and result['ema']
  assert sorted(result['per_class_accuracy']) == [str(i) for i in range(10)]
  confusion = np.array(result['confusion_matrix'])
  assert confusion.shape == (10, 10) and confusion.sum() == n_test
  assert np.trace(confusion) / n_test == pytest.approx(result['top1'])
  for i, name in enumerate(result['class_names']):
    assert result['per_class_accuracy'][name] == pytest.approx(
        confusion[i, i] / confusion[i].sum())
  with open(os.path.join(workdir, run_files.CONFUSION_PNG), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_evaluate_with_an_override_and_a_bad_workdir(workdir, tmp_path):
  # Overrides apply to the workdir's own config: fewer test images.
  proc = _launch([f'--evaluate={workdir}', '--config.data.max_test_examples=100'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert run_files.read_json(workdir, run_files.EVALUATION)['num_examples'] == 100
  proc = _launch([f'--evaluate={tmp_path}'])
  assert proc.returncode != 0 and 'config.json' in proc.stderr


def _digit_files(folder, n=12):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  test = digits.load().test
  images, labels = test.get(np.arange(n))
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0]).save(os.path.join(folder, f'{i:02d}.png'))
  return images, labels


def test_predict_writes_predictions_csv(workdir, tmp_path):
  folder = str(tmp_path / 'images')
  images, labels = _digit_files(folder)
  proc = _launch([f'--predict={workdir}', f'--images={folder}'])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, run_files.PREDICTIONS)) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['file', 'class', 'probability', 'warning', 'error']
  assert not any(r['warning'] or r['error'] for r in rows)  # the training shape
  assert [os.path.basename(r['file']) for r in rows] == [f'{i:02d}.png'
                                                         for i in range(12)]
  for row in rows:
    assert row['file'] in proc.stdout
  # The same classes and probabilities as the model on the original arrays.
  model = inference.load(workdir)
  probs = model.probabilities(images)
  assert [r['class'] for r in rows] == [str(i) for i in probs.argmax(-1)]
  np.testing.assert_allclose([float(r['probability']) for r in rows],
                             probs.max(-1), atol=1e-5)
  assert np.mean(probs.argmax(-1) == labels) > 0.5  # it learned something


def test_predict_resizes_other_sizes_and_refuses_missing_images(workdir, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  big = str(tmp_path / 'big.png')
  Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(big)
  rows = inference.predict(workdir, [big], out_path=str(tmp_path / 'p.csv'))
  assert len(rows) == 1 and rows[0]['class'] in [str(i) for i in range(10)]
  proc = _launch([f'--predict={workdir}', f'--images={tmp_path / "missing.png"}'])
  assert proc.returncode == 2 and 'neither a file nor a folder' in proc.stderr


def test_predict_reads_16_bit_pngs_scaled_not_clipped(tmp_path):
  """--predict's reader (inference.read_image) on a 16-bit grey PNG (PIL I;16) of
  257 * v: the model gets v, not ~255; in colour, grey (v, v, v)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  v = np.random.default_rng(3).integers(0, 256, (8, 8)).astype(np.uint8)
  path = str(tmp_path / 'sixteen.png')
  Image.fromarray((v.astype(np.uint16) * 257)).save(path)
  gray = inference.read_image(path, {'image_shape': (8, 8, 1)})
  np.testing.assert_array_equal(gray, v[..., None])
  colour = inference.read_image(path, {'image_shape': (8, 8, 3)})
  np.testing.assert_array_equal(colour, np.repeat(v[..., None], 3, -1))


def test_parameters_load_in_a_few_lines_of_flax(workdir):
  # docs/using_a_model.md's snippet: Flax and the model registry, no platform code besides.
  import flax.serialization  # pylint: disable=g-import-not-at-top
  from image_classification.models import registry  # pylint: disable=g-import-not-at-top
  card = json.load(open(os.path.join(workdir, 'export', 'model.json')))
  params = flax.serialization.msgpack_restore(
      open(os.path.join(workdir, 'export', 'params.msgpack'), 'rb').read())
  model = registry.build(card['model'], card['num_classes'], **card['model_kwargs'])
  images, _ = digits.load().test.get(np.arange(8))
  x = (images / 255.0 - np.array(card['mean'])) / np.array(card['std'])
  logits = model.apply({'params': params}, x.astype(np.float32), is_training=False)
  np.testing.assert_allclose(logits, inference.load(workdir).logits(images),
                             rtol=1e-5, atol=1e-5)
  info = run_files.read_json(os.path.join(workdir, 'export'), 'params.json')
  summary = run_files.read_json(workdir, run_files.SUMMARY)
  assert info['step'] == 20 and info['epsilon'] == summary['epsilon']


def test_a_workdir_without_export_loads_its_latest_checkpoint(workdir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'export', 'params.msgpack'))
  from_checkpoint = inference.load(copy)
  assert from_checkpoint.step == 20 and 'checkpoints' in from_checkpoint.source
  images, _ = digits.load().test.get(np.arange(8))
  np.testing.assert_allclose(from_checkpoint.logits(images),
                             inference.load(workdir).logits(images), rtol=1e-6)


def test_a_truncated_export_is_named_with_the_way_out(workdir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  params = os.path.join(copy, 'export', 'params.msgpack')
  with open(params, 'r+b') as f:
    f.truncate(100)
  with pytest.raises(inference.InferenceError, match=r'params.msgpack is not a readable '
                     r'flax msgpack file .*Delete it to fall back to the latest checkpoint'):
    inference.load(copy)
  os.remove(params)  # the way out the message gives
  assert inference.load(copy).step == 20


def test_class_names(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  def data(name, path=''):
    return ml_collections.ConfigDict({'name': name, 'path': path})
  assert class_names.for_dataset(data('cifar10'), num_classes=10)[:2] == [
      'airplane', 'automobile']
  assert len(datasets.DATASETS['cifar100'].class_names) == 100
  assert class_names.for_dataset(data('cifar100'), num_classes=100)[-1] == 'worm'
  assert class_names.for_dataset(data('npz'), num_classes=3) == ['0', '1', '2']
  for name in ('zebra', 'cat'):
    os.makedirs(tmp_path / 'train' / name)
  assert class_names.for_dataset(data('image_folder', str(tmp_path)),
                                 num_classes=2) == ['cat', 'zebra']


def test_image_folder_run_predicts_folder_names(tmp_path, capsys):
  """And, the folder having no test/, its evaluation split is carved out of the
  private data: every test accuracy printed or tabled says it has no noise."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for name, half in (('left', 0), ('right', 1)):
    folder = tmp_path / 'data' / 'train' / name
    os.makedirs(folder)
    for i in range(20):
      image = rng.integers(0, 40, (8, 8), dtype=np.uint8)
      image[:, 4 * half:4 * half + 4] += 200
      Image.fromarray(image).save(folder / f'{i}.png')
  config = quickstart.get_config()
  config.data.name, config.data.path = 'image_folder', str(tmp_path / 'data')
  config.training.update(num_steps=3, batch_size=8, log_every_steps=3,
                         eval_every_steps=3)
  config.privacy.update(noise_multiplier=1.0, target_epsilon=100.0, delta=1e-3)
  config.model.kwargs.channels = (4,)
  config.wandb.mode = 'disabled'
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir)
  out = capsys.readouterr().out
  label = '(private data, no noise)'
  assert [line for line in out.splitlines() if '| test acc ' in line
          and line.split('| test acc ')[1].split(' ', 1)[1].startswith(label)]
  assert f'done: test accuracy ' in out and out.split('done: test accuracy ')[1].split(
      ' at (')[0].endswith(label)
  assert run_files.read_json(workdir, run_files.SUMMARY)['test_on_private_data'] is True
  from image_classification.reporting import report  # pylint: disable=g-import-not-at-top
  report.make_report([workdir], str(tmp_path / 'report'))
  with open(tmp_path / 'report' / 'report.md') as f:
    assert label in f.read()
  card = inference.read_card(workdir)
  assert card['class_names'] == ['left', 'right'] and card['image_shape'] == [8, 8, 1]
  rows = inference.predict(workdir, [str(tmp_path / 'data' / 'train' / 'right')])
  assert len(rows) == 20 and {r['class'] for r in rows} <= {'left', 'right'}
  result = inference.evaluate_workdir(workdir, config)
  assert sorted(result['per_class_accuracy']) == ['left', 'right']
  assert 'top5' not in result  # two classes
  assert result['top1'] == run_files.read_json(workdir, run_files.SUMMARY)[
      'test_accuracy']


def test_a_workdir_from_before_the_export_is_evaluated_from_its_config(workdir,
                                                                       tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  old = str(tmp_path / 'old')
  shutil.copytree(workdir, old)
  shutil.rmtree(os.path.join(old, 'export'))  # as a run of the previous version
  proc = _launch([f'--evaluate={old}'])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert 'rebuilt it from its config.json' in proc.stdout
  assert 'no export/params.msgpack' in proc.stdout  # parameters from the checkpoint
  # A complete run whose export/ was deleted is not called unfinished (issue 28).
  assert 'the run is complete, but that file is missing' in proc.stdout
  assert 'not finished' not in proc.stdout
  result = run_files.read_json(old, run_files.EVALUATION)
  assert result['top1'] == run_files.read_json(old, run_files.SUMMARY)['test_accuracy']
  assert inference.read_card(old) == inference.read_card(workdir)


def test_predict_and_evaluate_flags_that_would_lose_data_are_refused_first(workdir,
                                                                           tmp_path):
  """--output never replaces a run's own file, an input image or a folder; --workdir
  and a missing --images are refused; an override the run's config lacks is one
  `error:` line: each before the model is loaded, and nothing is written."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = str(tmp_path / 'one.png')
  Image.fromarray(np.full((8, 8), 100, np.uint8)).save(image)
  with open(image, 'rb') as f:
    image_bytes = f.read()
  with open(os.path.join(workdir, run_files.CONFIG), 'rb') as f:
    config_bytes = f.read()
  folder = str(tmp_path / 'out')
  os.makedirs(folder)
  cases = {
      (f'--output={os.path.join(workdir, run_files.CONFIG)}',): 'is not a .csv file',
      (f'--output={image}',): 'is one of the --images',
      (f'--output={folder}',): 'is a folder',
      (f'--workdir={tmp_path / "other"}',): '--workdir=',
  }
  for extra, message in cases.items():
    proc = _launch([f'--predict={workdir}', f'--images={image}', *extra])
    assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr[-2000:])
    assert 'Traceback' not in proc.stderr
  proc = _launch([f'--predict={workdir}'])
  assert proc.returncode == 2 and '--predict needs --images' in proc.stderr
  proc = _launch([f'--evaluate={workdir}', '--config.data.pathh=/x'])
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'pathh' in proc.stderr and 'path' in proc.stderr
  with open(image, 'rb') as f:
    assert f.read() == image_bytes
  with open(os.path.join(workdir, run_files.CONFIG), 'rb') as f:
    assert f.read() == config_bytes
  assert os.listdir(folder) == [] and not os.path.exists(tmp_path / 'other')


def test_an_explicit_config_of_another_model_or_dataset_is_refused(workdir):
  """--evaluate=W --config=OTHER once evaluated W's parameters under OTHER's dataset
  (a tfds download started); the model and the dataset must be the run's."""
  proc = _launch([f'--evaluate={workdir}', '--config=configs/mnist_eps3.py'])
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert "config.data.name: 'digits' in the run, 'mnist' in --config" in proc.stderr
  assert 'Downloading' not in proc.stdout + proc.stderr
  proc = _launch([f'--evaluate={workdir}', '--config=configs/quickstart.py',
                  '--config.data.max_test_examples=50'])  # the same model and data
  assert proc.returncode == 0, proc.stderr[-2000:]
