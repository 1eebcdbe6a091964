"""Tests for the one-run audit's statistics (Steinke, Nasr & Jagielski 2023).

Expected values come from scipy.stats directly, closed forms, or simulations of
mechanisms whose exact privacy is known (randomized response, Gaussian).
"""

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

from image_classification.audit import statistics

_binom = scipy.stats.binom


def _binomial_tail_epsilon(v, r, alpha):
  """Solves P[Binomial(r, expit(eps)) >= v] = alpha for eps, with scipy only."""
  fn = lambda eps: _binom.sf(v - 1, r, scipy.special.expit(eps)) - alpha
  return scipy.optimize.brentq(fn, 0.0, 50.0, xtol=1e-10)


def _theorem_p_value(v, r, m, eps, delta):
  """Theorem 3.1 written out naively: the max runs over all i = 1..m."""
  q = np.exp(eps) / (1 + np.exp(eps))
  tail = _binom.sf(v - 1, r, q)
  best = 0.0
  for i in range(1, m + 1):
    window = _binom.cdf(v - 1, r, q) - _binom.cdf(v - i - 1, r, q)
    best = max(best, window / i)
  return min(1.0, tail + 2 * m * delta * best)


def _gaussian_epsilon(mu, delta):
  """Exact epsilon of the Gaussian mechanism with sensitivity / sigma = mu."""
  norm = scipy.stats.norm
  fn = lambda eps: (norm.cdf(mu / 2 - eps / mu)
                    - np.exp(eps) * norm.cdf(-mu / 2 - eps / mu) - delta)
  return scipy.optimize.brentq(fn, 0.0, 500.0)


# ----------------------------------------------------------------------------
# The bound.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('v,r,m', [(60, 100, 100), (550, 1000, 1000),
                                   (900, 1000, 1000), (30, 30, 100),
                                   (95, 100, 5000)])
def test_delta_zero_is_binomial_tail_test(v, r, m):
  eps = statistics.epsilon_lower_bound(v, r, m, delta=0.0, confidence=0.95)
  assert eps > 0
  assert eps == pytest.approx(_binomial_tail_epsilon(v, r, 0.05), abs=2e-6)
  q = scipy.special.expit
  assert _binom.sf(v - 1, r, q(eps)) < 0.05 <= _binom.sf(v - 1, r, q(eps + 2e-6))
  # With delta = 0, m only counts abstentions: it does not enter the bound.
  assert eps == statistics.epsilon_lower_bound(v, r, 10 * m, 0.0, 0.95)


@pytest.mark.parametrize('r,approx', [(10, 1.052), (100, 3.493),
                                       (1000, 5.809), (10_000, 8.113)])
def test_perfect_guessing_closed_form(r, approx):
  # P[Bin(r, q) >= r] = q^r = 0.05  =>  q = 0.05^(1/r), eps = log(q / (1 - q)).
  q = 0.05 ** (1 / r)
  expected = np.log(q / (1 - q))
  assert expected == pytest.approx(approx, abs=1e-3)
  got = statistics.perfect_guessing_bound(r, r, delta=0.0, confidence=0.95)
  assert got == pytest.approx(expected, abs=2e-6)
  # delta > 0 costs something, never helps; more canaries m cost more.
  with_delta = statistics.perfect_guessing_bound(r, r, 1e-5, 0.95)
  assert with_delta < got
  assert statistics.perfect_guessing_bound(r, 10 * r, 1e-5, 0.95) < with_delta


@pytest.mark.parametrize('v,r,m,eps,delta', [
    (10, 20, 50, 0.5, 1e-3), (700, 1000, 1000, 0.7, 1e-5),
    (200, 200, 1000, 4.0, 1e-6), (300, 500, 800, 0.2, 1e-2),
    (3, 3, 3, 1.0, 0.1), (1, 1, 1, 0.0, 0.5)])
