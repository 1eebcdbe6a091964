"""The plan (image_classification/plan.py) builds the mechanism's objects from
config.privacy alone, and they agree with the figures the plan reports."""
import dataclasses

import pytest

from configs import quickstart
from image_classification import plan as plan_lib
from image_classification.privacy import bandmf
from image_classification.privacy import batch_selection as bs
from image_classification.privacy import privatizers


def _plan(n=1437, **privacy):
  config = quickstart.get_config()
  config.training.num_steps = 40
  config.privacy.noise_multiplier = 2.0  # given, not calibrated: fast
  config.privacy.target_epsilon = 1e3
  for k, v in privacy.items():
    config.privacy[k] = v
  return plan_lib.make_plan(config, n)


@pytest.mark.parametrize('privacy,cls', [
    ({}, bs.PoissonSampling),
    ({'sampling': 'fixed'}, bs.FixedSizeSampling),
    ({'mechanism': 'bandmf', 'num_bands': 2}, bs.CyclicPoissonSampling),
])
def test_the_plan_reports_what_its_objects_do(privacy, cls):
  plan = _plan(**privacy)
  selection = plan.batch_selection(seed=7)
  assert type(selection) is cls and selection.seed == 7
  assert selection.sampling_rate == plan.sampling_rate
  assert selection.neighboring_relation == plan.neighboring_relation
  assert plan.ledger().epsilon(plan.steps) == plan.epsilon
  assert '9876543' not in repr(plan.batch_selection(seed=9876543))


def test_privatizers_and_their_descriptions():
  plan = _plan()
  assert plan.privatizer() == privatizers.GaussianPrivatizer(2.0 * plan.clipping_norm)
  assert plan.to_json()['mechanism'].startswith('DP-SGD: per-example clipping')
  non_private = dataclasses.replace(plan, non_private=True)
  assert non_private.privatizer() == privatizers.GaussianPrivatizer(0.0)
  assert non_private.to_json()['mechanism'].startswith('non-private')
  banded = _plan(mechanism='bandmf', num_bands=2)
  with pytest.raises(ValueError, match='no strategy'):
    banded.privatizer()
  banded = banded.with_strategy()
  assert isinstance(banded.privatizer(), bandmf.BandMFPrivatizer)
  d = banded.to_json()
  assert d['mechanism'].startswith('BandMF') and 'b = 2 groups' in d['participation']
  # b = 1 is DP-SGD's noise (no state), still described and accounted as BandMF.
  one = _plan(mechanism='bandmf', num_bands=1).with_strategy()
  assert isinstance(one.privatizer(), privatizers.GaussianPrivatizer)


def test_resume_fields_are_the_mechanism_fields_of_the_plan():
  assert plan_lib.RESUME_FIELDS == (
      'noise_multiplier', 'clipping_norm', 'sampling', 'sampling_rate',
      'expected_batch_size', 'steps', 'delta', 'accountant', 'dataset_size',
      'non_private', 'mechanism_name', 'num_bands', 'strategy_coefs')
  # What is reported or derived (epsilon, the noise std per step, the secret switch)
  # is not part of what a resume compares.
  for name in ('epsilon', 'target_epsilon', 'neighboring_relation', 'noise_std_per_step'):
    assert name not in plan_lib.RESUME_FIELDS


def test_dpsgd_ignores_bands_and_fixed_size_pld_is_refused():
  assert _plan().num_bands == 1
  with pytest.raises(plan_lib.PlanError, match="config.privacy.accountant='pld'"):
    config = quickstart.get_config()
    config.privacy.sampling, config.privacy.accountant = 'fixed', 'pld'
    plan_lib.validate_privacy(config)


def test_each_privatizer_module_registers_itself_once():
  """'dpsgd' and 'bandmf' come from their own modules' @register; a second
  registration of a name is refused, so a new module cannot silently replace one."""
  assert privatizers.PRIVATIZERS['dpsgd'] is privatizers.GaussianPrivatizer
  assert privatizers.PRIVATIZERS['bandmf'] is bandmf.BandMFPrivatizer
  with pytest.raises(ValueError, match="'bandmf' is registered twice"):
    privatizers.register('bandmf')(privatizers.GaussianPrivatizer)

  @privatizers.register('test_only')
  class _Other(privatizers.GaussianPrivatizer):
    pass

  try:
    assert privatizers.PRIVATIZERS['test_only'] is _Other
  finally:
    del privatizers.PRIVATIZERS['test_only']
