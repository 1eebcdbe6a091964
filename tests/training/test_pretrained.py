"""Fine-tuning restores: save -> load keeps the backbone and replaces the head, in every
supported format; a shape mismatch names the parameter; a missing or corrupt file
names the file."""
import os

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from image_classification.models import registry
from image_classification.training import dp_step
from image_classification.training import pretrained


def _params(num_classes, channels=(8, 16), seed=0):
  """Random params with the layout of registry.build('cnn', ...) on 1-channel
  images (numpy, so that the tests compile nothing)."""
  rng = np.random.default_rng(seed)
  params, fan_in = {}, 1
  for i, c in enumerate(channels):
    params[f'conv{i}'] = {
        'kernel': rng.normal(size=(3, 3, fan_in, c)).astype(np.float32),
        'bias': rng.normal(size=(c,)).astype(np.float32)}
    fan_in = c
  params['head'] = {
      'kernel': rng.normal(size=(fan_in, num_classes)).astype(np.float32),
      'bias': rng.normal(size=(num_classes,)).astype(np.float32)}
  return params


def test_test_params_have_the_models_layout():
  model = registry.build('cnn', 3, channels=(8, 16))
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            np.zeros((1, 8, 8, 1), np.float32))['params']
  shapes = jax.tree_util.tree_map(lambda x: x.shape, _params(3))
  assert jax.tree_util.tree_map(lambda x: x.shape, abstract) == shapes


def _assert_tree_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _backbone(params):
  return {k: v for k, v in params.items() if k != 'head'}


def _save_orbax(path, tree):
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, tree)


@pytest.mark.parametrize('fmt', ['npz', 'msgpack', 'orbax'])
def test_round_trip_keeps_backbone_and_replaces_head(tmp_path, fmt):
  source = _params(num_classes=10, seed=1)
  path = str(tmp_path / f'pretrained.{fmt}')
  if fmt == 'orbax':
    _save_orbax(path, source)
  else:
    pretrained.save_params(path, source)
  fresh = _params(num_classes=3, seed=2)
  loaded = pretrained.load_pretrained(path, fresh)
  _assert_tree_equal(_backbone(loaded), _backbone(source))
  _assert_tree_equal(loaded['head'], fresh['head'])  # the fresh 3-class head
  assert loaded['head']['kernel'].shape == (16, 3)


def test_head_is_replaced_even_when_the_classes_agree(tmp_path):
  source = _params(num_classes=3, seed=1)
  path = str(tmp_path / 'p.npz')
  pretrained.save_params(path, source)
  fresh = _params(num_classes=3, seed=2)
  _assert_tree_equal(pretrained.load_pretrained(path, fresh)['head'], fresh['head'])
  kept = pretrained.load_pretrained(path, fresh, reset_head=False)
  _assert_tree_equal(kept['head'], source['head'])
  # reset_head=False cannot keep a head of another shape: it falls back to the fresh.
  other = _params(num_classes=5, seed=2)
  _assert_tree_equal(pretrained.load_pretrained(path, other, reset_head=False)['head'],
                     other['head'])


@pytest.mark.parametrize('train_only_head', [False, True])
def test_platform_train_state_checkpoint(tmp_path, train_only_head):
  """An orbax TrainState as this platform writes it, in a CheckpointManager layout
  (checkpoints/<step>/state); with train_only_head the backbone is in `frozen`."""
  source = _params(num_classes=10, seed=1)
  state = dp_step.init_state(source, optax.sgd(0.1, momentum=0.9), train_only_head)
  workdir = tmp_path / 'run'
  manager = ocp.CheckpointManager(str(workdir / 'checkpoints'),
                                  item_names=('state', 'metadata'))
  for step in (5, 9):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state.replace(step=np.int32(step))),
        metadata=ocp.args.JsonSave({'step': step})))
  manager.wait_until_finished()
  manager.close()
  fresh = _params(num_classes=4, seed=3)
  for path in (workdir, workdir / 'checkpoints', workdir / 'checkpoints' / '9'):
    loaded = pretrained.load_pretrained(str(path), fresh)
    _assert_tree_equal(_backbone(loaded), _backbone(source))
    _assert_tree_equal(loaded['head'], fresh['head'])


