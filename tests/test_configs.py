"""Every experiment config in configs/: it passes a dry run at its real size (no data
is downloaded or read: data/catalog.py knows the published sizes and shapes), and it
trains 2 real DP-SGD steps through loop.train on fake in-memory data of its real
image shape, with the model and batch shrunk. Plus the paper's checkable numbers.
"""
import glob
import importlib
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from image_classification import runs
from image_classification.data import base as data_base
from image_classification.data import catalog
from image_classification.data import datasets
from image_classification.models import registry
from image_classification.training import loop
from image_classification.trained import pretrained
from image_classification.workdir import resume
from tests.training import wiring_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not experiments: the shared defaults and builders, the package marker, and the
# family files that take an argument (file.py:eps=1); each of their rows is a thin
# experiment file here, equal to the family's (tests/test_config_builders.py).
NOT_EXPERIMENTS = ('__init__', 'base', 'common', 'cifar10_wrn_16_4',
                   'cifar_wrn_28_10_finetune', 'imagenet_nfnet_f3_finetune')
CONFIG_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
    if os.path.splitext(os.path.basename(p))[0] not in NOT_EXPERIMENTS)
# Training 2 steps compiles the shrunk model's DP step, which dominates: on this
# 2-core CPU about 50 s of compile for a WRN-10-1 and 2-10 min for the shrunk
# NF-ResNet-26 / NFNet-F0 (wall time, CPU shared). These configs share their code
# path with a representative that runs by default (cifar100_wrn_28_10_eps1_finetune
# for every WRN config: from-scratch and fine-tuning, augmult, crop/flip; mnist_eps3
# for fashion_mnist_eps3, mnist_eps3_end_to_end for fashion_mnist_eps3_end_to_end), or
# are genuinely slow (ImageNet NF models), so their
# training test is marked slow: `pytest -m slow tests/test_configs.py`.
SLOW_TRAINING = (
    'cifar10_wrn_16_4_eps1', 'cifar10_wrn_16_4_eps2', 'cifar10_wrn_16_4_eps4',
    'cifar10_wrn_16_4_eps8', 'cifar10_wrn_40_4_eps8',
    'cifar10_wrn_28_10_eps1_finetune', 'cifar10_wrn_28_10_eps8_finetune',
    'cifar100_wrn_28_10_eps8_finetune', 'cifar100_wrn_28_10_eps1_finetune',
    'fashion_mnist_eps3',
    'fashion_mnist_eps3_end_to_end',
    'imagenet_nf_resnet_50_eps8', 'imagenet_nfnet_f3_eps1_finetune',
    'imagenet_nfnet_f3_eps8_finetune',
)

# The smallest member of each family that keeps the family's code paths.
SHRUNK_MODEL_KWARGS = {
    'wide_resnet': dict(depth=10, width=1),
    'nf_resnet': dict(depth=26, width=0.0625),
    'nfnet': dict(variant='F0', width=0.0625, group_width=8),
}
SMALL_IMAGE_SIZE = 32  # for datasets read at config.data.image_size (ImageNet)


def get_config(name: str) -> ml_collections.ConfigDict:
  return importlib.import_module(f'configs.{name}').get_config()


def test_configs_are_discovered():
  assert len(CONFIG_NAMES) >= 16, CONFIG_NAMES
  for name in ('cifar10_wrn_16_4_eps1', 'imagenet_nf_resnet_50_eps8',
               'imagenet_nfnet_f3_eps8_finetune', 'cifar100_wrn_28_10_eps1_finetune',
               'mnist_eps3', 'fashion_mnist_eps3'):
    assert name in CONFIG_NAMES


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_is_well_formed(name):
  config = get_config(name)
  defaults = importlib.import_module('configs.base').get_config()
  # Starts from base.get_config(): no field is dropped.
  fields = set(resume.flatten(config.to_dict()))
  missing = {k for k in resume.flatten(defaults.to_dict())
             if k not in fields and not any(f.startswith(k + '.') for f in fields)}
  assert not missing, f'{name} drops base fields {sorted(missing)}'
  assert config.experiment == name or name.startswith('quickstart')
  assert config.model.name in registry.available()
  p = config.privacy
  if not p.allow_non_private:
    assert 0 < p.target_epsilon and 0 < p.delta < 1e-4


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_dry_run(name, tmp_path):
  config = get_config(name)
  plan = runs.train(config, str(tmp_path), dry_run=True)
  with open(tmp_path / 'plan.json') as f:
    assert json.load(f)['steps'] == plan['steps']
  if not plan['non_private']:
    assert plan['epsilon'] == pytest.approx(_reference_epsilon(plan), rel=1e-6)
    if config.privacy.noise_multiplier is not None:  # the paper's fixed sigma is kept
      assert plan['noise_multiplier'] == config.privacy.noise_multiplier
    else:  # calibrated: the whole budget is used (to the bisection's tolerance)
      assert plan['epsilon'] == pytest.approx(config.privacy.target_epsilon, rel=2e-3)
  spec = datasets.DATASETS[config.data.name]
  if spec.num_train is not None and not config.data.path:
    limit = config.data.max_train_examples
    assert plan['dataset_size'] == (min(spec.num_train, limit) if limit else
                                    spec.num_train)


