"""The gradient audit as a run hook (audit/gradient_hook.py): config errors, the
canaries sampled by the run's own batch selection through the real loop, audit.json,
and the WARNING when a (simulated) run leaks more than its plan."""
import json

import numpy as np
import pytest

from configs import quickstart_audit_gradient
from image_classification import runs
from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.audit import gradient_canaries
from image_classification.audit import gradient_hook
from image_classification.audit import hook
from image_classification.data import base
from image_classification.training import loop

KEYS = ('mode', 'analysis', 'num_canaries', 'confidence', 'epsilon_lower_bound',
        'epsilon_ceiling', 'bound_exceeds_accountant', 'epsilon', 'delta',
        'num_guesses', 'num_correct', 'bounds', 'ceilings', 'steps_observed',
        'computed_without_noise')


def _zeros_dataset(n=60, size=8):
  """Blank images: with the CNN's zero-initialised biases the head kernel's gradient
  of every real example is exactly 0 (tanh(0) features), so only canaries move it."""
  rng = np.random.default_rng(0)
  train = base.ArraySource(np.zeros((n, size, size, 1), np.uint8),
                           rng.integers(0, 10, n).astype(np.int32))
  test = base.ArraySource(np.zeros((10, size, size, 1), np.uint8),
                          np.zeros(10, np.int32))
  # Standardised with mean 0: the model sees exact zeros.
  return base.DatasetSplits(name='blank', train=train, test=test, num_classes=10,
                            mean=(0.0,), std=(1.0,))


def _tiny_config(num_canaries=20, steps=6, private=True):
  config = quickstart_audit_gradient.get_config('eps=4,m=%d' % num_canaries)
  config.model.kwargs.channels = (2,)  # head kernel: 8 * 8 * 2 * 10 = 1280 coordinates
  config.training.batch_size = 16
  config.training.num_steps = steps
  config.training.log_every_steps = steps
  config.training.ema.decay = 0.0
  config.training.per_example_grads = 'vmap'
  config.wandb.mode = 'disabled'
  config.privacy.insecure_seeded_noise = True
  if not private:
    config.privacy.allow_non_private = True
    config.privacy.noise_multiplier = 0.0
    config.training.optimizer.learning_rate = 1e-30  # the parameters stay put
    config.training.optimizer.momentum = 0.0
  return config


@pytest.mark.parametrize('field,value,match', [
    ('audit.mode', 'gradients', 'audit.mode'),
    ('audit.analysis', 'bayes', 'audit.analysis'),
    ('audit.score', 'loss', 'audit.score'),
    ('privacy.sampling', 'fixed', 'privacy.sampling'),
])
def test_bad_gradient_audit_fields_are_named(field, value, match):
  config = _tiny_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config, 1)


@pytest.mark.parametrize('field,value,match', [
    ('num_canaries', 1281, 'audit.num_canaries.*1280'),
    ('canary_parameter', 'head/kernal', 'audit.canary_parameter'),
])
def test_canaries_that_do_not_fit_the_model_fail_in_the_dry_run(field, value, match):
  config = _tiny_config()
  config.audit[field] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    runs.check(config, dataset=_zeros_dataset(n=2000))


