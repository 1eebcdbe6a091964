"""The statistics of the one-run privacy audit: membership draws, guesses, an epsilon
lower bound. Numpy and scipy only; nothing here knows about models or training.

Implements the test of Steinke, Nasr & Jagielski, "Privacy Auditing with One (1)
Training Run" (NeurIPS 2023, arXiv:2305.08846):

1. Draw m canaries. Each is included in the training set independently with
   probability 1/2 (`make_canary_membership`), from a seed that is independent of
   every training key. Included canaries are ADDED to the training set
   (audit/canaries.py); excluded ones are used nowhere in training.
2. Train once, as usual.
3. Score every canary with the trained model (audit/scoring.py; higher means "more
   likely a member"). Guess "in" for the k+ highest scores, "out" for the k- lowest,
   abstain on the rest, and count the v correct guesses out of r = k+ + k-.
4. `epsilon_lower_bound(v, r, m, delta, confidence)` returns the largest epsilon for
   which "the training run is (epsilon, delta)-DP" is rejected at that confidence.
   `audit_from_scores` runs steps 3-4 for several (k+, k-) and pays for the choice
   with a union bound.

What is proven, and what is not:
- If training is (epsilon, delta)-DP with respect to adding or removing ONE
  canary (all else fixed), then P[reported bound > epsilon] < 1 - confidence. That
  is all: a bound of 0 proves nothing, and a bound below the accountant's epsilon
  does not show the accountant is tight. A bound ABOVE the accountant's epsilon (at
  the same delta) is evidence of a bug in the implementation or in the accounting.
- The neighbouring relation of the audit is add/remove of one example. Compare the
  bound with an accountant that uses the same relation (sampling='poisson' in
  accounting.py). Against the replace-one accountant (sampling='fixed') the
  comparison is not like for like.
- For a clean comparison keep the sampling rate and the normaliser (expected batch
  size) fixed by the config, not recomputed from the realised dataset size; then
  the only thing a canary changes is its own presence. The accountant's N is the
  size of the set actually trained on, canaries included.
- Validity does not depend on the scores being good: any score function that does
  not look at the membership bits gives a valid bound. Weak scores only make the
  bound small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.special
import scipy.stats

METHOD = 'steinke-nasr-jagielski-2023-one-run'

# Stream tag mixed into the seed so that the membership bits never coincide with a
# numpy stream made from the same integer seed elsewhere (e.g. data order).
_MEMBERSHIP_STREAM = 0x4D454D42  # 'MEMB'

# Total-guess fractions of m tried by default, each as "positives only" and as
# "balanced" (k+ = k-). Fixed in advance: choices must not depend on the outcome.
_DEFAULT_GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _check_counts(num_correct: int, num_guesses: int, num_canaries: int):
  v, r, m = int(num_correct), int(num_guesses), int(num_canaries)
  if (v, r, m) != (num_correct, num_guesses, num_canaries):
    raise ValueError(
        'num_correct, num_guesses and num_canaries must be integers, got '
        f'{num_correct}, {num_guesses}, {num_canaries}.')
  if not 0 <= v <= r <= m:
    raise ValueError(
        'Need 0 <= num_correct <= num_guesses <= num_canaries, got '
        f'num_correct={v}, num_guesses={r}, num_canaries={m}.')
  return v, r, m


def _check_delta(delta: float) -> float:
  delta = float(delta)
  if not 0.0 <= delta <= 1.0:
    raise ValueError(f'delta must be in [0, 1], got {delta}.')
  return delta


def _check_confidence(confidence: float) -> float:
  confidence = float(confidence)
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}.')
  return confidence


def one_run_p_value(
    num_correct: int,
    num_guesses: int,
    num_canaries: int,
    epsilon: float,
    delta: float,
) -> float:
  """Upper bound on P[at least v correct guesses] under (epsilon, delta)-DP.

  This is the tail bound of Theorem 3.1 of Steinke, Nasr & Jagielski (2023): if
  training is (epsilon, delta)-DP in each canary, canaries are included
  independently with probability 1/2, and at most r guesses are made, then the
  number W of correct guesses satisfies, for every v,

    P[W >= v] <= P[B >= v] + 2 m delta max_{1<=i<=m} P[v - i <= B < v] / i,

  where B ~ Binomial(r, e^eps / (1 + e^eps)). With delta = 0 it is the binomial
  tail alone (randomized response is the worst case). The max over i <= m is
  attained at some i <= v: for i >= v the probability stops growing and 1/i
  shrinks. The value is capped at 1.

  Args:
    num_correct: v, the number of correct guesses.
    num_guesses: r, the number of guesses (abstentions excluded).
    num_canaries: m, the number of randomised canaries (abstentions included).
    epsilon: the epsilon of the null hypothesis, >= 0.
    delta: the delta of the null hypothesis, in [0, 1].

  Returns:
    A p-value for the null hypothesis "(epsilon, delta)-DP".
  """
  v, r, m = _check_counts(num_correct, num_guesses, num_canaries)
  delta = _check_delta(delta)
  if not epsilon >= 0.0:
    raise ValueError(f'epsilon must be >= 0, got {epsilon}.')
  if v == 0:
    return 1.0
  q = scipy.special.expit(epsilon)  # Accuracy of eps-DP randomized response.
  tail = float(scipy.stats.binom.sf(v - 1, r, q))  # P[B >= v].
  if delta == 0.0:
    return min(1.0, tail)
  # pmf at B = v-1, v-2, ..., 0; partial sums are P[v - i <= B < v], i = 1..v.
  # Summing pmf terms (not differencing cdfs) keeps tiny windows accurate.
  pmf = scipy.stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
  window = np.cumsum(pmf) / np.arange(1, v + 1)
  return min(1.0, tail + 2.0 * m * delta * float(window.max()))


def epsilon_lower_bound(
    num_correct: int,
    num_guesses: int,
    num_canaries: int,
    delta: float,
    confidence: float,
    *,
    tolerance: float = 1e-6,
) -> float:
  """Largest epsilon such that (epsilon, delta)-DP is rejected at `confidence`.

  Inverts `one_run_p_value` (Theorem 3.1 of Steinke, Nasr & Jagielski 2023) by
  bisection on epsilon, as the paper's own procedure does: find epsilon with
  p_value(epsilon) < 1 - confidence. The returned value is either 0.0 ("nothing
  rejected") or a point where the p-value is below 1 - confidence, within
  `tolerance` below the crossing.

  Proven: if training is (eps*, delta)-DP, then P[returned > eps*] < 1 -
  confidence. This needs no monotonicity of the p-value in epsilon: an
  (eps*, delta)-DP run is (eps, delta)-DP for every eps >= eps*, so each such
  p-value bounds the tail of v; if any of them is below 1 - confidence at the
  observed v, then so is the probability of the observed tail event. It does
  assume m, r and the delta are fixed before looking at the membership bits.

  Args:
    num_correct: v, the number of correct guesses.
    num_guesses: r = k+ + k-, the number of guesses.
    num_canaries: m, the number of randomised canaries.
    delta: the delta at which to test, in [0, 1].
    confidence: e.g. 0.95; the failure probability is 1 - confidence.
    tolerance: absolute precision of the bisection on epsilon.

  Returns:
    The epsilon lower bound, >= 0.0.
  """
  v, r, m = _check_counts(num_correct, num_guesses, num_canaries)
  delta = _check_delta(delta)
  alpha = 1.0 - _check_confidence(confidence)

  def rejected(eps: float) -> bool:
    return one_run_p_value(v, r, m, eps, delta) < alpha

  if not rejected(0.0):
    return 0.0
  lo, hi = 0.0, 1.0
  # Terminates: once expit(eps) rounds to 1.0 (eps ~ 37), P[B >= v] = 1.
  while rejected(hi):
    lo, hi = hi, 2.0 * hi
  while hi - lo > tolerance:
    mid = 0.5 * (lo + hi)
    if rejected(mid):
      lo = mid
    else:
      hi = mid
  return lo


def guess_membership(
    scores: np.ndarray, num_positive: int, num_negative: int) -> np.ndarray:
  """Guesses +1 ("in") for the top-k+ scores, -1 for the bottom k-, 0 otherwise.

  Ties are broken by canary index (stable sort), which does not depend on the
  membership bits, so the guesses stay a function of the scores alone.

  Args:
    scores: [m] membership scores, higher means more likely included.
    num_positive: k+, the number of "in" guesses.
    num_negative: k-, the number of "out" guesses.

  Returns:
    [m] int8 array of +1, -1 and 0.
  """
  scores = _check_scores(scores)
  m = scores.shape[0]
  _check_guess_count((num_positive, num_negative), m)
  order = np.argsort(scores, kind='stable')
  guesses = np.zeros(m, dtype=np.int8)
  guesses[order[m - num_positive:]] = 1
  guesses[order[:num_negative]] = -1
  return guesses


def default_guess_counts(num_canaries: int) -> list[tuple[int, int]]:
  """The (k+, k-) pairs `audit_from_scores` tries when none are given.

  For each total r in {1, 2, 5, 10, 20, 50, 100}% of m: (r, 0), guessing only
  "in" for the top scores, and (r/2, r/2), guessing at both ends. Duplicates are
  removed. The list depends on m only, never on the scores.

  Args:
    num_canaries: m.

  Returns:
    A list of distinct (k+, k-) pairs with 1 <= k+ + k- <= m.
  """
  m = int(num_canaries)
  if m < 1:
    raise ValueError(f'num_canaries must be >= 1, got {num_canaries}.')
  choices = []
  for fraction in _DEFAULT_GUESS_FRACTIONS:
    r = max(1, int(round(fraction * m)))
    for pair in ((r, 0), (r - r // 2, r // 2)):
      if pair not in choices:
        choices.append(pair)
  return choices


def _check_scores(scores) -> np.ndarray:
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 1 or scores.shape[0] < 1:
    raise ValueError(f'scores must be a non-empty 1-D array, got {scores.shape}.')
  if np.isnan(scores).any():
    raise ValueError('scores contain NaN; a NaN cannot be ranked.')
  return scores


def _check_guess_count(pair, m: int) -> tuple[int, int]:
  try:
    k_pos, k_neg = (int(k) for k in pair)
  except (TypeError, ValueError) as e:
    raise ValueError(f'A guess count must be a pair (k+, k-), got {pair}.') from e
  if k_pos < 0 or k_neg < 0 or not 1 <= k_pos + k_neg <= m:
    raise ValueError(
        f'Guess count (k+, k-) = {pair} needs k+, k- >= 0 and '
        f'1 <= k+ + k- <= num_canaries = {m}.')
  return k_pos, k_neg


def _summary(values: np.ndarray) -> dict[str, Any]:
  if values.size == 0:
    return {'count': 0, 'mean': None, 'std': None}
  return {'count': int(values.size), 'mean': float(values.mean()),
          'std': float(values.std())}


def audit_from_scores(
    scores,
    included,
    delta: float,
    confidence: float,
    guess_counts: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
  """One-run audit from canary scores, with a union bound over guess counts.

  For each (k+, k-) in `guess_counts` (default: `default_guess_counts(m)`), guess
  with `guess_membership`, count correct guesses, and compute
  `epsilon_lower_bound` at the per-choice confidence 1 - (1 - confidence) / K,
  where K is the number of distinct choices. The best bound is returned. By the
  union bound, P[any of the K bounds exceeds the true epsilon] < 1 - confidence,
  so the reported maximum keeps the stated confidence. This holds only if
  `guess_counts` was fixed before looking at the results; picking it after seeing
  them voids the guarantee.

  Args:
    scores: [m] canary scores, higher means more likely included (see
      audit/scoring.py). Computed without the membership bits.
    included: [m] bool, which canaries were added to the training set.
    delta: the delta at which to test.
    confidence: overall confidence, e.g. 0.95.
    guess_counts: distinct (k+, k-) pairs to try; duplicates are dropped.

  Returns:
    A dict with the best 'epsilon_lower_bound' and its 'num_correct',
    'num_guesses', 'num_positive_guesses', 'num_negative_guesses'; also
    'num_canaries', 'num_included', 'delta', 'confidence',
    'per_choice_confidence', 'num_choices_tried', 'method', 'choices' (one
    entry per (k+, k-) tried) and 'score_summary' (count/mean/std of scores of
    included and excluded canaries; descriptive only, it is not part of the
    bound).
  """
  scores = _check_scores(scores)
  m = scores.shape[0]
  included = np.asarray(included)
  if included.shape != (m,) or included.dtype != np.bool_:
    raise ValueError(
        f'included must be a bool array of shape ({m},), got dtype '
        f'{included.dtype} and shape {included.shape}.')
  delta = _check_delta(delta)
  confidence = _check_confidence(confidence)
  if guess_counts is None:
    guess_counts = default_guess_counts(m)
  choices = []
  for pair in guess_counts:
    pair = _check_guess_count(pair, m)
    if pair not in choices:
      choices.append(pair)
  if not choices:
    raise ValueError('guess_counts is empty.')
  num_choices = len(choices)
  per_choice_confidence = 1.0 - (1.0 - confidence) / num_choices

  # prefix[j] = number of included canaries among the j lowest scores.
  order = np.argsort(scores, kind='stable')
  prefix = np.concatenate([[0], np.cumsum(included[order])])
  results = []
  for k_pos, k_neg in choices:
    correct_pos = int(prefix[m] - prefix[m - k_pos])
    correct_neg = int(k_neg - prefix[k_neg])
    v, r = correct_pos + correct_neg, k_pos + k_neg
    eps = epsilon_lower_bound(v, r, m, delta, per_choice_confidence)
    results.append({'num_positive_guesses': k_pos, 'num_negative_guesses': k_neg,
                    'num_correct': v, 'num_guesses': r,
                    'epsilon_lower_bound': eps})
  best = max(results, key=lambda c: c['epsilon_lower_bound'])  # First on ties.
  return {
      'epsilon_lower_bound': best['epsilon_lower_bound'],
      'num_correct': best['num_correct'],
      'num_guesses': best['num_guesses'],
      'num_positive_guesses': best['num_positive_guesses'],
      'num_negative_guesses': best['num_negative_guesses'],
      'num_canaries': m,
      'num_included': int(included.sum()),
      'delta': delta,
      'confidence': confidence,
      'per_choice_confidence': per_choice_confidence,
      'num_choices_tried': num_choices,
      'method': METHOD,
      'choices': results,
      'score_summary': {
          'included': _summary(scores[included]),
          'excluded': _summary(scores[~included]),
      },
  }


def stream(seed: int, tag: int) -> np.random.Generator:
  """The generator of SeedSequence([seed, tag]): one audit draw, apart from the others."""
  if int(seed) != seed or seed < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed}.')
  return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


def make_canary_membership(num_canaries: int, seed: int) -> np.ndarray:
  """Draws which canaries are included: each independently with probability 1/2.

  The draw uses its own numpy stream (the seed mixed with a fixed tag), so it is
  independent of the training keys (JAX) and of any numpy stream made from the
  same integer. Use a seed that is not reused for anything else, draw it before
  training, and never let training read the bits except through the data set.

  Args:
    num_canaries: m.
    seed: a non-negative integer.

  Returns:
    [m] bool array; True means "add this canary to the training set".
  """
  m = int(num_canaries)
  if m < 1:
    raise ValueError(f'num_canaries must be >= 1, got {num_canaries}.')
  return stream(seed, _MEMBERSHIP_STREAM).integers(0, 2, size=m).astype(bool)


def perfect_guessing_bound(
    num_guesses: int, num_canaries: int, delta: float, confidence: float) -> float:
  """The largest bound the audit can give with r guesses, all correct.

  A ceiling on what m canaries can show, whatever the model: with delta = 0 it
  is log(q / (1 - q)) for q = (1 - confidence)^(1/r).
  """
  return epsilon_lower_bound(num_guesses, num_guesses, num_canaries, delta,
                             confidence)


