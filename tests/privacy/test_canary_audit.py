"""The audit wired into a run: canaries in and out of the training split, membership
drawn apart from the training streams, audit.json, and two tiny real trainings (a
memorising non-private one must be caught; a very noisy one must stay under its
epsilon)."""
import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import quickstart_audit
from configs import quickstart_audit_nonprivate
from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.data import base
from image_classification.data import catalog
from image_classification.data import sources
from image_classification.models import registry
from image_classification.privacy import audit
from image_classification.privacy import batch_selection
from image_classification.privacy import canary_audit
from image_classification.training import evaluation
from image_classification.training import loop
from tests.training import wiring_helpers

NUM_CLASSES = 10
REQUIRED_KEYS = ('epsilon_lower_bound', 'epsilon', 'delta', 'num_canaries',
                 'confidence', 'method', 'non_private', 'score_summary')


def _indexed_splits(n=200, num_test=20):
  """Images whose pixel [0, 0] and [0, 1] spell their index, so we can trace them."""
  images = np.zeros((n, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n) // 256
  images[:, 0, 1, 0] = np.arange(n) % 256
  labels = (np.arange(n) * 7 % NUM_CLASSES).astype(np.int32)
  test = base.ArraySource(np.zeros((num_test, 4, 4, 1), np.uint8),
                          np.zeros(num_test, np.int32))
  return base.DatasetSplits(name='indexed', train=base.ArraySource(images, labels),
                            test=test, num_classes=NUM_CLASSES, mean=(0.5,), std=(0.5,))


def _ids(images):
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0].astype(int)


def _config(num_canaries=40, seed=0, enabled=True):
  config = quickstart_audit.get_config()
  config.seed = seed
  config.audit.enabled = enabled
  config.audit.num_canaries = num_canaries
  return config


# ---------------------------------------------------------------- prepare
def test_disabled_audit_leaves_the_dataset_alone():
  data = _indexed_splits()
  out, setup = canary_audit.prepare(_config(enabled=False), data)
  assert out is data and setup is None


def test_train_split_holds_clean_examples_and_exactly_the_included_canaries():
  data = _indexed_splits(n=200)
  out, setup = canary_audit.prepare(_config(num_canaries=60), data)
  m, k = setup.num_canaries, setup.num_included
  assert m == 60 and 0 < k < m
  assert out.test is data.test and out.num_classes == data.num_classes
  assert out.train.num_examples == setup.train_size == 200 - m + k

  images, labels = out.train.get(np.arange(out.train.num_examples))
  ids = _ids(images)
  assert len(set(ids.tolist())) == ids.size  # nothing appears twice
  canary_ids = setup.source_indices
  assert len(set(canary_ids.tolist())) == m
  in_ids, out_ids = canary_ids[setup.included], canary_ids[~setup.included]
  assert set(ids.tolist()) == (set(range(200)) - set(canary_ids.tolist())) | set(
      in_ids.tolist())
  assert not set(ids.tolist()) & set(out_ids.tolist())  # excluded: never trained on

  canary_images, canary_labels, true_labels = setup.canaries()
  np.testing.assert_array_equal(_ids(canary_images), canary_ids)
  np.testing.assert_array_equal(true_labels, data.train.labels[canary_ids])
  assert np.all(canary_labels != true_labels) and canary_labels.dtype == np.int32
  assert canary_labels.min() >= 0 and canary_labels.max() < NUM_CLASSES
  wrong = dict(zip(canary_ids.tolist(), canary_labels.tolist()))
  for i, y in zip(ids.tolist(), labels.tolist()):
    assert y == (wrong[i] if i in wrong else data.train.labels[i])
  # Reads are consistent: the same index gives the same (image, label) each time.
  idx = np.array([5, out.train.num_examples - 1, 0, 5])
  a, b = out.train.get(idx), out.train.get(idx)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[1][0], a[1][3])
  with pytest.raises(IndexError):
    out.train.get(np.array([out.train.num_examples]))


def test_wrong_labels_are_spread_over_the_other_classes():
  data = _indexed_splits(n=3000)
  _, setup = canary_audit.prepare(_config(num_canaries=2000), data)
  _, canary_labels, true_labels = setup.canaries()
  shifts = (canary_labels - true_labels) % NUM_CLASSES
  counts = np.bincount(shifts, minlength=NUM_CLASSES)
  assert counts[0] == 0
  assert counts[1:].min() > 2000 / 9 * 0.7  # about uniform over the 9 others
  assert 0.45 < setup.included.mean() < 0.55