def test_canaries_are_sampled_by_the_runs_own_batch_selection(tmp_path, monkeypatch):
  """Through loop.train, without noise and with the parameters held still: step t's
  observation at canary j is C exactly when the batch selection put j's slot in step
  t's batch, else 0; excluded canaries are never read; the accountant counts them."""
  reads = []
  original = gradient_canaries.CanarySlotSource.get

  def recording_get(self, indices, step=0):
    reads.append((step, np.asarray(indices).copy(), self.source.num_examples,
                  self.canary_ids))
    return original(self, indices, step)

  monkeypatch.setattr(gradient_canaries.CanarySlotSource, 'get', recording_get)
  config = _tiny_config(num_canaries=20, steps=6, private=False)
  audit = hook.for_config(config)
  loop.train(config, str(tmp_path), dataset=_zeros_dataset(), audit=audit)
  canaries = audit.canaries
  assert canaries.num_real == 60
  with open(tmp_path / 'privacy.json') as f:
    assert json.load(f)['dataset_size'] == 60 + canaries.num_included
  b = config.training.batch_size
  clip = config.privacy.clipping_norm
  assert sorted(audit.observations) == list(range(6))
  canary_ids = reads[0][3]  # the split's slots n, n+1, ... hold these canaries
  np.testing.assert_array_equal(canary_ids, np.flatnonzero(canaries.included))
  sampled_any = 0
  for step in range(6):
    slots = np.concatenate([idx for s, idx, _, _ in reads if s == step])
    ids = canary_ids[slots[slots >= 60] - 60]
    expected = np.zeros(canaries.num_canaries)
    expected[ids] = clip
    observed = np.asarray(audit.observations[step]) * b
    np.testing.assert_allclose(observed, expected, atol=1e-5)
    sampled_any += len(ids)
  assert sampled_any > 0
  with open(tmp_path / 'audit.json') as f:
    out = json.load(f)
  assert out['non_private'] and out['epsilon'] is None and out['mode'] == 'gradient'


def _simulated_finish(tmp_path, noise_scale, capsys):
  """A gradient audit's finish on observations drawn from the idealised run of its
  own plan (m = 2000, 100 steps), with noise ``noise_scale`` x the planned std."""
  config = quickstart_audit_gradient.get_config('eps=4,m=2000')
  config.training.num_steps = 100
  audit = hook.for_config(config)
  data = _zeros_dataset(n=1437)
  audit.prepare(data)
  plan = plan_lib.make_plan(config, audit.train_size)
  params = {'head': {'kernel': np.zeros((1024, 10), np.float32)}}
  audit.step_canaries(params, plan)
  rng = np.random.default_rng(1)
  q = plan.expected_batch_size / plan.dataset_size
  std = plan.noise_multiplier * plan.clipping_norm
  for t in range(plan.steps):
    sampled = (rng.random(2000) < q) & audit.included
    x = sampled * plan.clipping_norm + noise_scale * std * rng.standard_normal(2000)
    audit.observe(t, x / plan.expected_batch_size)
  capsys.readouterr()
  out = audit.finish(None, params, None, None, plan, str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    written = json.load(f)
  return out, written, capsys.readouterr().out


def test_audit_json_of_a_run_that_is_its_plan(tmp_path, capsys):
  out, written, printed = _simulated_finish(tmp_path, 1.0, capsys)
  for key in KEYS:
    assert key in written, key
  assert written['mode'] == 'gradient' and written['analysis'] == 'fdp'
  assert written['num_canaries'] == 2000 and written['confidence'] == 0.95
  assert 0 < written['epsilon_lower_bound'] <= written['epsilon']
  assert written['epsilon_lower_bound'] <= written['epsilon_ceiling']
  assert not written['bound_exceeds_accountant'] and 'WARNING' not in printed
  assert written['bounds']['llr']['fdp'] == written['epsilon_lower_bound']
  assert written['steps_observed'] == 100
  assert out['num_guesses_chosen_before_training']


def test_a_run_with_half_the_noise_is_flagged(tmp_path, capsys):
  _, written, printed = _simulated_finish(tmp_path, 0.5, capsys)
  assert written['bound_exceeds_accountant']
  assert written['epsilon_lower_bound'] > written['epsilon']
  assert 'WARNING' in printed and 'EXCEEDS' in printed


def test_the_number_of_guesses_depends_on_public_numbers_only():
  args = dict(num_canaries=2000, sampling_rate=0.2, noise_std=3.0, clipping_norm=1.0,
              steps=100, delta=1e-5, confidence=0.95, epsilon=4.0)
  k = gradient_hook.choose_num_guesses(**args)
  assert k == gradient_hook.choose_num_guesses(**args)
  assert 1 <= k <= 1000
