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
from image_classification.reporting import round_up
from image_classification.training import dp_step
from image_classification.trained import pretrained


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
  assert record == {'path': outside, 'assumption': record['assumption'],
                    'lineage': [{'path': outside, 'platform_run': False, 'generation': 1,
                                 'composed': False,
                                 'assumption': record['assumption']}]}
  assert 'public data' in record['assumption']


# ------------------------------------------------------------------ lineage
def _privacy_json(folder):
  from image_classification.workdir import run_files  # pylint: disable=g-import-not-at-top
  return run_files.read_json(folder, run_files.PRIVACY)


def _chain_run(folder, parent, dataset='digits', path='', epsilon=1.0):
  """A run's files as this platform writes them, fine-tuned from ``parent``:
  its lineage gathered by composition() (not written by hand)."""
  import json  # pylint: disable=g-import-not-at-top
  record = (pretrained.composition(parent, _data(dataset, path), compose=True)
            if parent else {'lineage': []})
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'data': {'name': dataset, 'path': path},
               'model': {'pretrained_path': parent}}, f)
  with open(os.path.join(folder, 'privacy.json'), 'w') as f:
    json.dump({'epsilon': epsilon, 'delta': 1e-5, 'non_private': False,
               'lineage': record['lineage']}, f)
  return folder


def test_lineage_follows_every_ancestor_whatever_its_data(tmp_path):
  """A (digits) -> B (mnist) -> C (digits) -> D (npz x) -> E: every ancestor is
  recorded, nearest first; E on digits composes with C and A, not B or D."""
  a = _chain_run(str(tmp_path / 'a'), None, epsilon=1.0)
  b = _chain_run(str(tmp_path / 'b'), a, dataset='mnist', epsilon=2.0)
  c = _chain_run(str(tmp_path / 'c'), b, epsilon=4.0)
  d = _chain_run(str(tmp_path / 'd'), c, dataset='npz', path=str(tmp_path / 'x.npz'),
                 epsilon=8.0)
  record = pretrained.composition(d, _data(), compose=True)
  lineage = record['lineage']
  assert [(x['path'], x['generation']) for x in lineage] == [(d, 1), (c, 2), (b, 3),
                                                             (a, 4)]
  assert [x['composed'] for x in lineage] == [False, True, False, True]
  assert [x['dataset']['name'] for x in lineage] == ['npz', 'digits', 'mnist', 'digits']
  assert lineage[0]['dataset']['path'] == os.path.realpath(tmp_path / 'x.npz')
  assert 'assumed disjoint' in lineage[0]['assumption']
  assert pretrained.composed_total(lineage, 0.5, 1e-5) == pytest.approx((5.5, 3e-5),
                                                                        rel=1e-12)
  # D's own record saw A, B, C against npz: nothing composed there.
  assert [x['composed'] for x in _privacy_json(d)['lineage']] == [False, False, False]
  # On npz x, the same chain composes with D only; on mnist with B only.
  on_x = pretrained.composition(d, _data('npz', str(tmp_path / 'x.npz')), True)
  assert [x['composed'] for x in on_x['lineage']] == [True, False, False, False]
  on_mnist = pretrained.composition(d, _data('mnist'), True)
  assert pretrained.composed_total(on_mnist['lineage'], 1.0, 1e-5) == pytest.approx(
      (3.0, 2e-5), rel=1e-12)


def test_a_same_data_ancestor_anywhere_in_the_chain_is_refused_unless_composed(tmp_path):
  a = _chain_run(str(tmp_path / 'a'), None, epsilon=1.0)
  b = _chain_run(str(tmp_path / 'b'), a, dataset='mnist', epsilon=2.0)
  with pytest.raises(pretrained.PretrainedError) as error:
    pretrained.composition(b, _data(), compose=False)  # B is on mnist, A on digits
  message = str(error.value)
  assert 'compose_with_pretrained_run' in message and repr(a) in message
  assert '2 generations up' in message and 'epsilon=1.0' in message
  # No same-data ancestor: nothing to refuse, nothing composed.
  assert pretrained.composition(b, _data('cifar10'), compose=False)['lineage'][1][
      'composed'] is False