def test_cifar10_wrn_16_4_eps1_plan_matches_the_paper(tmp_path):
  """De et al. 2022 / jax_privacy: sigma = 10 for 875 steps of 4096 on N = 50000."""
  config = get_config('cifar10_wrn_16_4_eps1')
  plan = loop.train(config, str(tmp_path), dry_run=True)
  assert plan['steps'] == 875
  assert plan['expected_batch_size'] == 4096
  assert plan['dataset_size'] == 50_000
  assert plan['accountant'] == 'rdp' and plan['delta'] == 1e-5
  assert abs(plan['noise_multiplier'] - 10.0) <= 0.02 * 10.0
  assert plan['epsilon'] == pytest.approx(_reference_epsilon(plan), rel=1e-6)
  assert plan['epsilon'] == pytest.approx(0.9877, abs=1e-3)  # the published RDP value
  assert plan['image_shape'] == [32, 32, 3]
  assert plan['num_params'] == 2_748_890  # WRN-16-4 at 10 classes


def test_calibrated_sigma_is_near_the_papers_when_left_to_calibrate(tmp_path):
  """The 2% rule: calibrating (None) the eps=1 run gives back the paper's 10.0."""
  config = get_config('cifar10_wrn_16_4_eps1')
  config.privacy.noise_multiplier = None
  plan = loop.train(config, str(tmp_path), dry_run=True)
  assert abs(plan['noise_multiplier'] - 10.0) <= 0.02 * 10.0


def test_imagenet_dry_run_uses_the_image_size(tmp_path):
  config = get_config('imagenet_nf_resnet_50_eps8')
  plan = loop.train(config, str(tmp_path), dry_run=True)
  assert plan['image_shape'] == [224, 224, 3]
  assert plan['dataset_size'] == 1_281_167
  assert plan['noise_multiplier'] == 2.5 and plan['steps'] == 71_589
  assert plan['epsilon'] == pytest.approx(_reference_epsilon(plan), rel=1e-6)
  assert 7.0 < plan['epsilon'] <= 8.0


def test_finetune_dry_run_ignores_a_missing_checkpoint(tmp_path):
  config = get_config('cifar10_wrn_28_10_eps1_finetune')
  assert config.model.pretrained_path and not os.path.exists(
      config.model.pretrained_path)
  loop.train(config, str(tmp_path), dry_run=True)


def test_catalog_stand_in_has_no_pixels():
  config = get_config('cifar10_wrn_16_4_eps1')
  splits = catalog.dry_run_splits(config.data)
  assert splits.train.num_examples == 50_000 and splits.test.num_examples == 10_000
  assert splits.train.image_shape == (32, 32, 3) and splits.num_classes == 10
  with pytest.raises(data_base.DataError, match='dry-run'):
    splits.train.get(np.arange(3))
  config.data.path = '/some/where'  # local files: the dry run reads them
  assert catalog.dry_run_splits(config.data) is None
  config = get_config('imagenet_nf_resnet_50_eps8')
  config.data.image_size = 0
  with pytest.raises(data_base.DataError, match='image_size'):
    catalog.dry_run_splits(config.data)


