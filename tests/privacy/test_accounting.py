"""Our epsilon is dp-accounting's for the batch selection's event; calibration inverts
it; the ledger is a pure function of the steps taken."""
import math

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import pytest

from image_classification.privacy import accounting
from image_classification.privacy import batch_selection as bs


def _reference_poisson(sigma, q, steps, delta, kind):
  acc = (rdp.RdpAccountant() if kind == 'rdp' else pld.PLDAccountant())
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
  return acc.get_epsilon(delta)


def _epsilon(selection, sigma, steps, delta=1e-5, accountant='rdp'):
  return accounting.epsilon(selection.dp_event(sigma, steps), delta, accountant,
                            selection.neighboring_relation)


@pytest.mark.parametrize('kind', ['rdp', 'pld'])
@pytest.mark.parametrize('sigma,steps', [(10.0, 875), (3.0, 300), (1.1, 50)])
def test_poisson_epsilon_matches_dp_accounting(kind, sigma, steps):
  ours = _epsilon(bs.PoissonSampling(50000, 4096), sigma, steps, accountant=kind)
  ref = _reference_poisson(sigma, 4096 / 50000, steps, 1e-5, kind)
  assert ours == pytest.approx(ref, rel=1e-9)


def test_paper_setting_matches_published_accounting():
  # De et al. 2022 WRN-16-4 at eps=1: sigma=10, 875 steps, B=4096, N=50000 (RDP 0.988).
  assert _epsilon(bs.PoissonSampling(50000, 4096), 10.0, 875) == pytest.approx(
      0.9877, abs=1e-3)


def test_fixed_batches_use_replace_one_and_half_sigma():
  """Replace-one moves the clipped sum by 2C, so dp-accounting must see sigma / 2."""
  sigma, n, b, steps, delta = 4.0, 10000, 500, 200, 1e-5
  fixed = bs.FixedSizeSampling(n, b)
  acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.SampledWithoutReplacementDpEvent(
          n, b, dp_accounting.GaussianDpEvent(sigma / 2)), steps))
  assert _epsilon(fixed, sigma, steps, delta) == pytest.approx(acc.get_epsilon(delta))
  assert fixed.neighboring_relation == 'replace_one'
  # And it is strictly more conservative than treating sigma as the multiplier.
  assert _epsilon(fixed, sigma, steps, delta) > _epsilon(bs.PoissonSampling(n, b), sigma,
                                                         steps, delta)


def test_pld_refuses_fixed_batches():
  with pytest.raises(accounting.UnsupportedEventError, match='pld'):
    _epsilon(bs.FixedSizeSampling(1000, 100), 2.0, 10, accountant='pld')
  assert issubclass(accounting.UnsupportedEventError, ValueError)


def test_an_event_under_the_wrong_relation_is_refused():
  """Sampling without replacement is only defined under replace-one: accounting it
  under add/remove would be a modelling error, never a number."""
  event = bs.FixedSizeSampling(1000, 100).dp_event(2.0, 10)
  with pytest.raises(accounting.UnsupportedEventError, match='add_or_remove_one'):
    accounting.epsilon(event, 1e-5, 'rdp', 'add_or_remove_one')


def test_unknown_accountant_names_the_choices():
  with pytest.raises(ValueError, match="'rdp', 'pld'"):
    accounting.make_accountant('moments', 'add_or_remove_one')


@pytest.mark.parametrize('kind,selection', [('rdp', bs.PoissonSampling(50000, 4096)),
                                            ('pld', bs.PoissonSampling(50000, 4096)),
                                            ('rdp', bs.FixedSizeSampling(50000, 4096))])
@pytest.mark.parametrize('target', [1.0, 4.0])
def test_calibration_inverts_epsilon(kind, selection, target):
  steps, delta = 300, 1e-5
  sigma = accounting.calibrate_noise_multiplier(
      target, delta, lambda s: selection.dp_event(s, steps), kind,
      selection.neighboring_relation)
  eps = _epsilon(selection, sigma, steps, delta, kind)
  assert eps <= target  # the safe side, always
  assert eps == pytest.approx(target, rel=2e-3)
  assert _epsilon(selection, sigma * 0.995, steps, delta, kind) > target


def test_paper_noise_multiplier_for_eps1():
  selection = bs.PoissonSampling(50000, 4096)
  sigma = accounting.calibrate_noise_multiplier(
      1.0, 1e-5, lambda s: selection.dp_event(s, 875))
  assert sigma == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize('selection', [bs.PoissonSampling(1437, 256),
                                       bs.FixedSizeSampling(1437, 256),
                                       bs.CyclicPoissonSampling(1437, 64, 4)], ids=repr)
def test_ledger_matches_direct_composition_and_is_monotone(selection):
  ledger = accounting.Ledger(selection, 2.0, 1e-5)
  previous = 0.0
  for steps in (1, 10, 100, 300):
    # Exactly: the ledger composes the same event (a resume must see the same value).
    assert ledger.epsilon(steps) == _epsilon(selection, 2.0, steps)
    assert ledger.epsilon(steps) >= previous
    previous = ledger.epsilon(steps)
  assert ledger.epsilon(300) > ledger.epsilon(1)
  assert ledger.epsilon(0) == 0.0
  assert math.isinf(accounting.Ledger(bs.PoissonSampling(10, 2), 0.0, 1e-5).epsilon(3))


def test_bandmf_ledger_counts_rounds_of_b_steps():
  """Cyclic sampling with b bands: ceil(T / b) Poisson rounds at rate b B / N."""
  cyclic = accounting.Ledger(bs.CyclicPoissonSampling(1437, 64, 4), 2.0, 1e-5)
  rounds = bs.PoissonSampling(1437, 4 * 64)
  for steps in (1, 4, 5, 40):
    assert cyclic.epsilon(steps) == _epsilon(rounds, 2.0, math.ceil(steps / 4))


def test_calibration_rejects_bad_targets():
  with pytest.raises(ValueError, match='target_epsilon'):
    accounting.calibrate_noise_multiplier(
        0.0, 1e-5, bs.PoissonSampling(1000, 100).dp_event)
