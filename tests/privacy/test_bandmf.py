"""BandMF (privacy/bandmf.py, privacy/privatizers.py, privacy/batch_selection.py, privacy/accounting.py,
plan.py): the noise
has the covariance its strategy implies and the marginal scale privacy.json states;
each example is sampled only at its group's steps, at the rate the accountant is given;
the epsilon is jax-privacy's / dp-accounting's for the amplified BandMF event and
calibration inverts it; bad configs are refused naming the field."""
import math

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import jax
import jax.numpy as jnp
from jax_privacy.experimental import accounting as jp_accounting
from jax_privacy.matrix_factorization import toeplitz
import numpy as np
import pytest

from configs import quickstart
from image_classification import config as config_lib
from image_classification import plan as plan_lib
from image_classification.privacy import accounting
from image_classification.privacy import bandmf
from image_classification.privacy import batch_selection as bs
from image_classification.privacy import noise
from image_classification.privacy import privatizers

STEPS, BANDS = 12, 3


def _dense_noising_matrix(coefs, n):
  """C_s^-1 built densely, independently of the streaming implementation: the banded
  lower-triangular Toeplitz C from ``coefs``, columns scaled to norm 1, inverted."""
  c = np.zeros((n, n))
  for i in range(n):
    for k, a in enumerate(coefs):
      if i + k < n:
        c[i + k, i] = a
  c /= np.linalg.norm(c, axis=0, keepdims=True)
  assert np.allclose(np.linalg.norm(c, axis=0), 1.0)  # sensitivity 1 per participation
  return np.linalg.inv(c)


def _noise_sequence(privatizer, params, key, steps):
  """The noise the privatizer adds to a zero clipped sum at steps 0..steps-1, flattened:
  shape (steps, num_coordinates); every coordinate is an independent sample."""
  state = privatizer.init(params)
  update = jax.jit(privatizer.update)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  out = []
  for t in range(steps):
    noisy, state = update(zeros, state, noise.step_noise_key(key, t))
    out.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(noisy)]))
  return np.stack(out)


def _bandmf_plan(sigma=1.3, clip=0.7):
  config = quickstart.get_config()
  config.privacy.mechanism = 'bandmf'
  config.privacy.num_bands = BANDS
  config.privacy.noise_multiplier = sigma
  config.privacy.target_epsilon = 1e4
  config.privacy.clipping_norm = clip
  config.training.num_steps = STEPS
  config.training.batch_size = 64
  return plan_lib.make_plan(config, 1000).with_strategy()


def test_noise_covariance_and_marginal_scale_match_the_strategy():
  plan = _bandmf_plan()
  privatizer = plan.privatizer()
  assert isinstance(privatizer, bandmf.BandMFPrivatizer)
  assert privatizer.num_bands == BANDS
  params = {'a': jnp.zeros((100, 150)), 'b': jnp.zeros((10000,))}  # 25000 samples
  z = _noise_sequence(privatizer, params, np.array([7, 11], np.uint32), STEPS)
  stddev = plan.noise_multiplier * plan.clipping_norm
  cinv = _dense_noising_matrix(plan.strategy_coefs, STEPS)
  expected = stddev**2 * cinv @ cinv.T
  empirical = z @ z.T / z.shape[1]
  # Each entry's standard error is about sqrt((S_ii S_jj + S_ij^2) / D) <= 1.5% of the
  # variance scale here: 6% is 4+ standard errors, and a wrong correlation (e.g. iid
  # noise, or C instead of C^-1) is off by 30% or more on the off-diagonals.
  scale = float(np.max(np.diag(expected)))
  np.testing.assert_allclose(empirical, expected, atol=0.06 * scale)
  assert abs(expected[1, 0]) > 0.2 * scale  # the test can see correlation at all
  # Per-step marginal std: what privacy.json's noise_std_per_step says.
  stated = np.asarray(plan.to_json()['noise_std_per_step'])
  np.testing.assert_allclose(stated, np.sqrt(np.diag(expected)), rtol=1e-5)
  np.testing.assert_allclose(z.std(axis=1), stated, rtol=0.03)
  # The prefix sums (what SGD sees) are less noisy than with iid noise of the same
  # privacy per participation: the point of the mechanism.
  assert np.var(z.sum(axis=0)) < 0.8 * STEPS * stddev**2


