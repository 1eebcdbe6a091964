"""What the run files say: JSON without 'inf' strings, what a large delta and a
fine-tuned model write in every file, and the data facts (image shape, classes) that a
reader needs to trust a run; read_json names a missing or corrupt file."""
import json
import math
import os

import pytest

from configs import quickstart
from image_classification.workdir import run_files
from image_classification.data.readers import digits
from image_classification.training import experiment
from image_classification.training import loop
from tests import test_configs


def test_infinite_and_nan_numbers_are_written_as_null(tmp_path):
  run_files.write_json(str(tmp_path), 'x.json', {'epsilon': math.inf,
                                                 'loss': [float('nan'), 1.5]})
  text = (tmp_path / 'x.json').read_text()
  assert 'inf' not in text and 'NaN' not in text
  assert json.loads(text) == {'epsilon': None, 'loss': [None, 1.5]}


def test_read_json_names_a_missing_or_corrupt_file(tmp_path):
  workdir = str(tmp_path)
  run_files.write_json(workdir, run_files.SUMMARY, {'status': 'complete'})
  assert run_files.read_json(workdir, run_files.SUMMARY) == {'status': 'complete'}
  assert not [f for f in os.listdir(workdir) if f.startswith('.')]  # no temp file left
  with pytest.raises(run_files.RunFileError,
                     match=f'{os.path.join(workdir, run_files.PRIVACY)}: missing'):
    run_files.read_json(workdir, run_files.PRIVACY)
  (tmp_path / run_files.CONFIG).write_text('{"model": ')
  with pytest.raises(run_files.RunFileError, match='config.json: cannot be read as JSON'):
    run_files.read_json(workdir, run_files.CONFIG)
  (tmp_path / run_files.PLAN).write_text('[1, 2]')
  with pytest.raises(run_files.RunFileError, match='plan.json: expected a JSON object'):
    run_files.read_json(workdir, run_files.PLAN)
  assert issubclass(run_files.RunFileError, ValueError)  # callers catch ValueError


def test_metrics_rows_survive_a_truncated_line(tmp_path):
  workdir = str(tmp_path)
  writer = run_files.MetricsWriter(workdir)
  writer.write({'step': 1, 'epsilon': math.inf})
  writer.write({'step': 2, 'train_loss': 0.5})
  writer.close()
  with open(os.path.join(workdir, run_files.METRICS), 'a') as f:
    f.write('{"step": 3, "trai')  # killed mid-write
  rows, problems = run_files.read_metrics(workdir)
  assert rows == [{'step': 1, 'epsilon': None}, {'step': 2, 'train_loss': 0.5}]
  assert problems == [f'{os.path.join(workdir, run_files.METRICS)}:3: not a JSON '
                      'object, line skipped']
  resumed = run_files.MetricsWriter(workdir, truncate_after_step=1)
  resumed.close()
  assert run_files.read_metrics(workdir)[0] == [{'step': 1, 'epsilon': None}]
  assert run_files.read_metrics(str(tmp_path / 'none'))[1][0].endswith(': missing')


def test_fine_tuned_large_delta_run_says_so_in_every_run_file(tmp_path, capsys):
  config = test_configs.shrink(quickstart.get_config())
  config.data.max_train_examples = 40      # N = 40: delta 0.05 >= 1/N
  config.privacy.delta = 0.05
  config.privacy.allow_large_delta = True
  config.wandb.mode = 'disabled'
  data = experiment.Experiment(config, dry_run=True).data
  config.model.pretrained_path = test_configs._pretrained_file(  # pylint: disable=protected-access
      config, data, tmp_path)
  workdir = str(tmp_path / 'run')
  summary = loop.train(config, workdir)
  assert 'on digits (N=40, images 8x8x1, 10 classes) |' in capsys.readouterr().out
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert privacy['large_delta'] is True
  assert privacy['pretrained_path'] == config.model.pretrained_path
  assert privacy['num_classes'] == 10
  assert privacy['class_names'] == [str(i) for i in range(10)]
  assert privacy['image_shape'] == [8, 8, 1]
  with open(os.path.join(workdir, run_files.PRIVACY_MD)) as f:
    lines = f.read().splitlines()
  assert lines[2].startswith('**LARGE DELTA') and config.model.pretrained_path in lines[4]
  assert summary['image_shape'] == [8, 8, 1] and summary['num_classes'] == 10
  assert summary['class_names'][9] == '9'


def test_non_private_epsilon_is_null_in_every_file(tmp_path):
  config = test_configs.shrink(quickstart.get_config())
  config.privacy.allow_non_private = True
  config.privacy.noise_multiplier = 0.0
  config.wandb.mode = 'disabled'
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir)
  summary = run_files.read_json(workdir, run_files.SUMMARY)
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert summary['epsilon'] is None and summary['non_private'] is True
  assert privacy['epsilon'] is None and privacy['non_private'] is True
  with open(os.path.join(workdir, run_files.METRICS)) as f:
    assert all(json.loads(line)['epsilon'] is None for line in f)
  for name in os.listdir(workdir):
    if name.endswith(('.json', '.jsonl')):
      with open(os.path.join(workdir, name)) as f:
        assert '"inf"' not in f.read(), name


def test_dry_run_states_the_image_shape_and_classes(tmp_path, capsys):
  config = quickstart.get_config()
  config.data.image_size = 0
  out = loop.train(config, str(tmp_path), dry_run=True)
  n = digits.load().train.num_examples
  assert f'on digits (N={n}, images 8x8x1, 10 classes)' in capsys.readouterr().out
  plan = run_files.read_json(str(tmp_path), run_files.PLAN)
  assert plan == json.loads(json.dumps(run_files.json_safe(out)))
  assert plan['image_shape'] == [8, 8, 1] and plan['num_classes'] == 10
  assert plan['class_names'] == [str(i) for i in range(10)]
  assert plan['pretrained_path'] is None and plan['large_delta'] is False
