"""Bad input gets a clear error naming the field, before anything compiles."""
import os

import pytest

from configs import quickstart
from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.privacy import accounting
from image_classification.privacy import batch_selection
from image_classification.privacy import privatizers
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
    ({'training.per_example_grads': 'ghosts'}, 'training.per_example_grads'),
    ({'training.lr_schedule.name': 'wiggly'}, 'training.lr_schedule.name'),
    ({'training.ema.decay': 1.0}, 'training.ema.decay'),
    ({'model.kwargs.normalization': 'batch_norm'}, 'model.kwargs.normalization'),
    ({'model.pretrained_path': '/no/such/ckpt'}, 'model.pretrained_path'),
    ({'wandb.mode': 'loud'}, 'wandb.mode'),
    ({'training.eval_batch_size': 0}, 'training.eval_batch_size'),
    ({'data.max_train_examples': -10}, 'data.max_train_examples'),
    ({'data.max_test_examples': -1}, 'data.max_test_examples'),
    ({'data.image_size': -4}, 'data.image_size'),
    ({'data.num_classes': 7}, 'data.num_classes'),  # digits has 10
    ({'data.num_classes': -1}, 'data.num_classes'),
    ({'data.name': 'npz', 'data.path': __file__}, 'data.num_classes'),
    ({'data.name': 'npz', 'data.path': __file__, 'data.num_classes': 1},
     'data.num_classes'),
    # Non-finite and out-of-range numbers: NaN passes every comparison, and a NaN
    # noise multiplier trained on NaN noise and reported epsilon 0.
    ({'privacy.noise_multiplier': float('nan')}, 'privacy.noise_multiplier'),
    ({'privacy.noise_multiplier': float('inf')}, 'privacy.noise_multiplier'),
    ({'privacy.clipping_norm': float('inf')}, 'privacy.clipping_norm'),
    ({'training.optimizer.learning_rate': float('inf')},
     'training.optimizer.learning_rate'),
    ({'training.optimizer.learning_rate': float('nan')},
     'training.optimizer.learning_rate'),
    ({'training.optimizer.momentum': -5.0}, 'training.optimizer.momentum'),
    ({'training.optimizer.momentum': 1.0}, 'training.optimizer.momentum'),
    ({'training.optimizer.weight_decay': -1.0}, 'training.optimizer.weight_decay'),
    ({'training.lr_schedule.warmup_steps': -10}, 'training.lr_schedule.warmup_steps'),
    ({'training.ema.start_step': -100}, 'training.ema.start_step'),
    ({'training.num_steps': 0, 'training.num_epochs': float('nan')},
     'training.num_epochs'),
    ({'training.num_steps': 0, 'training.num_epochs': -1.0}, 'training.num_epochs'),
])
def test_bad_field_is_named(overrides, field):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(_config(**overrides), num_devices=1)
  assert f'config.{field}=' in str(e.value)


@pytest.mark.parametrize('field,bad,registry', [
    ('sampling', 'shuffle', batch_selection.SAMPLERS),
    ('mechanism', 'dpmf', privatizers.PRIVATIZERS),
    ('accountant', 'moments', accounting.ACCOUNTANTS),
])
def test_choices_come_from_the_registries(field, bad, registry, monkeypatch):
  """The error lists the registry's names, and a newly registered one is accepted."""
  with pytest.raises(config_lib.ConfigError, match=f'config.privacy.{field}=') as e:
    config_lib.validate(_config(**{f'privacy.{field}': bad}), num_devices=1)
  assert str(list(registry)) in str(e.value)
  first = next(iter(registry.values()))
  monkeypatch.setitem(registry, bad, first)
  config_lib.validate(_config(**{f'privacy.{field}': bad}), num_devices=1)


def test_batch_not_divisible_by_devices():
  with pytest.raises(config_lib.ConfigError, match=r'config.training.batch_size=.*devices \(4\)'):
    config_lib.validate(_config(**{'training.batch_size': 510}), num_devices=4)


def test_batch_larger_than_dataset_is_refused_after_loading(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='larger than the training set'):
    loop.train(_config(**{'training.batch_size': 4000}), str(tmp_path), dry_run=True)


def test_bad_field_messages_say_what_fixes_them():
  cases = {
      'training.eval_batch_size': (0, 'must be > 0'),
      'data.max_train_examples': (-10, 'must be >= 0 (0 keeps every example)'),
      'data.image_size': (-4, 'must be >= 0'),
  }
  for field, (value, fix) in cases.items():
    with pytest.raises(config_lib.ConfigError) as e:
      config_lib.validate(_config(**{field: value}), num_devices=1)
    assert str(e.value).startswith(f'config.{field}={value}: {fix}')
  with pytest.raises(config_lib.ConfigError, match=(
      r'config.training.num_steps=200: and training.num_epochs=3.0 are both set.*'
      r'--config.training.num_epochs=0 --config.training.num_steps=200')):
    config_lib.validate(_config(**{'training.num_epochs': 3.0}), num_devices=1)
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.data.name='mnsit': unknown dataset; did you mean "
                     r"'mnist'\? choose one of"):
    config_lib.validate(_config(**{'data.name': 'mnsit'}), 1)
  with pytest.raises(config_lib.ConfigError, match='--config.data.num_classes=10'):
    config_lib.validate(_config(**{'data.name': 'npz', 'data.path': __file__}), 1)


