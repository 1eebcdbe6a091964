"""Bad input gets a clear error naming the field, before anything compiles."""
import pytest

from configs import quickstart
from image_classification import config as config_lib
from image_classification.training import loop


def _config(**overrides):
  c = quickstart.get_config()
  for path, value in overrides.items():
    node = c
    *parents, last = path.split('.')
    for p in parents:
      node = node[p]
    node[last] = value
  return c


@pytest.mark.parametrize('overrides,field', [
    ({'model.name': 'resnet9000'}, 'model.name'),
    ({'data.name': 'not_a_dataset'}, 'data.name'),
    ({'privacy.target_epsilon': 0.0}, 'privacy.target_epsilon'),
    ({'privacy.target_epsilon': -1.0}, 'privacy.target_epsilon'),
    ({'privacy.delta': 0.0}, 'privacy.delta'),
    ({'privacy.delta': 1.0}, 'privacy.delta'),
    ({'privacy.clipping_norm': 0.0}, 'privacy.clipping_norm'),
    ({'privacy.accountant': 'moments'}, 'privacy.accountant'),
    ({'privacy.sampling': 'shuffle'}, 'privacy.sampling'),
    ({'privacy.sampling': 'fixed', 'privacy.accountant': 'pld'}, 'privacy.accountant'),
    ({'privacy.noise_multiplier': 0.0}, 'privacy.noise_multiplier'),
    ({'data.augmult': 0}, 'data.augmult'),
    ({'data.path': '/no/such/folder'}, 'data.path'),
    ({'training.batch_size': 0}, 'training.batch_size'),
    ({'training.num_epochs': 3.0}, 'training.num_steps'),
    ({'training.optimizer.name': 'lbfgs'}, 'training.optimizer.name'),
    ({'training.lr_schedule.name': 'wiggly'}, 'training.lr_schedule.name'),
    ({'training.ema.decay': 1.0}, 'training.ema.decay'),
    ({'model.kwargs.normalization': 'batch_norm'}, 'model.kwargs.normalization'),
    ({'model.pretrained_path': '/no/such/ckpt'}, 'model.pretrained_path'),
    ({'wandb.mode': 'loud'}, 'wandb.mode'),
])
def test_bad_field_is_named(overrides, field):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(_config(**overrides), num_devices=1)
  assert f'config.{field}=' in str(e.value)


def test_batch_not_divisible_by_devices():
  with pytest.raises(config_lib.ConfigError, match=r'config.training.batch_size=.*devices \(4\)'):
    config_lib.validate(_config(**{'training.batch_size': 510}), num_devices=4)


def test_batch_larger_than_dataset_is_refused_after_loading(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='larger than the training set'):
    loop.train(_config(**{'training.batch_size': 4000}), str(tmp_path), dry_run=True)


def test_small_delta_warning(caplog):
  config_lib.validate_with_data(_config(**{'privacy.delta': 0.01}), 1437)
  assert any('1/N' in r.getMessage() for r in caplog.records)


def test_noise_multiplier_that_passes_target_is_refused(tmp_path):
  with pytest.raises(ValueError, match='config.privacy.noise_multiplier=0.5 spends'):
    loop.train(_config(**{'privacy.noise_multiplier': 0.5}), str(tmp_path), dry_run=True)


def test_batchnorm_model_refused_at_build(tmp_path, monkeypatch):
  """A model with cross-example state is refused even if its kwargs look innocent."""
  from image_classification.models import cnn, registry
  monkeypatch.setitem(registry._REGISTRY, 'bn_cnn',  # pylint: disable=protected-access
                      lambda num_classes, **kw: cnn._BatchNormCNN(num_classes))  # pylint: disable=protected-access
  with pytest.raises(config_lib.ConfigError, match='batch_stats'):
    loop.train(_config(**{'model.name': 'bn_cnn', 'model.kwargs': {}}), str(tmp_path),
               dry_run=True)
  assert not (tmp_path / 'plan.json').exists()
