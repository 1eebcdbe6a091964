"""A run on ScatterNet features end to end (8x8 digits resized to 32x32, a few steps):
the features are computed once, only the model on top is trained, privacy.md names the
public prior, the exported model classifies raw images through the same extractor, and
the configs that would augment features are refused before anything is computed."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import fashion_mnist_eps3
from configs import mnist_eps3
from configs import quickstart
from image_classification import config as config_lib
from image_classification import runs
from image_classification.workdir import run_files
from image_classification.data import base
from image_classification.data import sources
from image_classification.data.readers import digits
from image_classification.input import augmentation
from image_classification.models import features
from image_classification.trained import inference
from image_classification.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRIOR = 'ScatterNet (J=3, L=8) fixed wavelet features, no data used to build them'
# The recipe's fixed views (config.model.features_shift=1), named beside the prior.
VIEWS = ('; each training example as 5 fixed views (the image and its shifts by 1 '
         'pixel(s) down, up, right and left), its loss averaged over them before '
         'clipping')


def _config():
  """configs/mnist_eps3.py's recipe on the bundled 8x8 digits (resized to 32x32 by the
  recipe's data.image_size, as MNIST's 28x28 are), shortened."""
  config = mnist_eps3.get_config()
  config.data.name = 'digits'
  config.data.validation_fraction = 0.2
  config.privacy.target_epsilon = 8.0
  config.training.batch_size = 256
  config.training.num_epochs = 0.0
  config.training.num_steps = 12
  config.training.optimizer.learning_rate = 2.0
  config.training.log_every_steps = 6
  config.training.eval_every_steps = 0
  config.training.checkpoint_every_minutes = 0.0
  config.wandb.mode = 'disabled'
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('features') / 'run')
  return workdir, loop.train(_config(), workdir)


def test_privacy_report_names_the_public_prior(run):
  workdir, summary = run
  with open(os.path.join(workdir, run_files.PRIVACY_MD)) as f:
    report = f.read()
  assert f'Public prior: {PRIOR}{VIEWS}.' in report
  privacy = run_files.read_json(workdir, run_files.PRIVACY)
  assert privacy['public_prior'] == PRIOR + VIEWS
  assert privacy['features'] == 'scattering'
  assert summary['epsilon'] <= 8.0 + 1e-9


def test_only_the_model_on_the_features_is_trained(run):
  _, summary = run
  # 8x8 digits resized to 32x32 -> J=3: 4x4x217 features -> a 10-class linear model:
  # nothing else has weights.
  assert summary['num_params'] == 4 * 4 * 217 * 10 + 10
  assert summary['image_shape'] == [4, 4, 217]
  assert summary['test_accuracy'] > 0.5  # it learns from the features


def test_exported_model_classifies_raw_images_through_the_extractor(run):
  workdir, summary = run
  model = inference.load(workdir)
  assert model.card['features'] == 'scattering'
  assert model.card['image_shape'] == [32, 32, 1]  # the images, not the features
  test = sources.resize_in_memory(digits.load(), 32).test
  images, labels = test.get(np.arange(test.num_examples))
  predicted = np.argmax(model.probabilities(images), axis=-1)
  assert np.mean(predicted == labels) == pytest.approx(summary['test_accuracy'],
                                                       abs=1e-9)


def test_mnist_and_fashion_mnist_records_share_one_recipe():
  mnist, fashion = mnist_eps3.get_config().to_dict(), fashion_mnist_eps3.get_config()
  fashion = fashion.to_dict()
  for config in (mnist, fashion):
    config.pop('experiment')
    config['data'].pop('name')
  assert mnist == fashion
  assert mnist['model']['features'] == 'scattering'


@pytest.mark.parametrize('field,value,message', [
    ('data.random_crop', True, 'config.data.random_crop=True'),
    ('data.random_flip', True, 'config.data.random_flip=True'),
    ('data.augmult', 4, 'config.data.augmult=4'),
    ('model.features', 'wavelets', "config.model.features='wavelets'"),
])
def test_augmenting_or_unknown_features_are_refused(field, value, message):
  config = _config()
  group, name = field.split('.')
  config[group][name] = value
  with pytest.raises(config_lib.ConfigError, match=message.replace('(', r'\(')):
    config_lib.validate(config, 1)


def test_features_kwargs_without_features_are_refused():
  config = quickstart.get_config()
  config.model.features_kwargs.J = 2
  with pytest.raises(config_lib.ConfigError, match='config.model.features_kwargs'):
    config_lib.validate(config, 1)


def test_extractor_that_does_not_fit_the_images_ends_in_one_error_line(tmp_path):
  # J=6 needs sides divisible by 64, the recipe's images are 32x32: refused while
  # building the experiment, before any feature is computed.
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/mnist_eps3.py',
       '--config.data.name=digits', '--config.model.features_kwargs.J=6',
       f'--workdir={tmp_path / "run"}', '--dry_run'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu', WANDB_MODE='disabled'),
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith('error: ') and 'divisible by 2^J=64' in lines[-1]
  assert 'Traceback' not in proc.stderr


def test_data_size_plan_and_model_errors_come_before_the_features(tmp_path, capsys):
  """Computing the features takes minutes on a large dataset, so every check that the
  data size, the plan or the model can fail comes first."""
  cases = [({'training.batch_size': 4096}, 'larger than the training set'),
           ({'model.kwargs.num_groups': 5}, 'num_groups'),
           ({'privacy.delta': 0.01}, 'privacy.delta')]
  for overrides, message in cases:
    config = _config()
    for key, value in overrides.items():
      section, field = key.rsplit('.', 1)
      node = config
      for part in section.split('.'):
        node = node[part]
      node[field] = value
    with pytest.raises(config_lib.ConfigError, match=message):
      loop.train(config, str(tmp_path / 'run'))
    assert 'features of' not in capsys.readouterr().out  # none were computed


def test_shifted_views_are_the_features_of_each_shifted_image():
  """config.model.features_shift=s: the training split holds, per example, the features
  of the image and of its shifts by s pixels (down, up, right, left) side by side;
  the validation and test splits hold the image's own. Each view is a function of its
  example alone."""
  data = sources.resize_in_memory(digits.load(), 16)
  small = dataclasses.replace(
      data, train=base.ArraySource(data.train.images[:5], data.train.labels[:5]),
      test=base.ArraySource(data.test.images[:3], data.test.labels[:3]))
  extractor = features.build('scattering', (16, 16, 1), J=2, L=8)
  plain, _ = features.precompute(small, None, extractor, batch_size=4)
  views, _ = features.precompute(small, None, extractor, batch_size=4, shift=2)
  c = extractor.output_shape[-1]
  assert views.train.image_shape == (4, 4, 5 * c)
  assert views.test.image_shape == plain.test.image_shape == (4, 4, c)
  stacked, labels = views.train.get(np.arange(5))
  np.testing.assert_array_equal(labels, data.train.labels[:5])
  of_images = features.of_images(extractor, small.mean, small.std)
  images = data.train.images[:5]
  for v, (dy, dx) in enumerate(features.SHIFT_DIRECTIONS):
    moved = features.shifted(images, 2 * dy, 2 * dx)
    np.testing.assert_allclose(stacked[..., v * c:(v + 1) * c], of_images(moved),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(stacked[..., :c], plain.train.get(np.arange(5))[0])
  # shifted(): the content moves, and 0 comes in from the edge.
  image = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
  down_left = features.shifted(image, 1, -2)[0, ..., 0]
  np.testing.assert_array_equal(down_left[1:, :2], image[0, :3, 2:, 0])
  assert not down_left[0].any() and not down_left[:, 2:].any()


def test_shifted_views_train_and_audit_end_to_end(tmp_path):
  """A run with fixed views trains 5 views per example, says so in privacy.md, and
  the input audit scores its canaries through the features (it used to fail after
  training on the raw canary images)."""
  config = _config()
  assert config.model.features_shift == 1  # the recipe's
  config.audit.enabled = True
  config.audit.num_canaries = 50
  summary = runs.train(config, str(tmp_path))
  assert summary['image_shape'] == [4, 4, 217] and summary['test_accuracy'] > 0.5
  privacy = run_files.read_json(str(tmp_path), run_files.PRIVACY)
  assert privacy['public_prior'] == PRIOR + VIEWS
  audit = run_files.read_json(str(tmp_path), run_files.AUDIT)
  assert audit['num_canaries'] == 50 and audit['epsilon_lower_bound'] >= 0.0


@pytest.mark.parametrize('overrides,message', [
    ({'model.features_shift': -1}, 'config.model.features_shift=-1: must be an integer'),
    ({'model.features_shift': 32}, 'shifts every view out of the 32x32 image'),
    ({'model.features': '', 'model.features_kwargs': {}, 'model.name': 'cnn',
      'model.features_shift': 1}, 'set only with config.model.features'),
])
def test_bad_features_shift_is_refused(overrides, message):
  config = _config()
  for field, value in overrides.items():
    group, name = field.split('.')
    config[group][name] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config, 1)


def test_shifted_views_of_rgb_images_keep_each_views_channels_together():
  """On RGB images each view's 3 x K coefficients stay contiguous, so the step's
  stacked_views gives back exactly the features of each shifted image."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  splits = base.DatasetSplits(
      name='rgb', train=base.ArraySource(images, np.arange(3, dtype=np.int32)),
      test=base.ArraySource(images[:1], np.zeros(1, np.int32)), num_classes=3,
      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  extractor = features.build('scattering', (16, 16, 3), J=2, L=8)
  views, _ = features.precompute(splits, None, extractor, batch_size=2, shift=1)
  c = extractor.output_shape[-1]
  assert c == 3 * 81 and views.train.image_shape == (4, 4, 5 * c)
  stacked = views.train.get(np.arange(3))[0]
  split = np.asarray(augmentation.stacked_views(
      stacked, views=5, mean=views.mean, std=views.std))
  of_images = features.of_images(extractor, splits.mean, splits.std)
  for v, (dy, dx) in enumerate(features.SHIFT_DIRECTIONS):
    np.testing.assert_allclose(split[:, v], of_images(features.shifted(images, dy, dx)),
                               rtol=1e-4, atol=1e-5)