def test_delta_of_at_least_one_over_n_is_refused_unless_allowed(caplog):
  with pytest.raises(config_lib.ConfigError,
                     match=r'config.privacy.delta=0.5: is >= 1/N = 0.000696 \(N=1437 .*'
                     'privacy.allow_large_delta=True'):
    config_lib.validate_with_data(_config(**{'privacy.delta': 0.5}), 1437)
  config = _config(**{'privacy.delta': 0.01, 'privacy.allow_large_delta': True})
  config_lib.validate_with_data(config, 1437)
  assert any('1/N' in r.getMessage() for r in caplog.records)
  assert plan_lib.make_plan(config, 1437).large_delta
  config_lib.validate_with_data(_config(), 1437)  # 1e-5 < 1/1437
  assert not plan_lib.make_plan(_config(), 1437).large_delta


def test_noise_multiplier_that_passes_target_is_refused(tmp_path):
  with pytest.raises(config_lib.ConfigError,
                     match='config.privacy.noise_multiplier=0.5 spends'):
    loop.train(_config(**{'privacy.noise_multiplier': 0.5}), str(tmp_path), dry_run=True)


def test_unreachable_target_epsilon_is_a_config_error(tmp_path):
  with pytest.raises(config_lib.ConfigError,
                     match=r'^config.privacy.target_epsilon=0.001: no noise multiplier '
                     'below 1e5 reaches'):
    loop.train(_config(**{'privacy.target_epsilon': 0.001}), str(tmp_path),
               dry_run=True)
  assert not (tmp_path / 'plan.json').exists()


@pytest.mark.parametrize('kwargs,expected', [
    ({'activation': 'relu6'}, "activation 'relu6' unknown; choose one of"),
    ({'widht': 3}, "unexpected keyword argument 'widht'"),
])
def test_bad_model_kwarg_is_a_config_error(tmp_path, kwargs, expected):
  config = _config()
  config.model.kwargs = {**config.model.kwargs.to_dict(), **kwargs}
  with pytest.raises(config_lib.ConfigError) as e:
    loop.train(config, str(tmp_path), dry_run=True)
  assert str(e.value).startswith('config.model.kwargs=') and expected in str(e.value)
  assert "model 'cnn' for images (8, 8, 1)" in str(e.value)


def test_workdir_that_cannot_hold_run_files(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  with pytest.raises(config_lib.ConfigError, match=r'a_file is a file, not a folder'):
    config_lib.check_workdir(str(a_file))
  with pytest.raises(config_lib.ConfigError, match=r'lies under .*a_file, which is a file'):
    config_lib.check_workdir(str(a_file / 'run' / 'deeper'))
  config_lib.check_workdir(str(tmp_path / 'new' / 'run'))  # created later
  assert not (tmp_path / 'new').exists()


def test_unwritable_workdir(tmp_path, monkeypatch):
  # Tests run as root, for whom every folder is writable: fake the permission check.
  real_access = os.access
  locked = str(tmp_path / 'locked')
  os.makedirs(locked)
  monkeypatch.setattr(os, 'access', lambda p, mode: (
      False if os.path.abspath(p) == locked else real_access(p, mode)))
  with pytest.raises(config_lib.ConfigError, match='locked is not writable'):
    config_lib.check_workdir(os.path.join(locked, 'run'))


def test_dry_run_refuses_a_workdir_of_another_config(tmp_path):
  from image_classification.workdir import run_files  # pylint: disable=g-import-not-at-top
  run_files.write_json(str(tmp_path), run_files.CONFIG, _config().to_dict())
  run_files.write_json(str(tmp_path), run_files.SUMMARY, {'status': 'complete'})
  with pytest.raises(config_lib.ConfigError,
                     match='config.privacy.target_epsilon: 4.0 in the workdir, 2.0 now'):
    loop.train(_config(**{'privacy.target_epsilon': 2.0}), str(tmp_path), dry_run=True)
  assert not (tmp_path / 'plan.json').exists()
  loop.train(_config(), str(tmp_path), dry_run=True)  # the same config: fine
  assert (tmp_path / 'plan.json').exists()


def test_batchnorm_model_refused_at_build(tmp_path, monkeypatch):
  """A model with cross-example state is refused even if its kwargs look innocent."""
  from image_classification.models import cnn, registry
  monkeypatch.setitem(registry._REGISTRY, 'bn_cnn',  # pylint: disable=protected-access
                      lambda num_classes, **kw: cnn._BatchNormCNN(num_classes))  # pylint: disable=protected-access
  with pytest.raises(config_lib.ConfigError, match='batch_stats'):
    loop.train(_config(**{'model.name': 'bn_cnn', 'model.kwargs': {}}), str(tmp_path),
               dry_run=True)
  assert not (tmp_path / 'plan.json').exists()


def test_momentum_and_weight_decay_of_none_mean_none():
  """None (as a config file may set it) is no momentum / no weight decay, as the
  optimizer reads them, not a TypeError."""
  config_lib.validate(_config(**{'training.optimizer.momentum': None,
                                 'training.optimizer.weight_decay': None}), num_devices=1)