def test_flax_variables_dict_is_unwrapped(tmp_path):
  source = _params(num_classes=10, seed=1)
  path = str(tmp_path / 'variables.msgpack')
  pretrained.save_params(path, {'params': source})
  loaded = pretrained.load_pretrained(path, _params(num_classes=3))
  _assert_tree_equal(_backbone(loaded), _backbone(source))


def test_mismatching_backbone_shape_names_the_parameter(tmp_path):
  path = str(tmp_path / 'wide.npz')
  pretrained.save_params(path, _params(num_classes=10, channels=(8, 32)))
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load_pretrained(path, _params(num_classes=10, channels=(8, 16)))
  message = str(e.value)
  assert "'conv1/bias'" in message and path in message
  assert '(32,)' in message and '(16,)' in message


def test_missing_and_extra_parameters_are_named(tmp_path):
  path = str(tmp_path / 'deep.npz')
  pretrained.save_params(path, _params(num_classes=10, channels=(8, 16, 16)))
  with pytest.raises(pretrained.PretrainedError, match="'conv2/bias'.*not in the model"):
    pretrained.load_pretrained(path, _params(num_classes=10, channels=(8, 16)))
  path = str(tmp_path / 'shallow.npz')
  pretrained.save_params(path, _params(num_classes=10, channels=(8,)))
  with pytest.raises(pretrained.PretrainedError, match="'conv1/bias'.*missing"):
    pretrained.load_pretrained(path, _params(num_classes=10, channels=(8, 16)))


def test_missing_file_is_named(tmp_path):
  path = str(tmp_path / 'nowhere' / 'params.npz')
  with pytest.raises(pretrained.PretrainedError, match='no such file') as e:
    pretrained.load_pretrained(path, _params(3))
  assert path in str(e.value)


@pytest.mark.parametrize('name', ['broken.npz', 'broken.msgpack'])
def test_corrupt_file_is_named(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(b'\x00\x01 this is not a checkpoint \xff' * 10)
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load_pretrained(str(path), _params(3))
  assert str(path) in str(e.value)


def test_folder_that_is_not_a_checkpoint_is_named(tmp_path):
  folder = tmp_path / 'empty_run'
  os.makedirs(folder / 'junk')
  with pytest.raises(pretrained.PretrainedError, match='not an orbax checkpoint'):
    pretrained.load_pretrained(str(folder), _params(3))


def test_error_is_a_config_error_for_launch():
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  assert issubclass(pretrained.PretrainedError, config_lib.ConfigError)


def test_abstract_params_are_checked_without_materialising(tmp_path):
  """A dry run can check a checkpoint against jax.eval_shape's params."""
  path = str(tmp_path / 'p.npz')
  pretrained.save_params(path, _params(num_classes=10))
  model = registry.build('cnn', 3, channels=(8, 16))
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            np.zeros((1, 8, 8, 1), np.float32))['params']
  out = pretrained.load_pretrained(path, abstract)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(abstract)
  bad = registry.build('cnn', 3, channels=(8, 32))
  abstract = jax.eval_shape(bad.init, jax.random.PRNGKey(0),
                            np.zeros((1, 8, 8, 1), np.float32))['params']
  with pytest.raises(pretrained.PretrainedError, match='conv1'):
    pretrained.load_pretrained(path, abstract)


# ------------------------------------------------------------------ composition
def _earlier_run(folder, dataset='digits', epsilon=2.0, non_private=False, path=''):
  """A workdir as an earlier run of this platform leaves it, with exported params."""
  import json  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'data': {'name': dataset, 'path': path}}, f)
  with open(os.path.join(folder, 'privacy.json'), 'w') as f:
    json.dump({'epsilon': None if non_private else epsilon, 'delta': 1e-5,
               'non_private': non_private}, f)
  pretrained.save_params(os.path.join(folder, 'params.npz'), _params(3))
  return os.path.join(folder, 'params.npz')