def test_prepare_reads_no_pixels_so_dry_runs_work():
  config = _config(num_canaries=1000)
  config.data.name = 'cifar10'
  data = catalog.shape_only_splits(config.data)  # get() raises: no pixels
  out, setup = canary_audit.prepare(config, data)
  assert out.train.num_examples == 50_000 - 1000 + setup.num_included
  assert out.train.image_shape == (32, 32, 3)


@pytest.mark.parametrize('field,value', [('num_canaries', 200),
                                         ('num_canaries', 500),
                                         ('canary_type', 'gradient')])
def test_bad_audit_fields_are_named(field, value):
  config = _config()
  config.audit[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'audit.{field}'):
    canary_audit.prepare(config, _indexed_splits(n=200))


# ---------------------------------------------------------------- randomness
def test_membership_is_reproducible_from_the_seed():
  data = _indexed_splits(n=400)
  _, a = canary_audit.prepare(_config(num_canaries=300, seed=3), data)
  # Another run of the same experiment with other training settings: same draws.
  config = _config(num_canaries=300, seed=3)
  config.training.batch_size, config.training.num_steps = 32, 7
  config.privacy.target_epsilon = 1.0
  _, b = canary_audit.prepare(config, data)
  np.testing.assert_array_equal(a.included, b.included)
  np.testing.assert_array_equal(a.source_indices, b.source_indices)
  np.testing.assert_array_equal(a.label_shifts, b.label_shifts)
  _, c = canary_audit.prepare(_config(num_canaries=300, seed=4), data)
  assert np.mean(a.included != c.included) > 0.3


def test_membership_is_independent_of_the_training_streams():
  """Bits agree with the sampler's and the JAX keys' coin flips about half the time
  (50 seeds x 1000 bits: the standard error of the rate is 0.0022)."""
  m, agree_sampler, agree_jax = 1000, [], []
  for seed in range(50):
    bits = canary_audit.canary_draws(5000, m, NUM_CLASSES, seed)[2]
    np.testing.assert_array_equal(bits, audit.make_canary_membership(m, seed))
    for step in (0, 1):
      drawn = np.zeros(m, bool)
      drawn[batch_selection.PoissonSampling(m, m // 2, seed=seed).indices(step)] = True
      agree_sampler.append(np.mean(bits == drawn))
    coins = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(seed), 0.5, (m,)))
    agree_jax.append(np.mean(bits == coins))
  assert abs(np.mean(agree_sampler) - 0.5) < 0.01
  assert abs(np.mean(agree_jax) - 0.5) < 0.015
  assert max(agree_sampler) < 0.6 and max(agree_jax) < 0.6


# ---------------------------------------------------------------- finish
def _plan(config, setup, **overrides):
  """A plan as make_plan would give it, without calibrating sigma (slow at small N)."""
  fields = dict(
      noise_multiplier=1.0, clipping_norm=1.0, sampling='poisson',
      sampling_rate=16 / setup.train_size, expected_batch_size=16, steps=50,
      delta=config.privacy.delta, epsilon=3.5, target_epsilon=4.0, accountant='rdp',
      neighboring_relation='add_or_remove_one', dataset_size=setup.train_size)
  return plan_lib.PrivacyPlan(**{**fields, **overrides})