def test_a_non_private_ancestor_on_the_same_data_is_refused_however_far(tmp_path):
  a = _earlier_run(str(tmp_path / 'a'), non_private=True)  # digits, no privacy
  b = _chain_run(str(tmp_path / 'b'), a, dataset='mnist', epsilon=2.0)
  c = _chain_run(str(tmp_path / 'c'), b, dataset='mnist', epsilon=2.0)
  with pytest.raises(pretrained.PretrainedError, match='WITHOUT privacy') as error:
    pretrained.composition(c, _data(), compose=True)
  assert '3 generations up' in str(error.value)


def test_a_privacy_json_without_lineage_is_followed_on_disk(tmp_path):
  """Runs written before lineages were recorded: the chain continues from the
  parent's config.json pretrained_path, or ends with its 'pretrained' record."""
  import json  # pylint: disable=g-import-not-at-top
  a = _chain_run(str(tmp_path / 'a'), None, epsilon=1.0)
  b = str(tmp_path / 'b')
  os.makedirs(b)
  with open(os.path.join(b, 'config.json'), 'w') as f:
    json.dump({'data': {'name': 'digits'}, 'model': {'pretrained_path': a}}, f)
  with open(os.path.join(b, 'privacy.json'), 'w') as f:
    json.dump({'epsilon': 2.0, 'delta': 1e-5, 'pretrained': {
        'path': a, 'earlier_run': True, 'earlier_dataset': 'digits',
        'earlier_epsilon': 1.0, 'earlier_delta': 1e-5}}, f)
  lineage = pretrained.composition(b, _data(), compose=True)['lineage']
  assert [(x['path'], x['composed']) for x in lineage] == [(b, True), (a, True)]
  os.rename(a, a + '_gone')  # the grandparent's files are gone: its record remains
  lineage = pretrained.composition(b, _data(), compose=True)['lineage']
  assert [(x['path'], x['epsilon'], x['composed']) for x in lineage] == [
      (b, 2.0, True), (a, 1.0, True)]


def _tiny_config():
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.training.num_steps = 2
  config.training.batch_size = 64
  config.training.eval_every_steps = 0
  config.privacy.noise_multiplier = 3.0
  config.model.kwargs.channels = (4,)
  return config


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
  """A tiny DP run on digits, the root of the chains below."""
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('chain') / 'first')
  loop.train(_tiny_config(), workdir)
  return workdir


def test_fine_tuning_chains_of_three_and_four_report_the_exact_total(
    first_run, tmp_path, capsys):
  """Through the trainer: A -> B -> C -> D on the same data. C's total is
  eps_A + eps_B + eps_C and D's adds eps_D (deltas likewise), in privacy.json,
  summary.json, export/params.json, the done line and privacy.md."""
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification.workdir import run_files  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  config = _tiny_config()
  config.model.pretrained_path = first_run
  with pytest.raises(config_lib.ConfigError, match='compose_with_pretrained_run'):
    loop.train(config, str(tmp_path / 'refused'))
  config.privacy.compose_with_pretrained_run = True
  chain = [first_run]
  for name in ('b', 'c', 'd'):
    config.model.pretrained_path = chain[-1]
    chain.append(str(tmp_path / name))
    loop.train(config, chain[-1])
  own = [_privacy_json(w)['epsilon'] for w in chain]
  assert all(e > 0 for e in own)
  out = capsys.readouterr().out
  for length in (3, 4):
    workdir = chain[length - 1]
    privacy = _privacy_json(workdir)
    assert [a['path'] for a in privacy['lineage']] == chain[length - 2::-1]
    assert all(a['composed'] for a in privacy['lineage'])
    assert privacy['pretrained']['earlier_epsilon'] == own[length - 2]
    assert privacy['total_epsilon_with_pretrained'] == pytest.approx(
        sum(own[:length]), rel=1e-12)
    assert privacy['total_delta_with_pretrained'] == pytest.approx(
        length * 1e-5, rel=1e-12)
    summary = run_files.read_json(workdir, run_files.SUMMARY)
    exported = run_files.read_json(os.path.join(workdir, run_files.EXPORT),
                                   run_files.PARAMS_INFO)
    for record in (summary, exported):
      assert record['epsilon'] == privacy['epsilon']
      assert record['total_epsilon_with_pretrained'] == \
          privacy['total_epsilon_with_pretrained']
      assert record['total_delta_with_pretrained'] == \
          privacy['total_delta_with_pretrained']
    total = privacy['total_epsilon_with_pretrained']
    assert (f'total with {length - 1} earlier run(s) on the same data (basic '
            f'composition): (epsilon={round_up.round_up(total, decimals=3)}, '
            f'delta={length}e-05)') in out
    with open(os.path.join(workdir, run_files.PRIVACY_MD)) as f:
      text = f.read()
    assert f'Total with the {length - 1} earlier run(s) on the same data' in text
    assert f'epsilon = {round_up.round_up(total, 4)}, delta = {length}e-05' in text
    for generation, ancestor in enumerate(chain[length - 2::-1], start=1):
      assert (f'generation {generation}: `{ancestor}`, trained on digits') in text
    assert text.count('**composed** with it') == length - 1
  # The first run composes with nothing: no total anywhere.
  assert 'total_epsilon_with_pretrained' not in _privacy_json(first_run)
  assert _privacy_json(first_run)['lineage'] == []