def test_p_value_matches_theorem_written_naively(v, r, m, eps, delta):
  assert statistics.one_run_p_value(v, r, m, eps, delta) == pytest.approx(
      _theorem_p_value(v, r, m, eps, delta), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize('v,r,m,delta', [(950, 1000, 1000, 1e-5),
                                         (200, 200, 1000, 1e-3),
                                         (80, 100, 200, 1e-4)])
def test_delta_bound_is_the_crossing_of_the_theorem(v, r, m, delta):
  eps = statistics.epsilon_lower_bound(v, r, m, delta, 0.95)
  assert eps > 0
  assert _theorem_p_value(v, r, m, eps, delta) < 0.05
  assert _theorem_p_value(v, r, m, eps + 2e-6, delta) >= 0.05


def test_random_guessing_rejects_nothing():
  for v in (400, 500, 510, 520):
    assert statistics.epsilon_lower_bound(v, 1000, 1000, 1e-5, 0.95) == 0.0
  assert statistics.epsilon_lower_bound(0, 0, 10, 0.0, 0.95) == 0.0
  assert statistics.epsilon_lower_bound(0, 10, 10, 0.0, 0.95) == 0.0


def test_bound_increases_with_correct_guesses():
  bounds = [statistics.epsilon_lower_bound(v, 1000, 1000, 1e-5, 0.95)
            for v in range(500, 1001, 50)]
  assert np.all(np.diff(bounds) >= 0)
  assert bounds[0] == 0.0 and bounds[-1] > 5.0


def test_bound_increases_with_guesses_at_fixed_accuracy():
  bounds = [statistics.epsilon_lower_bound(int(0.9 * r), r, 1000, 1e-5, 0.95)
            for r in (50, 100, 200, 500, 1000)]
  assert np.all(np.diff(bounds) > 0)


def test_bound_decreases_with_delta_and_confidence():
  by_delta = [statistics.epsilon_lower_bound(990, 1000, 1000, d, 0.95)
              for d in (0.0, 1e-7, 1e-5, 1e-4, 1e-3)]
  assert np.all(np.diff(by_delta) < 0)
  by_confidence = [statistics.epsilon_lower_bound(900, 1000, 1000, 1e-5, c)
                   for c in (0.5, 0.9, 0.95, 0.99, 0.999)]
  assert np.all(np.diff(by_confidence) < 0)


@pytest.mark.parametrize('args', [
    (11, 10, 100, 0.0, 0.95), (5, 10, 9, 0.0, 0.95), (-1, 10, 10, 0.0, 0.95),
    (5, 10, 10, -1e-5, 0.95), (5, 10, 10, 1.5, 0.95), (5, 10, 10, 0.0, 1.0),
    (5, 10, 10, 0.0, 0.0), (5.5, 10, 10, 0.0, 0.95)])
def test_bad_arguments_are_refused(args):
  with pytest.raises(ValueError):
    statistics.epsilon_lower_bound(*args)


def test_randomized_response_is_caught_at_the_stated_rate():
  # eps-DP randomized response on each canary: V ~ Binomial(r, expit(eps))
  # exactly, the worst case of the theorem. A valid 95% bound exceeds eps at
  # most 5% of the time, and at delta = 0 close to 5% (the test is exact up to
  # discreteness).
  rng = np.random.default_rng(1234)
  true_eps, r = 1.0, 1000
  draws = rng.binomial(r, scipy.special.expit(true_eps), size=300)
  values = np.unique(draws)  # The bound depends on v only: compute it once.
  for delta, low in ((0.0, 0.01), (1e-5, 0.0)):
    bound = {v: statistics.epsilon_lower_bound(v, r, r, delta, 0.95) for v in values}
    exceed = np.mean([bound[v] > true_eps for v in draws])
    # An eps-DP mechanism is also (eps, delta)-DP: the delta bound is valid too.
    assert low <= exceed <= 0.09


# ----------------------------------------------------------------------------
# From scores to a bound.
# ----------------------------------------------------------------------------


def test_guessing_and_counting_by_hand():
  scores = np.array([0.1, 0.9, 0.5, 0.3, 0.7])
  included = np.array([False, True, False, True, False])
  guesses = statistics.guess_membership(scores, num_positive=2, num_negative=1)
  np.testing.assert_array_equal(guesses, [-1, 1, 0, 0, 1])
  # Correct: canary 1 (in, included) and canary 0 (out, excluded): v=2 of r=3.
  result = statistics.audit_from_scores(scores, included, 0.0, 0.95,
                                   guess_counts=[(2, 1)])
  assert (result['num_correct'], result['num_guesses']) == (2, 3)
  assert result['num_choices_tried'] == 1
  assert result['per_choice_confidence'] == pytest.approx(0.95)
  assert result['epsilon_lower_bound'] == 0.0


def test_audit_result_fields_and_consistency():
  rng = np.random.default_rng(0)
  m = 1000
  included = statistics.make_canary_membership(m, seed=3)
  scores = 3.0 * included + rng.normal(size=m)
  result = statistics.audit_from_scores(scores, included, 1e-5, 0.95)
  assert result['method'] == 'steinke-nasr-jagielski-2023-one-run'
  assert result['num_canaries'] == m
  assert result['num_included'] == included.sum()
  assert result['confidence'] == 0.95 and result['delta'] == 1e-5
  k = result['num_choices_tried']
  assert k == len(statistics.default_guess_counts(m)) == len(result['choices'])
  assert result['per_choice_confidence'] == pytest.approx(1 - 0.05 / k)
  # The reported bound is the best choice, each computed at the split level.
  for choice in result['choices']:
    assert choice['epsilon_lower_bound'] == statistics.epsilon_lower_bound(
        choice['num_correct'], choice['num_guesses'], m, 1e-5,
        result['per_choice_confidence'])
  assert result['epsilon_lower_bound'] == max(
      c['epsilon_lower_bound'] for c in result['choices'])
  assert result['epsilon_lower_bound'] > 1.0
  summary = result['score_summary']
  assert summary['included']['mean'] == pytest.approx(scores[included].mean())
  assert summary['excluded']['std'] == pytest.approx(scores[~included].std())
  assert summary['included']['mean'] > summary['excluded']['mean'] + 2.0


def test_union_bound_is_paid_for():
  rng = np.random.default_rng(5)
  m = 1000
  included = rng.random(m) < 0.5
  scores = 2.0 * included + rng.normal(size=m)
  counts = [(50, 0), (100, 100), (250, 250), (500, 0)]
  multi = statistics.audit_from_scores(scores, included, 1e-5, 0.95, counts)
  singles = [statistics.audit_from_scores(scores, included, 1e-5, 0.95, [c])
             for c in counts]
  assert multi['num_choices_tried'] == 4
  for choice, single in zip(multi['choices'], singles):
    # Same counts, stricter level: never a larger bound, here strictly smaller.
    assert choice['num_correct'] == single['num_correct']
    assert choice['epsilon_lower_bound'] <= single['epsilon_lower_bound']
    if single['epsilon_lower_bound'] > 0:
      assert choice['epsilon_lower_bound'] < single['epsilon_lower_bound']
  assert multi['epsilon_lower_bound'] <= max(
      s['epsilon_lower_bound'] for s in singles)
  # Duplicates are not counted twice.
  again = statistics.audit_from_scores(scores, included, 1e-5, 0.95, counts + counts)
  assert again['num_choices_tried'] == 4
  assert again['epsilon_lower_bound'] == multi['epsilon_lower_bound']


@pytest.mark.parametrize('mu', [1.0, 2.0, 4.0])
def test_gaussian_mechanism_bound_stays_below_true_epsilon(mu):
  # Each canary's score is N(mu * included, 1): changing one canary changes one
  # coordinate of a Gaussian mechanism with sensitivity / sigma = mu, so the run
  # is exactly (eps(delta), delta)-DP with the analytic Gaussian curve.
  delta, m = 1e-5, 1000
  true_eps = _gaussian_epsilon(mu, delta)
  rng = np.random.default_rng(int(100 * mu))
  bounds = []
  for _ in range(5):
    included = rng.random(m) < 0.5
    scores = mu * included + rng.normal(size=m)
    bounds.append(statistics.audit_from_scores(scores, included, delta,
                                          0.95)['epsilon_lower_bound'])
  assert max(bounds) < true_eps
  assert min(bounds) > 0.0  # Strong enough to show something every time.


def test_uninformative_scores_give_no_bound():
  rng = np.random.default_rng(11)
  bounds = []
  for _ in range(10):
    included = rng.random(1000) < 0.5
    bounds.append(statistics.audit_from_scores(
        rng.normal(size=1000), included, 1e-5, 0.95)['epsilon_lower_bound'])
  assert sum(b > 0 for b in bounds) <= 2
  assert max(bounds) < 0.5


def test_default_guess_counts():
  counts = statistics.default_guess_counts(1000)
  assert (10, 0) in counts and (5, 5) in counts and (500, 500) in counts
  assert len(counts) == len(set(counts))
  assert all(1 <= a + b <= 1000 for a, b in counts)
  small = statistics.default_guess_counts(3)
  assert all(1 <= a + b <= 3 for a, b in small)


def test_audit_refuses_bad_inputs():
  scores, included = np.zeros(4), np.array([True, False, True, False])
  with pytest.raises(ValueError, match='NaN'):
    statistics.audit_from_scores(np.array([0.0, np.nan, 1, 2]), included, 0, 0.95)
  with pytest.raises(ValueError, match='bool'):
    statistics.audit_from_scores(scores, included.astype(int), 0, 0.95)
  with pytest.raises(ValueError, match='k\\+'):
    statistics.audit_from_scores(scores, included, 0, 0.95, [(3, 2)])
  with pytest.raises(ValueError, match='empty'):
    statistics.audit_from_scores(scores, included, 0, 0.95, [])


# ----------------------------------------------------------------------------
# Membership draws.
# ----------------------------------------------------------------------------


def test_membership_is_fair_reproducible_and_its_own_stream():
  bits = statistics.make_canary_membership(10_000, seed=7)
  assert bits.dtype == np.bool_ and bits.shape == (10_000,)
  assert 0.48 < bits.mean() < 0.52
  np.testing.assert_array_equal(bits, statistics.make_canary_membership(10_000, 7))
  assert (bits != statistics.make_canary_membership(10_000, 8)).any()
  naive = np.random.default_rng(7).integers(0, 2, size=10_000).astype(bool)
  assert (bits != naive).any()
  with pytest.raises(ValueError):
    statistics.make_canary_membership(10, seed=-1)
