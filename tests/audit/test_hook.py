"""The audit wired into a run (audit/hook.py): config fields, audit.json, the loop's
refusal of an audit without its hook, and two tiny real trainings (a memorising
non-private one must be caught; a very noisy one must stay under its epsilon)."""
import json
import math
import os

import jax
import numpy as np
import pytest

from configs import quickstart_audit
from configs import quickstart_audit_nonprivate
from image_classification import runs
from image_classification import config as config_lib
from image_classification.audit import canaries as canaries_lib
from image_classification.audit import hook
from image_classification.audit import statistics
from image_classification.models import registry
from image_classification import plan as plan_lib
from image_classification.privacy import batch_selection
from image_classification.training import experiment
from tests.audit.canary_helpers import indexed_splits
from tests.audit.canary_helpers import NUM_CLASSES
from tests.training import wiring_helpers

REQUIRED_KEYS = ('epsilon_lower_bound', 'epsilon', 'delta', 'num_canaries',
                 'confidence', 'method', 'non_private', 'score_summary')


def _config(num_canaries=40, seed=0, enabled=True):
  config = quickstart_audit.get_config()
  config.seed = seed
  config.audit.enabled = enabled
  config.audit.num_canaries = num_canaries
  return config


# ---------------------------------------------------------------- prepare
def test_disabled_audit_gives_no_hook():
  assert hook.for_config(_config(enabled=False)) is None


def test_prepare_draws_the_configured_canaries_from_the_seed_alone():
  data = indexed_splits(n=400)
  a = hook.for_config(_config(num_canaries=300, seed=3))
  out = a.prepare(data)
  expected, canaries = canaries_lib.prepare(data, 300, seed=3)
  assert a.canaries.num_canaries == 300
  np.testing.assert_array_equal(a.canaries.included, canaries.included)
  np.testing.assert_array_equal(out.train.indices, expected.train.indices)
  # Another run of the same experiment with other training settings: same draws.
  config = _config(num_canaries=300, seed=3)
  config.training.batch_size, config.training.num_steps = 32, 7
  config.privacy.target_epsilon = 1.0
  b = hook.for_config(config)
  b.prepare(data)
  np.testing.assert_array_equal(a.canaries.included, b.canaries.included)
  np.testing.assert_array_equal(a.canaries.source_indices, b.canaries.source_indices)
  np.testing.assert_array_equal(a.canaries.label_shifts, b.canaries.label_shifts)
  c = hook.for_config(_config(num_canaries=300, seed=4))
  c.prepare(data)
  assert np.mean(a.canaries.included != c.canaries.included) > 0.3


@pytest.mark.parametrize('field,value', [('num_canaries', 200),
                                         ('num_canaries', 500),
                                         ('canary_type', 'gradient')])
def test_bad_audit_fields_are_named(field, value):
  config = _config()
  config.audit[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'audit.{field}'):
    hook.for_config(config).prepare(indexed_splits(n=200))


def test_the_loop_refuses_an_audit_without_its_hook():
  """Silently training without the canaries would write no audit.json at all."""
  with pytest.raises(config_lib.ConfigError, match='audit'):
    experiment.Experiment(_config(), dry_run=True, dataset=indexed_splits(n=200))
  config = _config(num_canaries=40)
  config.training.batch_size = 16
  exp = runs.check(config, dataset=indexed_splits(n=200))
  assert exp.dataset_size == exp.audit.canaries.train_size == exp.plan.dataset_size


# ---------------------------------------------------------------- finish
def _prepared(config, data):
  """(the audited dataset, the hook that made it)."""
  audit = hook.for_config(config)
  return audit.prepare(data), audit


def _plan(config, setup, **overrides):
  """A plan as make_plan would give it, without calibrating sigma (slow at small N)."""
  fields = dict(
      noise_multiplier=1.0, clipping_norm=1.0, sampling='poisson',
      sampling_rate=16 / setup.train_size, expected_batch_size=16, steps=50,
      delta=config.privacy.delta, epsilon=3.5, target_epsilon=4.0, accountant='rdp',
      neighboring_relation=batch_selection.ADD_OR_REMOVE_ONE, dataset_size=setup.train_size)
  return plan_lib.PrivacyPlan(**{**fields, **overrides})