@pytest.mark.parametrize('key', [np.array([5, 9, 2, 7], np.uint32),  # a secret's
                                 np.array([5, 9], np.uint32)],  # the seeded switch's
                         ids=['128-bit', 'seeded'])
def test_replay_rebuilds_the_noise_state_that_checkpoints_leave_out(key):
  """Checkpoints hold the secret noise state zeroed; ``replay`` re-derives it from the
  key, equal to the state of the run, so the next step's noise is the same."""
  plan = _bandmf_plan()
  privatizer = plan.privatizer()
  params = {'w': jnp.zeros((6, 4)), 'b': jnp.zeros((4,))}
  state = privatizer.init(params)
  update = jax.jit(privatizer.update)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  for t in range(7):
    _, state = update(zeros, state, noise.step_noise_key(key, t))
  rebuilt = privatizers.replay(privatizer, params, key, 7)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(rebuilt)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
  assert any(np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(state))
  next_key = noise.step_noise_key(key, 7)
  np.testing.assert_allclose(update(zeros, rebuilt, next_key)[0]['w'],
                             update(zeros, state, next_key)[0]['w'], rtol=1e-6, atol=1e-7)
  # Another key gives another state: the replay really depends on the secret.
  other = privatizers.replay(privatizer, params, key ^ np.uint32(1), 7)
  floats = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)  # pylint: disable=g-long-lambda
                                        if jnp.issubdtype(x.dtype, jnp.floating)])
  assert not np.allclose(floats(other), floats(state))
  # What a checkpoint holds: no noise at all.
  from image_classification.training import state as state_lib  # pylint: disable=g-import-not-at-top
  train_state = state_lib.TrainState(step=jnp.int32(7), params=params, frozen={},
                                     opt_state=(), ema_params=params, noise_state=state)
  saved = privatizers.publishable(train_state)
  assert not any(np.any(np.asarray(x))
                 for x in jax.tree_util.tree_leaves(saved.noise_state))


def test_one_band_is_exactly_the_gaussian_noise():
  params = {'w': jnp.ones((7, 5)), 'b': jnp.ones((5,))}
  key = np.array([3, 4], np.uint32)
  banded = _noise_sequence(bandmf.BandMFPrivatizer((1.0,), 6, 0.9), params, key, 6)
  gauss = _noise_sequence(privatizers.GaussianPrivatizer(0.9), params, key, 6)
  np.testing.assert_array_equal(banded, gauss)


def test_cyclic_poisson_sampling_respects_groups_and_the_accounted_rate():
  n, batch, bands, steps = 2000, 100, 4, 400
  sampler = bandmf.BandMFPrivatizer.accounted_selection(
      bs.PoissonSampling(n, batch, seed=123), bands)
  assert isinstance(sampler, bs.CyclicPoissonSampling) and sampler.seed == 123
  assert sampler.sampling_rate == bands * batch / n
  event = sampler.dp_event(1.0, steps)
  assert event.event.sampling_probability == sampler.sampling_rate
  counts = np.zeros(n)
  sizes = []
  for t in range(steps):
    idx = sampler.indices(t)
    assert np.all(sampler.groups[idx] == t % bands), t  # only its group's steps
    counts[idx] += 1
    sizes.append(len(idx))
  # Each example is eligible at steps/bands steps; it is picked at rate q there.
  rate = counts / (steps / bands)
  assert abs(rate.mean() - sampler.sampling_rate) < 0.01
  assert abs(np.mean(sizes) - batch) < 3  # expected batch size keeps its meaning
  group_sizes = np.bincount(sampler.groups, minlength=bands)
  assert np.all(np.abs(group_sizes - n / bands) < 5 * math.sqrt(n / bands))
  # b = 1 is Poisson sampling, draw for draw.
  one = bs.CyclicPoissonSampling(n, batch, 1, seed=123)
  plain = bs.PoissonSampling(n, batch, seed=123)
  for t in range(5):
    np.testing.assert_array_equal(one.indices(t), plain.indices(t))