# ---------------------------------------------------------------- 2 real steps
def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same experiment, tiny: small model, batch 8, 2 steps, augmult <= 2."""
  config = ml_collections.ConfigDict(config.to_dict())
  kwargs = SHRUNK_MODEL_KWARGS.get(config.model.name)
  if kwargs:
    config.model.kwargs.update(kwargs)
  if config.data.image_size:
    config.data.image_size = SMALL_IMAGE_SIZE
  config.data.augmult = min(config.data.augmult, 2)
  t = config.training
  t.batch_size = 8
  t.micro_batch_size = 0
  t.num_steps, t.num_epochs = 2, 0.0
  # BandMF: b must divide the 2 steps (and b * batch fit the 64 fake examples).
  if config.privacy.get('num_bands', 1) > 2:
    config.privacy.num_bands = 2
  t.log_every_steps, t.eval_every_steps, t.checkpoint_every_steps = 1, 0, 0
  t.eval_batch_size = 16
  # The audit takes its canaries out of the 64 fake training examples.
  config.audit.num_canaries = min(config.audit.num_canaries, 16)
  return config


def fake_splits(config, num_train=64, num_test=16) -> data_base.DatasetSplits:
  """Random uint8 images of the config's real image shape (at the shrunk size)."""
  name = config.data.name
  shape = catalog.image_shape(name, config.data.image_size)
  constants = datasets.DATASETS[name]
  rng = np.random.default_rng(0)

  def split(n):
    return data_base.ArraySource(
        rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
        rng.integers(0, constants.num_classes, n).astype(np.int32))

  return data_base.DatasetSplits(
      name=name, train=split(num_train), test=split(num_test),
      num_classes=constants.num_classes, mean=constants.mean, std=constants.std)


def _pretrained_file(config, data, tmp_path) -> str:
  """Params of the shrunk model (another seed, other head size) saved as .npz."""
  model = registry.build(config.model.name, data.num_classes + 1,
                         **config.model.kwargs.to_dict())
  image = np.zeros((1,) + tuple(data.train.image_shape), np.float32)
  params = jax.jit(lambda k: model.init({'params': k, 'dropout': k}, image))(
      jax.random.PRNGKey(7))['params']
  path = str(tmp_path / 'pretrained.npz')
  pretrained.save_params(path, jax.device_get(params))
  return path


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TRAINING else n
    for n in CONFIG_NAMES])
def test_trains_two_steps_on_tiny_inputs(name, tmp_path):
  config = shrink(get_config(name))
  data = fake_splits(config)
  if config.model.pretrained_path:
    config.model.pretrained_path = _pretrained_file(config, data, tmp_path)
  workdir = str(tmp_path / 'run')
  summary = runs.train(config, workdir, dataset=data)
  assert summary['status'] == 'complete' and summary['steps'] == 2
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  # The accuracy is a count of the 16 test examples, and the one the last row logged.
  assert summary['test_accuracy'] * 16 == pytest.approx(
      round(summary['test_accuracy'] * 16), abs=1e-9)
  assert rows[-1]['test_accuracy'] == summary['test_accuracy']
  if not summary['non_private']:
    with open(os.path.join(workdir, 'privacy.json')) as f:
      privacy = json.load(f)
    if not config.audit.enabled:
      assert privacy['dataset_size'] == data.train.num_examples
    # Epsilon of the 2 steps actually taken, recomputed with dp-accounting.
    eps = wiring_helpers.reference_epsilon(
        sigma=summary['noise_multiplier'], n=privacy['dataset_size'],
        b=config.training.batch_size, steps=summary['steps'],
        delta=config.privacy.delta, sampling=config.privacy.sampling,
        accountant=config.privacy.accountant,
        num_bands=privacy.get('num_bands', 1)
        if privacy.get('mechanism_name') == 'bandmf' else 1)
    assert summary['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert all(np.isfinite(r['train_loss']) for r in rows if 'train_loss' in r)


def _reference_epsilon(plan):
  """dp-accounting's epsilon for the plan's sigma, N, B and steps, built in the test."""
  return wiring_helpers.reference_epsilon(
      sigma=plan['noise_multiplier'], n=plan['dataset_size'],
      b=plan['expected_batch_size'], steps=plan['steps'], delta=plan['delta'],
      sampling=plan['sampling'], accountant=plan['accountant'],
      num_bands=plan.get('num_bands', 1) if plan.get('mechanism_name') == 'bandmf' else 1)




def test_loop_restores_the_pretrained_backbone(tmp_path):
  """config.model.pretrained_path goes through trained/pretrained.py: a checkpoint
  of another width is refused, naming the file and the first mismatching param."""
  config = shrink(get_config('quickstart'))
  data = fake_splits(config)
  rng = np.random.default_rng(0)
  wrong = {'conv0': {'kernel': rng.normal(size=(3, 3, 1, 5)), 'bias': np.zeros(5)},
           'head': {'kernel': np.zeros((5, 10)), 'bias': np.zeros(10)}}
  path = str(tmp_path / 'wrong.npz')
  pretrained.save_params(path, wrong)
  config.model.pretrained_path = path
  with pytest.raises(pretrained.PretrainedError, match="'conv0/bias'") as e:
    loop.train(config, str(tmp_path / 'run'), dataset=data)
  assert path in str(e.value)
