"""Our epsilon is dp-accounting's for the same event; calibration inverts it."""
import math

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import pytest

from image_classification.privacy import accounting


def _reference_poisson(sigma, q, steps, delta, kind):
  acc = (rdp.RdpAccountant() if kind == 'rdp' else pld.PLDAccountant())
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
  return acc.get_epsilon(delta)


@pytest.mark.parametrize('kind', ['rdp', 'pld'])
@pytest.mark.parametrize('sigma,steps', [(10.0, 875), (3.0, 300), (1.1, 50)])
def test_poisson_epsilon_matches_dp_accounting(kind, sigma, steps):
  m = accounting.Mechanism(sigma, 50000, 4096, 'poisson', kind)
  ours = accounting.epsilon(m, steps, 1e-5)
  ref = _reference_poisson(sigma, 4096 / 50000, steps, 1e-5, kind)
  assert ours == pytest.approx(ref, rel=1e-9)


def test_paper_setting_matches_published_accounting():
  # De et al. 2022 WRN-16-4 at eps=1: sigma=10, 875 steps, B=4096, N=50000 (RDP 0.988).
  m = accounting.Mechanism(10.0, 50000, 4096)
  assert accounting.epsilon(m, 875, 1e-5) == pytest.approx(0.9877, abs=1e-3)


def test_fixed_batches_use_replace_one_and_half_sigma():
  """Replace-one moves the clipped sum by 2C, so dp-accounting must see sigma / 2."""
  sigma, n, b, steps, delta = 4.0, 10000, 500, 200, 1e-5
  m = accounting.Mechanism(sigma, n, b, 'fixed', 'rdp')
  acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  acc.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.SampledWithoutReplacementDpEvent(
          n, b, dp_accounting.GaussianDpEvent(sigma / 2)), steps))
  assert accounting.epsilon(m, steps, delta) == pytest.approx(acc.get_epsilon(delta))
  assert m.neighboring_relation == 'replace_one'
  # And it is strictly more conservative than treating sigma as the multiplier.
  assert accounting.epsilon(m, steps, delta) > accounting.epsilon(
      accounting.Mechanism(sigma, n, b, 'poisson'), steps, delta)


def test_pld_refuses_fixed_batches():
  with pytest.raises(ValueError, match='pld'):
    accounting.epsilon(accounting.Mechanism(2.0, 1000, 100, 'fixed', 'pld'), 10, 1e-5)


@pytest.mark.parametrize('kind,sampling', [('rdp', 'poisson'), ('pld', 'poisson'),
                                           ('rdp', 'fixed')])
@pytest.mark.parametrize('target', [1.0, 4.0])
def test_calibration_inverts_epsilon(kind, sampling, target):
  n, b, steps, delta = 50000, 4096, 300, 1e-5
  sigma = accounting.calibrate_noise_multiplier(target, delta, steps, n, b, sampling, kind)
  eps = accounting.epsilon(accounting.Mechanism(sigma, n, b, sampling, kind), steps, delta)
  assert eps <= target  # the safe side, always
  assert eps == pytest.approx(target, rel=2e-3)
  slightly_less = accounting.Mechanism(sigma * 0.995, n, b, sampling, kind)
  assert accounting.epsilon(slightly_less, steps, delta) > target


def test_paper_noise_multiplier_for_eps1():
  sigma = accounting.calibrate_noise_multiplier(1.0, 1e-5, 875, 50000, 4096)
  assert sigma == pytest.approx(10.0, rel=0.02)


def test_ledger_matches_direct_composition_and_is_monotone():
  m = accounting.Mechanism(2.0, 1437, 256)
  ledger = accounting.Ledger(m, 1e-5)
  previous = 0.0
  for steps in (1, 10, 100, 300):
    direct = accounting.epsilon(m, steps, 1e-5)
    assert ledger.epsilon(steps) == pytest.approx(direct, rel=1e-9)
    assert ledger.epsilon(steps) > previous
    previous = ledger.epsilon(steps)
  assert ledger.epsilon(0) == 0.0
  assert math.isinf(accounting.Ledger(accounting.Mechanism(0.0, 10, 2), 1e-5).epsilon(3))


def test_calibration_rejects_bad_targets():
  with pytest.raises(ValueError, match='target_epsilon'):
    accounting.calibrate_noise_multiplier(0.0, 1e-5, 10, 1000, 100)
