"""What the run files say: JSON without 'inf' strings, privacy.md's first lines for a
large delta and a fine-tuned model, and the data facts (image shape, classes) that a
reader needs to trust a run."""
import json
import math
import os

from configs import quickstart
from image_classification.reporting import run_files
from image_classification.training import loop
from tests import test_configs


def _privacy(**extra):
  return {'mechanism': 'DP-SGD', 'sampling': 'poisson', 'sampling_rate': 0.1,
          'expected_batch_size': 8, 'dataset_size': 80,
          'neighboring_relation': 'add_or_remove_one', 'noise_multiplier': 1.0,
          'clipping_norm': 1.0, 'steps': 2, 'delta': 0.05, 'epsilon': 3.0,
          'accountant': 'rdp', 'computed_without_noise': ['train_loss'], **extra}


def test_infinite_and_nan_numbers_are_written_as_null(tmp_path):
  run_files.write_json(str(tmp_path), 'x.json', {'epsilon': math.inf,
                                                 'loss': [float('nan'), 1.5]})
  text = (tmp_path / 'x.json').read_text()
  assert 'inf' not in text and 'NaN' not in text
  assert json.loads(text) == {'epsilon': None, 'loss': [None, 1.5]}


def test_privacy_md_opens_with_large_delta_and_names_the_pretrained_checkpoint():
  text = run_files.privacy_markdown(_privacy(large_delta=True,
                                             pretrained_path='/ckpt/public.npz'))
  head = text.splitlines()[:6]
  assert head[2].startswith('**LARGE DELTA: delta = 0.05 is >= 1/N = 0.0125')
  assert 'privacy.allow_large_delta=True' in head[2]
  assert '`/ckpt/public.npz`' in head[4] and 'trained on public data' in head[4]
  plain = run_files.privacy_markdown(_privacy(large_delta=False, pretrained_path=None))
  assert 'LARGE DELTA' not in plain and 'pre-trained' not in plain


def test_fine_tuned_large_delta_run_says_so_in_every_run_file(tmp_path, capsys):
  config = test_configs.shrink(quickstart.get_config())
  config.data.max_train_examples = 40      # N = 40: delta 0.05 >= 1/N
  config.privacy.delta = 0.05
  config.privacy.allow_large_delta = True
  config.wandb.mode = 'disabled'
  data = loop.Experiment(config, dry_run=True).data
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
  assert 'on digits (N=1437, images 8x8x1, 10 classes)' in capsys.readouterr().out
  plan = run_files.read_json(str(tmp_path), run_files.PLAN)
  assert plan == json.loads(json.dumps(run_files._clean(out)))  # pylint: disable=protected-access
  assert plan['image_shape'] == [8, 8, 1] and plan['num_classes'] == 10
  assert plan['class_names'] == [str(i) for i in range(10)]
  assert plan['pretrained_path'] is None and plan['large_delta'] is False
