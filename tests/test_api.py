"""The Python API (image_classification/api.py) in-process: a config from a file with
overrides, train -> the summary, evaluate, predict, load; errors are api.Error with
the command line's `error:` text and never exit. The module's run uses
training.select_on_validation, so the best-on-validation export is checked here too."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from image_classification import api
from image_classification.workdir import run_files
from image_classification.data.readers import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seeded noise (testing only) makes the run reproducible: with this learning rate
# the validation accuracy peaks before the last step, so the selection matters.
RUN = {'training.num_steps': 20, 'training.batch_size': 64,
       'training.eval_every_steps': 5, 'training.log_every_steps': 5,
       'training.optimizer.learning_rate': 2.0, 'data.validation_fraction': 0.2,
       'training.select_on_validation': True, 'privacy.insecure_seeded_noise': True,
       'wandb.mode': 'disabled'}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('api') / 'run')
  config = api.config('configs/quickstart.py', overrides=RUN)
  return workdir, api.train(config, workdir)


def _metrics(workdir):
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    return [json.loads(line) for line in f]


def test_train_returns_the_summary_it_writes(run):
  workdir, summary = run
  assert summary == run_files.read_json(workdir, run_files.SUMMARY)
  assert summary['status'] == 'complete' and summary['steps'] == 20
  # The same call again reports the finished run instead of training again.
  assert api.train(api.config('configs/quickstart.py', RUN), workdir) == summary


def test_select_on_validation_exports_the_best_evaluation(run):
  workdir, summary = run
  evaluated = [r for r in _metrics(workdir) if 'validation_accuracy' in r]
  assert [r['step'] for r in evaluated] == [5, 10, 15, 20]
  best = max(evaluated, key=lambda r: (r['validation_accuracy'], -r['step']))
  assert summary['selected_step'] == best['step'] < 20  # not simply the last
  assert summary['validation_accuracy'] == best['validation_accuracy']
  assert summary['test_accuracy'] == best['test_accuracy']
  assert summary['final_step_test_accuracy'] == evaluated[-1]['test_accuracy']
  export = run_files.read_json(os.path.join(workdir, 'export'), 'params.json')
  assert export['step'] == best['step']
  assert export['epsilon'] == summary['epsilon']  # the whole run's, not step S's
  # The exported parameters are the selected ones: evaluating them gives its figures.
  result = api.evaluate(workdir)
  assert result['top1'] == summary['test_accuracy'] and result['step'] == best['step']
  assert result['validation']['top1'] == best['validation_accuracy']
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert 'selected_step' in privacy['computed_without_noise']
  with open(os.path.join(workdir, run_files.PRIVACY_MD)) as f:
    report = f.read()
  assert f'those of step {best["step"]} (of 20)' in report
  assert 'post-processing' in report and 'WITHOUT noise' in report
  assert not os.path.exists(os.path.join(workdir, run_files.SELECTION))


def test_predict_and_load(run, tmp_path):
  workdir, _ = run
  images, labels = digits.load().test.get(np.arange(20))
  model = api.load(workdir)
  probs = model.probabilities(images)
  rows = api.predict(workdir, images, output=str(tmp_path / 'arrays.csv'))
  assert len(open(tmp_path / 'arrays.csv').read().splitlines()) == 1 + len(images)
  assert [r['class'] for r in rows] == [model.class_names[i] for i in probs.argmax(-1)]
  np.testing.assert_allclose([r['probability'] for r in rows], probs.max(-1), rtol=1e-6)
  assert np.mean(probs.argmax(-1) == labels) > 0.5
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(images[0, ..., 0]).save(tmp_path / 'a.png')
  file_rows = api.predict(workdir, str(tmp_path / 'a.png'),
                          output=str(tmp_path / 'out.csv'))
  assert file_rows[0]['class'] == rows[0]['class'] and (tmp_path / 'out.csv').exists()
  with pytest.raises(api.Error, match=r'got dtype float64: floats in \[0, 1\]'):
    api.predict(workdir, images / 255.0)


def test_config_files_arguments_and_overrides(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a notebook elsewhere: configs/ found in the repository
  config = api.config('configs/cifar10_wrn_16_4.py:eps=1',
                      {'training.batch_size': 512})
  assert config.privacy.target_epsilon == 1.0 and config.training.batch_size == 512
  with pytest.raises(api.Error, match=r"--config.training.batch_size='many': "):
    api.config('configs/quickstart.py', {'training.batch_size': 'many'})
  with pytest.raises(api.Error, match='choose eps= one of 1, 2, 4, 8'):
    api.config('configs/cifar10_wrn_16_4.py:eps=3')
  with pytest.raises(api.Error, match=r'configs/quickstrat.py: no such file \(did you '
                     r'mean .*configs/quickstart.py\?\)'):
    api.config('configs/quickstrat.py')
  with pytest.raises(AttributeError, match='batch_size'):  # locked: a typo raises
    config.training.batch_sise = 3
  # A config file may set only configs/base.py's fields, as on the command line.
  (tmp_path / 'mine.py').write_text(
      'from configs import quickstart\n\ndef get_config():\n'
      '  c = quickstart.get_config()\n  c.training.batch_sise = 3\n  return c\n')
  with pytest.raises(api.Error, match=r'sets config.training.batch_sise, which '
                     r'configs/base.py does not define \(did you mean '
                     r'config.training.batch_size\?\)'):
    api.config(str(tmp_path / 'mine.py'))
  # model.kwargs is open: a new kwarg, or the whole group.
  assert api.config('configs/quickstart.py', {'model.kwargs.hidden': 8}).model.kwargs.hidden == 8
  assert api.config('configs/quickstart.py',
                    {'model.kwargs': {'width': 2}}).model.kwargs.to_dict() == {'width': 2}


def test_errors_are_the_command_lines_error_lines_without_exiting(tmp_path):
  """The same bad config through launch.py and api.train: one `error:` line, exit 2,
  and an api.Error with the same text (pytest would fail on a SystemExit)."""
  bad = {'training.select_on_validation': True}  # without a validation split
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/quickstart.py',
       '--config.training.select_on_validation=True', f'--workdir={tmp_path / "cli"}',
       '--dry_run'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False)
  assert proc.returncode == 2
  [line] = proc.stderr.strip().splitlines()
  with pytest.raises(api.Error) as raised:
    api.train(api.config('configs/quickstart.py', bad), str(tmp_path / 'api'),
              dry_run=True)
  assert line == f'error: {raised.value}'
  assert 'data.validation_fraction > 0' in line
  # A misspelt override: the same did-you-mean line.
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/quickstart.py',
       '--config.training.batch_sise=3', f'--workdir={tmp_path / "cli"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2
  with pytest.raises(api.Error) as raised:
    api.config('configs/quickstart.py', {'training.batch_sise': 3})
  assert proc.stderr.strip() == f'error: {raised.value}'
  assert 'did you mean config.training.batch_size?' in proc.stderr
  with pytest.raises(api.Error, match='holds no config.json'):
    api.evaluate(str(tmp_path))