def test_a_chain_through_another_dataset_composes_with_the_first_run(
    first_run, tmp_path, capsys):
  """A (digits) -> B (an npz of other images) -> C (digits): C composes with A,
  and B is named as assumed disjoint."""
  from image_classification.workdir import run_files  # pylint: disable=g-import-not-at-top
  from image_classification.data.readers import digits  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  other = digits.load().test  # images the digits run never trained on
  npz = str(tmp_path / 'other.npz')
  np.savez(npz, x_train=other.images[:200], y_train=other.labels[:200],
           x_test=other.images[200:], y_test=other.labels[200:])
  config = _tiny_config()
  config.data.name, config.data.path, config.data.num_classes = 'npz', npz, 10
  config.model.pretrained_path = first_run
  b = str(tmp_path / 'b')
  loop.train(config, b)  # other data: no switch needed, nothing composed
  privacy_b = _privacy_json(b)
  assert 'total_epsilon_with_pretrained' not in privacy_b
  assert [a['composed'] for a in privacy_b['lineage']] == [False]
  c = str(tmp_path / 'c')
  config = _tiny_config()
  config.model.pretrained_path = b
  config.privacy.compose_with_pretrained_run = True
  loop.train(config, c)
  privacy = _privacy_json(c)
  assert [(a['path'], a['composed']) for a in privacy['lineage']] == [
      (b, False), (first_run, True)]
  eps_a = _privacy_json(first_run)['epsilon']
  assert privacy['total_epsilon_with_pretrained'] == pytest.approx(
      eps_a + privacy['epsilon'], rel=1e-12)
  assert privacy['total_delta_with_pretrained'] == pytest.approx(2e-5, rel=1e-12)
  exported = run_files.read_json(os.path.join(c, run_files.EXPORT), run_files.PARAMS_INFO)
  assert exported['total_epsilon_with_pretrained'] == \
      privacy['total_epsilon_with_pretrained']
  assert 'total with 1 earlier run(s) on the same data' in capsys.readouterr().out
  with open(os.path.join(c, run_files.PRIVACY_MD)) as f:
    text = f.read()
  assert (f'generation 1: `{b}`, trained on npz at {os.path.realpath(npz)}') in text
  assert 'other data: **assumed disjoint** from this training set, not composed' in text
  assert f'generation 2: `{first_run}`, trained on digits' in text
  assert text.count('**composed** with it') == 1