def _data(name='digits', path=''):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({'name': name, 'path': path})


def test_an_earlier_dp_run_on_the_same_data_is_refused_unless_composed(tmp_path):
  params_file = _earlier_run(str(tmp_path / 'run'))
  with pytest.raises(pretrained.PretrainedError, match='compose_with_pretrained_run'):
    pretrained.composition(params_file, _data(), compose=False)
  record = pretrained.composition(params_file, _data(), compose=True)
  assert record['earlier_run'] and record['earlier_epsilon'] == 2.0
  assert 'compose' in record['assumption']
  # The run's workdir or its checkpoints/ folder are found the same way.
  os.makedirs(tmp_path / 'run' / 'checkpoints' / '7')
  with pytest.raises(pretrained.PretrainedError, match='same dataset'):
    pretrained.composition(str(tmp_path / 'run' / 'checkpoints' / '7'), _data(), False)


def test_a_non_private_run_on_the_same_data_is_refused_even_when_composed(tmp_path):
  params_file = _earlier_run(str(tmp_path / 'run'), non_private=True)
  with pytest.raises(pretrained.PretrainedError, match='WITHOUT privacy'):
    pretrained.composition(params_file, _data(), compose=True)


def test_other_data_and_outside_parameters_are_recorded_with_their_assumption(tmp_path):
  other = pretrained.composition(_earlier_run(str(tmp_path / 'a'), dataset='mnist'),
                                 _data(), compose=False)
  assert other['earlier_run'] and 'disjoint' in other['assumption']
  folder_a = _earlier_run(str(tmp_path / 'b'), dataset='npz', path=str(tmp_path / 'x.npz'))
  same_name_other_file = pretrained.composition(
      folder_a, _data('npz', str(tmp_path / 'y.npz')), compose=False)
  assert 'disjoint' in same_name_other_file['assumption']
  with pytest.raises(pretrained.PretrainedError):
    pretrained.composition(folder_a, _data('npz', str(tmp_path / 'x.npz')), False)
  outside = str(tmp_path / 'public' / 'p.npz')
  os.makedirs(os.path.dirname(outside))
  pretrained.save_params(outside, _params(3))
  record = pretrained.composition(outside, _data(), compose=False)
  assert record == {'path': outside, 'assumption': record['assumption']}
  assert 'public data' in record['assumption']


def test_fine_tuning_on_the_same_data_reports_the_composed_total(tmp_path):
  """Through the trainer: a second run from the first run's workdir on the same data
  is refused, then with the switch its privacy.json/.md give the sum."""
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification import run_files  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.training.num_steps = 2
  config.training.batch_size = 64
  config.privacy.noise_multiplier = 3.0
  config.model.kwargs.channels = (4,)
  first = str(tmp_path / 'first')
  loop.train(config, first)
  eps1 = run_files.read_json(first, run_files.PRIVACY)['epsilon']
  config.model.pretrained_path = first
  with pytest.raises(config_lib.ConfigError, match='compose_with_pretrained_run'):
    loop.train(config, str(tmp_path / 'refused'))
  config.privacy.compose_with_pretrained_run = True
  second = str(tmp_path / 'second')
  loop.train(config, second)
  privacy = run_files.read_json(second, run_files.PRIVACY)
  assert privacy['pretrained']['earlier_epsilon'] == eps1
  assert privacy['total_epsilon_with_pretrained'] == pytest.approx(
      eps1 + privacy['epsilon'])
  assert privacy['total_delta_with_pretrained'] == pytest.approx(2e-5)
  with open(os.path.join(second, run_files.PRIVACY_MD)) as f:
    assert 'basic composition' in f.read()
