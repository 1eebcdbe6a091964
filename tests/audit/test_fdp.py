"""The audit's statistics against jax-privacy's on the same numbers, the mechanism
curves against closed forms, and validity: on mechanisms simulated in numpy with a
known epsilon, a 95% bound exceeds it in at most about 5 of 100 trials."""
import dp_accounting
import numpy as np
import pytest
from jax_privacy import auditing

from image_classification.audit import fdp
from image_classification.audit import gradient_scoring
from image_classification.audit import statistics

DELTA = 1e-5


def _jax_auditor(m, k, c, num_in):
  """jax-privacy's auditor for exactly k "in" guesses, c right (scores 1 / 0)."""
  in_scores = np.r_[np.ones(c), np.zeros(num_in - c)]
  out_scores = np.r_[np.ones(k - c), np.zeros(m - num_in - (k - c))]
  return auditing.CanaryScoreAuditor(in_scores, out_scores)


CASES = [(1000, 100, 90), (1000, 100, 70), (5000, 200, 180), (5000, 400, 335),
         (2000, 50, 50), (500, 20, 12)]


@pytest.mark.parametrize('m,k,c', CASES)
def test_our_gaussian_fdp_bound_is_jax_privacys(m, k, c):
  ours = fdp.gaussian_epsilon(fdp.gaussian_mu_bound(m, k, c, 0.95), DELTA)
  theirs = _jax_auditor(m, k, c, m // 2).epsilon_one_run_fdp(
      0.05, DELTA, threshold_strategy=auditing.Explicit(1.0))
  assert ours == pytest.approx(theirs, abs=2e-3)


@pytest.mark.parametrize('m,k,c', CASES)
def test_our_one_run_bound_is_jax_privacys(m, k, c):
  """statistics.epsilon_lower_bound (Theorem 3.1 of Steinke et al.) and jax-privacy's
  epsilon_one_run give the same number for the same guess."""
  ours = statistics.epsilon_lower_bound(c, k, m, DELTA, 0.95)
  theirs = _jax_auditor(m, k, c, m // 2).epsilon_one_run(
      0.05, DELTA, threshold_strategy=auditing.Explicit(1.0))
  assert ours == pytest.approx(theirs, abs=1e-4)


def test_rejection_is_monotone_in_the_claim():
  """A more private claim (smaller mu) is rejected whenever a less private one is."""
  m, k, c = 2000, 100, 85
  rejected = [fdp.rejects(fdp.gaussian_tradeoff(mu), m, k, c, 0.95)
              for mu in np.linspace(0.05, 4.0, 80)]
  first_kept = rejected.index(False)
  assert all(rejected[:first_kept]) and not any(rejected[first_kept:])
  assert first_kept > 0


def test_the_curve_of_a_gaussian_event_is_the_gaussian_curve():
  """Profile -> curve: the Gaussian mechanism's PLD profile gives back 1/sigma-GDP
  (from below: the pessimistic PLD and the finite grid only weaken the claim)."""
  sigma = 1.3
  curve, name = fdp.mechanism_tradeoff(dp_accounting.GaussianDpEvent(sigma))
  assert name == 'pld'
  exact = fdp.gaussian_tradeoff(1 / sigma)
  for alpha in (1e-6, 1e-4, 1e-2, 0.1, 0.3, 0.5, 0.9):
    assert curve(alpha) <= exact(alpha) + 1e-9
    assert curve(alpha) >= exact(alpha) - max(2e-3, 0.02 * exact(alpha))


def test_the_profile_curve_is_symmetric_and_a_tradeoff_function():
  curve, _ = fdp.mechanism_tradeoff(dp_accounting.PoissonSampledDpEvent(
      0.2, dp_accounting.GaussianDpEvent(1.0)))
  alphas = np.linspace(0, 1, 201)
  values = np.array([curve(a) for a in alphas])
  assert np.all(values <= 1 - alphas + 1e-12) and np.all(np.diff(values) <= 1e-12)
  assert np.all(np.diff(values, 2) >= -1e-9)  # convex
  # Symmetric: f(f(a)) = a where f is strictly decreasing.
  for a in (0.01, 0.1, 0.3):
    assert curve(curve(a)) == pytest.approx(a, abs=2e-3)


# ---------------------------------------------------------------- validity
TRIALS = 100


def _gaussian_trial(rng, m, mu):
  included = rng.random(m) < 0.5
  return included, mu * included + rng.standard_normal(m)


def test_validity_on_the_gaussian_mechanism():
  """mu-GDP with mu = 2 (epsilon 10.0 at delta 1e-5): 100 independent one-run audits of
  1000 canaries with 50 guesses. Each bound (the f-DP one against Gaussian curves,
  and Steinke et al.'s) exceeds the true epsilon at most ~5% of the time; and they
  are not vacuous (mean above a third of the truth)."""
  mu, m, k = 2.0, 1000, 50
  truth = fdp.gaussian_epsilon(mu, DELTA)
  rng = np.random.default_rng(2024)
  gdp, steinke = [], []
  for _ in range(TRIALS):
    included, scores = _gaussian_trial(rng, m, mu)
    c = gradient_scoring.top_k_correct(scores, included, k)
    gdp.append(fdp.gaussian_epsilon(fdp.gaussian_mu_bound(m, k, c, 0.95), DELTA))
    steinke.append(statistics.epsilon_lower_bound(c, k, m, DELTA, 0.95))
  assert sum(b > truth for b in gdp) <= 10
  assert sum(b > truth for b in steinke) <= 10
  assert np.mean(gdp) > truth / 3 and np.mean(steinke) > truth / 4


def test_validity_on_the_poisson_subsampled_gaussian():
  """The run's own kind of mechanism, simulated: each canary is sampled at each of
  T = 50 steps with q = 0.2, observed with N(0, sigma^2) noise, scored by the
  per-step likelihood ratio. Its own accountant curve (PLD) is rejected in at most
  ~5 of 100 trials, and the f-DP bound against that curve family is below the true
  epsilon as often, yet not vacuous."""
  q, sigma, steps, m, k = 0.2, 1.0, 50, 1000, 60
  event = lambda s: dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), steps)

  def epsilon_of(s):
    acc = dp_accounting.pld.PLDAccountant()
    acc.compose(event(s))
    return acc.get_epsilon(DELTA)

  family = fdp.CurveFamily(event, epsilon_of)
  truth = epsilon_of(sigma)
  rng = np.random.default_rng(7)
  rejections, bounds = 0, []
  for trial in range(TRIALS):
    included = rng.random(m) < 0.5
    sampled = (rng.random((steps, m)) < q) & included
    x = sampled + sigma * rng.standard_normal((steps, m))
    scores = gradient_scoring.llr_scores(x, q, sigma, 1.0)
    c = gradient_scoring.top_k_correct(scores, included, k)
    rejections += fdp.rejects(family.curve(sigma), m, k, c, 0.95)
    if trial < 3:
      bounds.append(fdp.lower_bound(m, k, c, 0.95, family, sigma).epsilon)
  assert rejections <= 10
  assert all(b <= truth for b in bounds)
  assert np.mean(bounds) > truth / 3