def test_a_relative_data_path_is_recognised_from_another_directory(
    tmp_path, monkeypatch):
  """A parent trained on 'faces.npz' launched from project/, a child on
  'project/faces.npz' launched from its parent folder: the same file, so the child is
  refused unless composed, and its total counts the parent (privacy.json records the
  real path where the parent ran; config.json keeps the path as typed). A record
  without it, whose relative path cannot be resolved, is assumed the same data."""
  import json  # pylint: disable=g-import-not-at-top
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  from image_classification.data.readers import digits  # pylint: disable=g-import-not-at-top
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  project = tmp_path / 'project'
  project.mkdir()
  images = digits.load().test
  np.savez(project / 'faces.npz', x_train=images.images[:200], y_train=images.labels[:200],
           x_test=images.images[200:], y_test=images.labels[200:])
  config = _tiny_config()
  config.data.name, config.data.path, config.data.num_classes = 'npz', 'faces.npz', 10
  monkeypatch.chdir(project)
  loop.train(config, 'parent')
  parent = str(project / 'parent')
  assert _privacy_json(parent)['dataset_identity'] == {
      'name': 'npz', 'path': os.path.realpath(project / 'faces.npz')}
  monkeypatch.chdir(tmp_path)
  config.data.path = os.path.join('project', 'faces.npz')
  config.model.pretrained_path = parent
  with pytest.raises(config_lib.ConfigError, match='compose_with_pretrained_run'):
    loop.train(config, str(tmp_path / 'refused'))
  config.privacy.compose_with_pretrained_run = True
  loop.train(config, str(tmp_path / 'child'))
  child = _privacy_json(str(tmp_path / 'child'))
  assert [a['composed'] for a in child['lineage']] == [True]
  assert child['total_epsilon_with_pretrained'] == pytest.approx(
      _privacy_json(parent)['epsilon'] + child['epsilon'], rel=1e-12)
  # A parent's privacy.json from before the identity was recorded: unresolvable, so
  # assumed the same data (refused unless composed), never "other data".
  with open(os.path.join(parent, 'privacy.json')) as f:
    record = json.load(f)
  del record['dataset_identity']
  with open(os.path.join(parent, 'privacy.json'), 'w') as f:
    json.dump(record, f)
  with pytest.raises(pretrained.PretrainedError, match='same dataset'):
    pretrained.composition(parent, _data('npz', os.path.join('project', 'other.npz')),
                           compose=False)


def test_an_unfinished_ancestor_is_charged_its_whole_planned_budget(tmp_path):
  """A parent stopped at step 5 of 20 may train on after the child starts from its
  weights: the child's total counts the parent's target epsilon, not the 5 steps."""
  import json  # pylint: disable=g-import-not-at-top
  a = _chain_run(str(tmp_path / 'a'), None, epsilon=1.0)
  with open(os.path.join(a, 'privacy.json')) as f:
    record = json.load(f)
  record.update(steps_taken=5, steps=20, target_epsilon=4.0)
  with open(os.path.join(a, 'privacy.json'), 'w') as f:
    json.dump(record, f)
  lineage = pretrained.composition(a, _data(), compose=True)['lineage']
  assert lineage[0]['epsilon'] == 4.0 and lineage[0]['charged_planned_budget']
  assert pretrained.composed_total(lineage, 0.5, 1e-5)[0] == pytest.approx(4.5)
  record.update(steps_taken=20)  # finished: its own epsilon
  with open(os.path.join(a, 'privacy.json'), 'w') as f:
    json.dump(record, f)
  assert pretrained.composition(a, _data(), compose=True)['lineage'][0]['epsilon'] == 1.0


def test_unreadable_or_misfit_weights_fail_before_any_run_file_is_written(tmp_path):
  """A pretrained_path that is not a parameter file, or whose backbone does not fit
  the model, is refused before config.json or the secret is written, so the same
  --workdir runs once the path is fixed."""
  from image_classification.training import loop  # pylint: disable=g-import-not-at-top
  text = tmp_path / 'notes.txt'
  text.write_text('not weights')
  wide = str(tmp_path / 'wide.npz')
  pretrained.save_params(wide, _params(10, channels=(32, 64)))
  config = _tiny_config()
  workdir = str(tmp_path / 'run')
  for bad, message in ((str(text), 'notes.txt'), (wide, 'wide.npz')):
    config.model.pretrained_path = bad
    with pytest.raises(pretrained.PretrainedError, match=message):
      loop.train(config, workdir)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []
  good = str(tmp_path / 'good.npz')
  pretrained.save_params(good, _params(10, channels=(4,)))
  config.model.pretrained_path = good
  loop.train(config, workdir)
  assert _privacy_json(workdir)['pretrained_path'] == good