def test_finish_writes_audit_json_with_every_key(tmp_path):
  config = _config(num_canaries=40)
  data, audit = _prepared(config, indexed_splits(n=120))
  setup = audit.canaries
  model = registry.build('cnn', NUM_CLASSES, channels=(4,), flatten=True)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)))['params']
  plan = _plan(config, setup)
  out = audit.finish(model.apply, params, data.mean, data.std, plan, str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    written = json.load(f)
  for key in REQUIRED_KEYS + ('num_included', 'bound_exceeds_accountant',
                              'comparable_with_accountant', 'neighboring_relation',
                              'dataset_size', 'computed_without_noise'):
    assert key in written and key in out, key
  assert written['num_canaries'] == 40 and written['delta'] == plan.delta
  assert written['confidence'] == config.audit.confidence
  assert written['method'] == statistics.METHOD and written['non_private'] is False
  assert written['epsilon'] == pytest.approx(plan.epsilon)
  assert written['dataset_size'] == setup.train_size
  assert set(written['score_summary']) == {'included', 'excluded'}
  assert written['score_summary']['included']['count'] == setup.num_included
  assert written['comparable_with_accountant'] is True
  assert written['accountant_neighboring_relation'] == plan.neighboring_relation

  # Fixed-size batches are accounted under replace-one: the plan says so, not the
  # config, and audit.json marks the comparison as not like for like.
  out = audit.finish(model.apply, params, data.mean, data.std,
                     _plan(config, setup, sampling='fixed',
                           neighboring_relation=batch_selection.REPLACE_ONE), str(tmp_path))
  assert out['comparable_with_accountant'] is False
  assert out['accountant_neighboring_relation'] == batch_selection.REPLACE_ONE

  # Non-private: epsilon is null in the file and the report says so.
  out = audit.finish(model.apply, params, data.mean, data.std,
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
  data, audit = _prepared(config, indexed_splits(n=200))
  setup = audit.canaries
  _, canary_labels, _ = setup.canaries()
  table = np.zeros((200, NUM_CLASSES), np.float32)
  for i, y, member in zip(setup.source_indices, canary_labels, setup.included):
    table[i, y] = 20.0 if member else -20.0

  def oracle_apply(variables, x, is_training=False):
    del is_training
    pixels = jax.numpy.round((x * 0.5 + 0.5) * 255.0)  # undo standardise
    ids = (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 1, 0]).astype(int)
    return variables['params']['table'][ids]

  out = audit.finish(oracle_apply, {'table': table}, data.mean, data.std,
                     _plan(config, setup), str(tmp_path))
  # Any perfectly separating score gives the same guesses, hence the same bound.
  perfect = statistics.audit_from_scores(setup.included.astype(float),
                                         setup.included, 1e-5, config.audit.confidence)
  assert out['num_correct'] == out['num_guesses']
  assert out['epsilon_lower_bound'] == perfect['epsilon_lower_bound'] > 1.0
  assert out['canary_label_rate'] == {'included': 1.0, 'excluded': 0.0}
  with pytest.raises(ValueError, match='prepare'):
    audit.finish(oracle_apply, {'table': table}, data.mean, data.std,
                 _plan(config, setup, dataset_size=setup.train_size + 1), str(tmp_path))
  with pytest.raises(ValueError, match='prepare'):  # a hook that never prepared
    hook.for_config(config).finish(oracle_apply, {'table': table}, data.mean, data.std,
                                   _plan(config, setup), str(tmp_path))


# ---------------------------------------------------------------- real training
def _train_and_audit(config, workdir):
  """runs.train (the loop with the audit plug-in); audit.json, checked against the run."""
  summary = runs.train(config, workdir)
  with open(os.path.join(workdir, 'audit.json')) as f:
    out = json.load(f)
  with open(os.path.join(workdir, 'privacy.json')) as f:
    privacy = json.load(f)
  assert summary['non_private'] == out['non_private']
  assert summary['audit_epsilon_lower_bound'] == out['epsilon_lower_bound']
  # The plan was made after prepare: its N is the audited training split.
  assert privacy['dataset_size'] == out['dataset_size'] == (
      out['num_clean_train'] + out['num_included'])
  assert out['num_clean_train'] == config.data.max_train_examples - out['num_canaries']
  return out, privacy


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


def test_memorising_non_private_run_gets_a_positive_bound(tmp_path):
  config = _tiny(quickstart_audit_nonprivate.get_config())
  # The config's 1000 steps: the batches come from a fresh secret, and at 300 steps
  # the share of included canaries memorised was near 0.5 (0.49 in one run).
  config.training.num_steps = 1000
  out, _ = _train_and_audit(config, str(tmp_path))
  assert out['non_private'] and out['epsilon'] is None  # inf, written as null
  assert out['epsilon_lower_bound'] > 0.5, out
  assert out['canary_label_rate']['included'] > 0.5


def test_very_noisy_run_stays_under_its_epsilon(tmp_path):
  config = _tiny(quickstart_audit.get_config())
  config.privacy.noise_multiplier = 50.0
  config.privacy.target_epsilon = 1.0
  out, privacy = _train_and_audit(config, str(tmp_path))
  assert privacy['steps_taken'] == 300
  # The audit compares against the epsilon of what ran, recomputed here.
  eps = wiring_helpers.reference_epsilon(sigma=50.0, n=privacy['dataset_size'], b=64,
                                         steps=privacy['steps_taken'], delta=1e-5)
  assert not out['non_private'] and out['epsilon'] == pytest.approx(eps, rel=1e-6)
  assert out['epsilon_lower_bound'] <= out['epsilon']
  assert not out['bound_exceeds_accountant']