def test_finish_writes_audit_json_with_every_key(tmp_path):
  config = _config(num_canaries=40)
  data, setup = canary_audit.prepare(config, _indexed_splits(n=120))
  model = registry.build('cnn', NUM_CLASSES, channels=(4,), flatten=True)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)))['params']
  plan = _plan(config, setup)
  out = canary_audit.finish(setup, model.apply, params, data.mean, data.std, plan,
                            str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    written = json.load(f)
  for key in REQUIRED_KEYS + ('num_included', 'bound_exceeds_accountant',
                              'comparable_with_accountant', 'neighboring_relation',
                              'dataset_size', 'computed_without_noise'):
    assert key in written and key in out, key
  assert written['num_canaries'] == 40 and written['delta'] == plan.delta
  assert written['confidence'] == config.audit.confidence
  assert written['method'] == audit.METHOD and written['non_private'] is False
  assert written['epsilon'] == pytest.approx(plan.epsilon)
  assert written['dataset_size'] == setup.train_size
  assert set(written['score_summary']) == {'included', 'excluded'}
  assert written['score_summary']['included']['count'] == setup.num_included
  assert written['comparable_with_accountant'] is True

  # Non-private: epsilon is null in the file and the report says so.
  out = canary_audit.finish(setup, model.apply, params, data.mean, data.std,
                            _plan(config, setup, non_private=True, epsilon=math.inf,
                                  noise_multiplier=0.0), str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    written = json.load(f)
  assert written['epsilon'] is None and out['epsilon'] == math.inf
  assert written['non_private'] is True and 'NON-PRIVATE' in written['privacy']


def test_finish_scores_like_evaluation_and_refuses_a_plan_without_canaries(tmp_path):
  """The scores are the evaluation model's log p(canary label): an oracle model that
  reads the index pixels and puts mass on the wrong label of included canaries only
  is caught with the bound of a perfect separation."""
  config = _config(num_canaries=100)
  data, setup = canary_audit.prepare(config, _indexed_splits(n=200))
  _, canary_labels, _ = setup.canaries()
  table = np.zeros((200, NUM_CLASSES), np.float32)
  for i, y, member in zip(setup.source_indices, canary_labels, setup.included):
    table[i, y] = 20.0 if member else -20.0

  def oracle_apply(variables, x, is_training=False):
    del is_training
    pixels = jax.numpy.round((x * 0.5 + 0.5) * 255.0)  # undo standardise
    ids = (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 1, 0]).astype(int)
    return variables['params']['table'][ids]

  out = canary_audit.finish(setup, oracle_apply, {'table': table}, data.mean, data.std,
                            _plan(config, setup), str(tmp_path))
  # Any perfectly separating score gives the same guesses, hence the same bound.
  perfect = audit.audit_from_scores(setup.included.astype(float), setup.included,
                                    1e-5, config.audit.confidence)
  assert out['num_correct'] == out['num_guesses']
  assert out['epsilon_lower_bound'] == perfect['epsilon_lower_bound'] > 1.0
  assert out['canary_label_rate'] == {'included': 1.0, 'excluded': 0.0}
  with pytest.raises(ValueError, match='prepare'):
    canary_audit.finish(setup, oracle_apply, {'table': table}, data.mean, data.std,
                        _plan(config, setup, dataset_size=setup.train_size + 1),
                        str(tmp_path))


# ---------------------------------------------------------------- real training
def _train_and_audit(config, workdir, monkeypatch):
  """loop.train on the audited split, then finish() with the final eval params.

  The loop gets a copy of the config with the audit off, so this also works once
  loop.py calls prepare itself (it then leaves the prepared split alone).
  """
  data = sources.load_dataset(config.data)
  data, setup = canary_audit.prepare(config, data)
  captured = {}
  real_evaluate = evaluation.evaluate

  def evaluate(eval_fn, params, *args, **kwargs):
    captured['params'] = params
    return real_evaluate(eval_fn, params, *args, **kwargs)

  monkeypatch.setattr(evaluation, 'evaluate', evaluate)
  loop_config = ml_collections.ConfigDict(config.to_dict())
  loop_config.audit.enabled = False
  summary = loop.train(loop_config, workdir, dataset=data)
  plan = plan_lib.make_plan(config, data.train.num_examples)
  assert summary['non_private'] == plan.non_private
  assert json.load(open(os.path.join(workdir, 'privacy.json')))['dataset_size'] == (
      setup.train_size)
  model = registry.build(config.model.name, data.num_classes,
                         **config.model.kwargs.to_dict())
  return canary_audit.finish(setup, model.apply, captured['params'], data.mean,
                             data.std, plan, workdir)


def _tiny(config):
  """300 digits, 100 of them canaries; 300 steps of 64: a few seconds."""
  config.data.max_train_examples = 300
  config.data.max_test_examples = 100
  config.audit.num_canaries = 100
  config.training.batch_size = 64
  config.training.num_steps = 300
  config.training.log_every_steps = 300
  config.training.eval_batch_size = 500
  return config


def test_memorising_non_private_run_gets_a_positive_bound(tmp_path, monkeypatch):
  config = _tiny(quickstart_audit_nonprivate.get_config())
  out = _train_and_audit(config, str(tmp_path), monkeypatch)
  assert out['non_private'] and out['epsilon'] == math.inf
  assert out['epsilon_lower_bound'] > 0.5, out
  assert out['canary_label_rate']['included'] > 0.5


def test_very_noisy_run_stays_under_its_epsilon(tmp_path, monkeypatch):
  config = _tiny(quickstart_audit.get_config())
  config.privacy.noise_multiplier = 50.0
  config.privacy.target_epsilon = 1.0
  out = _train_and_audit(config, str(tmp_path), monkeypatch)
  with open(os.path.join(str(tmp_path), 'privacy.json')) as f:
    privacy = json.load(f)
  assert privacy['steps_taken'] == 300
  # The audit compares against the epsilon of what ran, recomputed here.
  eps = wiring_helpers.reference_epsilon(sigma=50.0, n=privacy['dataset_size'], b=64,
                                         steps=privacy['steps_taken'], delta=1e-5)
  assert not out['non_private'] and out['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert out['epsilon_lower_bound'] <= out['epsilon']
  assert not out['bound_exceeds_accountant']