@pytest.mark.parametrize('accountant', ['rdp', 'pld'])
def test_epsilon_is_the_amplified_bandmf_event_and_calibration_inverts_it(accountant):
  n, batch, bands, steps, delta = 1000, 50, 4, 100, 1e-5
  sigma = 1.1
  ours = bs.CyclicPoissonSampling(n, batch, bands)
  ledger = accounting.Ledger(ours, sigma, delta, accountant)
  theirs = jp_accounting.amplified_bandmf_event(
      sigma, steps, num_bands=bands, sampling_prob=bands * batch / n)
  scratch = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
      bands * batch / n, dp_accounting.GaussianDpEvent(sigma)), math.ceil(steps / bands))
  for event in (theirs, scratch):
    acc = rdp.RdpAccountant() if accountant == 'rdp' else pld.PLDAccountant()
    ref = float(acc.compose(event).get_epsilon(delta))
    assert accounting.epsilon(ours.dp_event(sigma, steps), delta, accountant,
                              ours.neighboring_relation) == pytest.approx(ref, rel=1e-9)
    assert ledger.epsilon(steps) == pytest.approx(ref, rel=1e-6)
  # The ledger over a partial run counts rounds begun: ceil(t / b).
  part = jp_accounting.amplified_bandmf_event(sigma, 9, num_bands=bands,
                                               sampling_prob=bands * batch / n)
  acc = rdp.RdpAccountant() if accountant == 'rdp' else pld.PLDAccountant()
  assert ledger.epsilon(9) == pytest.approx(
      float(acc.compose(part).get_epsilon(delta)), rel=1e-6)
  if accountant == 'pld':
    return
  target = 2.0
  calibrated = accounting.calibrate_noise_multiplier(
      target, delta, lambda s: ours.dp_event(s, steps), 'rdp')
  at = accounting.Ledger(ours, calibrated, delta).epsilon(steps)
  below = accounting.Ledger(ours, calibrated * 0.999, delta).epsilon(steps)
  assert at <= target < below
  # jax-privacy's own calibration for the same event (its helper, RDP) agrees.
  helper = toeplitz._AmplifiedBandMFHelper(steps, n, batch, target, delta)  # pylint: disable=protected-access
  assert helper.total_noise_multiplier(bands) == pytest.approx(calibrated, rel=1e-3)


def _config(**privacy):
  config = quickstart.get_config()
  config.training.num_steps = 200
  config.privacy.mechanism = 'bandmf'
  config.privacy.num_bands = 2
  for k, v in privacy.items():
    config.privacy[k] = v
  return config


@pytest.mark.parametrize('privacy, n, field, match', [
    (dict(num_bands=400), 1437, 'privacy.num_bands', 'larger than the number of steps'),
    (dict(num_bands=3), 1437, 'privacy.num_bands', 'must divide the number of steps'),
    (dict(num_bands=4), 1437, 'privacy.num_bands', 'training.batch_size'),
    (dict(sampling='fixed'), 1437, 'privacy.sampling', "needs sampling='poisson'"),
    (dict(mechanism='dpsgd', num_bands=2), 1437, 'privacy.num_bands', 'bandmf'),
    (dict(mechanism='dpmf'), 1437, 'privacy.mechanism', 'choose one of'),
])
def test_bad_bandmf_configs_are_refused_naming_the_field(privacy, n, field, match):
  config = _config(**privacy)
  with pytest.raises(config_lib.ConfigError, match=field) as err:
    config_lib.validate(config, num_devices=1)
    config_lib.validate_with_data(config, n)
  assert match in str(err.value)


def test_pld_is_accepted_for_bandmf_and_the_plan_reports_the_strategy(tmp_path):
  config = _config(accountant='pld', noise_multiplier=3.0,  # no calibration: fast
                   target_epsilon=50.0)
  config_lib.validate(config, num_devices=1)
  config_lib.validate_with_data(config, 1437)
  plan = plan_lib.make_plan(config, 1437).with_strategy(str(tmp_path))
  d = plan.to_json()
  assert d['mechanism_name'] == 'bandmf' and d['num_bands'] == 2
  assert len(d['strategy_coefs']) == 2 and d['strategy_sensitivity'] == 1.0
  assert np.linalg.norm(d['strategy_coefs']) == pytest.approx(1.0, rel=1e-6)
  assert 0 < d['epsilon'] <= config.privacy.target_epsilon
  assert (tmp_path / plan_lib.STRATEGY_FILE).exists()  # cached in the workdir


def test_strategy_is_cached(tmp_path, monkeypatch):
  first = plan_lib.strategy(16, 2, str(tmp_path))
  monkeypatch.setattr(bandmf, 'optimize_strategy',
                      lambda *a, **k: pytest.fail('not cached'))
  np.testing.assert_array_equal(plan_lib.strategy(16, 2, str(tmp_path)), first)
