"""The white-box gradient audit as a run hook (config.audit.mode = 'gradient').

Calls, in the loop's order (training/loop.py):

* ``prepare(dataset)``, before the privacy plan: draws the membership bits and
  appends the included canaries to the training split (audit/gradient_canaries.py),
  so the accountant's N counts them;
* ``check_model(params)``, when the model is built (dry runs too): the canaries'
  parameter exists and has a coordinate for each canary;
* ``step_canaries(params)``, before the step is built: the canaries' coordinates
  (training/canary_slots.GradientCanaries), and their initial values;
* ``observe(step, values)``, after every step: the privatized, normalised gradient at
  the canaries' coordinates;
* ``finish(...)``, after the final evaluation: scores, the guess, the bound,
  WORKDIR/audit.json and one console line (a WARNING when the bound passes the
  accountant's epsilon).

The statistic. Guess "in" for the k highest scores (gradient_scoring.py), k fixed
before the run from public numbers only (``choose_num_guesses``); c of them are right.
analysis 'fdp' (default) tests the run's own accountant curve with the f-DP one-run
test of Mahloujifar et al. and reports the accountant's epsilon of the leakiest curve
it rejects (audit/fdp.py); 'fdp_gaussian' tests Gaussian-DP curves (jax-privacy's
``epsilon_one_run_fdp``; a DP-SGD run is not exactly Gaussian-DP, so this assumes
more than the accountant claims); 'one_run' is Steinke et al.'s bound for any
(epsilon, delta)-DP mechanism (jax-privacy's ``epsilon_one_run``, equal to
statistics.epsilon_lower_bound). audit.json holds the three, for the three scores;
only the configured pair is "the" bound (picking the best afterwards would need a
union bound).

What is proven: if the run is the mechanism its accountant describes (for 'fdp'; any
(epsilon, delta)-DP mechanism for 'one_run'), the bound exceeds the accountant's
epsilon with probability below 1 - confidence. What is covered: the canaries go
through the real batch selection, the real clipping arithmetic, the real micro-batch
and cross-device sums, the real privatizer (DP-SGD or BandMF), the normaliser and the
accountant; a bug in any of them that leaks more than accounted can push the bound
over. What is NOT covered: the per-example gradients of real images (the model's
gradient code, 'vmap'/'fast'/'ghost' norms, augmult, the data pipeline): the canaries
bypass them. The input audit (mode 'input') covers those, with far less power.

audit.json is not private: it is computed from the membership bits and the noisy
updates at the canary coordinates, without further noise.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import jax
import numpy as np

from image_classification import config as config_lib
from image_classification.workdir import run_files
from image_classification.audit import config_checks
from image_classification.audit import fdp
from image_classification.audit import gradient_canaries
from image_classification.audit import gradient_scoring
from image_classification.audit import statistics
from image_classification.data import base
from image_classification.privacy import accounting
from image_classification.privacy import batch_selection
from image_classification.reporting import round_up
from image_classification.training import canary_slots
from image_classification.training import state as state_lib

NEIGHBORING_RELATION = 'add/remove one gradient canary'
SCORES = config_checks.SCORES      # config.audit.score's choices
ANALYSES = config_checks.ANALYSES  # config.audit.analysis's choices

# Candidate numbers of guesses, as fractions of m, for choose_num_guesses.
_GUESS_FRACTIONS = (0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16)
# choose_num_guesses keeps k whose ceiling (all k guesses right) is at least this
# times the accountant's epsilon, so that a leak well past the claim can show.
_CEILING_MARGIN = 1.4
_PILOT_STREAM = 0x50494C54  # 'PILT': the public pilot simulation's numpy stream
_PILOT_REPEATS = 3

COMPUTED_WITHOUT_NOISE = ('epsilon_lower_bound', 'bounds', 'num_correct',
                          'num_included', 'score_summary')


def _fail(field: str, value, why: str):
  raise config_lib.ConfigError(f'config.{field}={value!r}: {why}')


def choose_num_guesses(num_canaries: int, sampling_rate: float, noise_std: float,
                       clipping_norm: float, steps: int, delta: float,
                       confidence: float, epsilon: float) -> int:
  """k, from a simulation of the idealised run made of public numbers only.

  Simulates the per-step observations of m canaries (bits, sampling, Gaussian noise
  of std ``noise_std``) from a fixed public stream, scores them with the 'llr' score
  and picks, among k = 1%..16% of m, the one whose Gaussian-DP bound is largest on
  average; k whose ceiling is below 1.4 x ``epsilon`` are skipped when others remain
  (when none remains, as at a large epsilon, all compete).
  It reads nothing of the run: a k fixed this way keeps the test valid.
  """
  m = int(num_canaries)
  rng = np.random.default_rng(np.random.SeedSequence([_PILOT_STREAM, m, steps]))
  candidates = sorted({max(1, int(round(f * m))) for f in _GUESS_FRACTIONS
                       if round(f * m) <= m // 2} or {1})
  power = {k: 0.0 for k in candidates}
  for _ in range(_PILOT_REPEATS):
    included = rng.random(m) < 0.5
    sampled = (rng.random((steps, m)) < sampling_rate) & included
    x = clipping_norm * sampled + noise_std * rng.standard_normal((steps, m))
    scores = (gradient_scoring.llr_scores(x, sampling_rate, noise_std, clipping_norm)
              if noise_std > 0 else gradient_scoring.sum_scores(x))
    for k in candidates:
      c = gradient_scoring.top_k_correct(scores, included, k)
      power[k] += fdp.gaussian_mu_bound(m, k, c, confidence)
  ceiling = {k: fdp.gaussian_epsilon(fdp.gaussian_mu_bound(m, k, k, confidence), delta)
             for k in candidates}
  # When no k leaves that much room (a large epsilon), all compete on power alone.
  roomy = [k for k in candidates if ceiling[k] >= _CEILING_MARGIN * epsilon]
  return max(roomy or candidates, key=lambda k: (power[k], -k))


class GradientAuditHook:
  """The gradient audit of one run (see the module docstring)."""

  def __init__(self, num_canaries: int, confidence: float, analysis: str, score: str,
               num_guesses: int, parameter_name: str, seed: int,
               train_only_head: bool = False):
    self.num_canaries = int(num_canaries)
    self.confidence = float(confidence)
    self.analysis = analysis
    self.score = score
    self.num_guesses = int(num_guesses)
    self.parameter_name = parameter_name
    self.seed = int(seed)
    self.train_only_head = bool(train_only_head)
    self.included: np.ndarray | None = None
    self.num_real: int | None = None
    self.canaries: gradient_canaries.GradientCanarySet | None = None
    self.initial_values: np.ndarray | None = None
    self.observations: dict[int, Any] = {}

  # ------------------------------------------------------------ before training
  def prepare(self, dataset: base.DatasetSplits) -> base.DatasetSplits:
    if self.num_canaries < 2:
      _fail('audit.num_canaries', self.num_canaries, 'must be >= 2')
    self.num_real = int(dataset.train.num_examples)
    self.included = statistics.make_canary_membership(self.num_canaries, self.seed)
    return gradient_canaries.with_canaries(dataset, self.included)

  @property
  def train_size(self) -> int:
    return self.num_real + int(self.included.sum())

  def _parameter(self, params) -> tuple:
    trainable = state_lib.split_params(params, self.train_only_head)[0]
    try:
      path = gradient_canaries.choose_parameter(trainable, self.parameter_name)
    except ValueError as e:
      _fail('audit.canary_parameter', self.parameter_name, str(e))
    size = gradient_canaries.parameter_sizes(trainable)[path]
    if self.num_canaries > size:
      _fail('audit.num_canaries', self.num_canaries,
            f'the gradient canaries need one coordinate each of parameter '
            f'{"/".join(path)}, which has {size}: use at most {size} (or another '
            'audit.canary_parameter)')
    return path

  def check_model(self, params) -> None:
    """ConfigError unless the model has a parameter for the canaries (shapes only)."""
    self._parameter(params)

  def step_canaries(self, params, plan) -> canary_slots.GradientCanaries:
    """The canaries' coordinates for the step (raw norm RAW_NORM_IN_C x the plan's C);
    records their initial values (public: from the initialisation)."""
    path = self._parameter(params)
    size = gradient_canaries.parameter_sizes(params)[path]
    coordinates, included = gradient_canaries.draw(self.num_canaries, size, self.seed)
    if not np.array_equal(included, self.included):
      raise ValueError('the membership bits changed since prepare')
    self.canaries = gradient_canaries.GradientCanarySet(
        parameter=path, coordinates=coordinates, included=self.included,
        raw_norm=gradient_canaries.RAW_NORM_IN_C * float(plan.clipping_norm),
        num_real=self.num_real)
    leaf = canary_slots.leaf_values(params, path)
    self.initial_values = np.asarray(leaf).reshape(-1)[coordinates].astype(np.float64)
    return self.canaries.step_canaries()

  def observe(self, step: int, values) -> None:
    """Keeps step ``step``'s observation (a device array, fetched at the end)."""
    self.observations[int(step)] = values

  # ------------------------------------------------------------ after training
  def finish(self, apply_fn, params, mean, std, plan, workdir: str,
             inputs_of=None) -> dict[str, Any]:
    """Scores the canaries, computes the bounds, writes audit.json.

    Args as the input audit's (hook.AuditHook.finish); ``params`` are the evaluation
    parameters (EMA ones when EMA is on), used by the 'last_iterate' score only.

    Raises:
      ValueError: ``prepare``/``step_canaries`` were not called, or the plan's N is
        not the size of the audited training split.
    """
    del apply_fn, mean, std, inputs_of  # gradient canaries: no input is scored
    started = time.time()
    c = self.canaries
    if c is None or plan.dataset_size != c.train_size:
      raise ValueError(
          f'the privacy plan counts N={plan.dataset_size} training examples but the '
          f'audited training split has {c and c.train_size}: call the audit hook\'s '
          'prepare before the plan is made, and step_canaries before training')
    m, clip = c.num_canaries, float(plan.clipping_norm)
    steps = sorted(self.observations)
    observed = (np.stack([np.asarray(jax.device_get(self.observations[t]), np.float64)
                          for t in steps]) if steps else np.zeros((0, m)))
    x = observed * float(plan.expected_batch_size)  # back to clipped-sum units
    rate = float(plan.expected_batch_size) / float(plan.dataset_size)
    noise = self._noise_std(plan, steps)
    final = np.asarray(canary_slots.leaf_values(params, c.parameter)).reshape(-1)
    scores = {
        'llr': (gradient_scoring.llr_scores(x, rate, noise, clip)
                if np.all(noise > 0) and steps else gradient_scoring.sum_scores(x)),
        'sum': gradient_scoring.sum_scores(x),
        'last_iterate': gradient_scoring.last_iterate_scores(
            self.initial_values, final[c.coordinates]),
    }
    epsilon = math.inf if plan.non_private else float(plan.epsilon)
    k = self.num_guesses or choose_num_guesses(
        m, rate, float(np.mean(noise)) if noise.size else 0.0, clip, plan.steps,
        plan.delta, self.confidence, epsilon)
    k = min(k, m)
    analyses = _Analyses(plan, m, c.num_included, k, self.confidence)
    bounds = {}
    for name, values in scores.items():
      correct = gradient_scoring.top_k_correct(values, c.included, k)
      bounds[name] = {'num_correct': correct,
                      **analyses.all(correct, fdp_too=name == self.score)}
    chosen = bounds[self.score]
    bound = chosen[self.analysis]
    out = {
        'mode': 'gradient',
        'analysis': self.analysis,
        'score': self.score,
        'epsilon_lower_bound': bound,
        'epsilon_ceiling': analyses.ceiling(self.analysis),
        'num_canaries': m,
        'num_included': c.num_included,
        'confidence': self.confidence,
        'num_guesses': k,
        'num_guesses_chosen_before_training': not self.num_guesses,
        'num_correct': chosen['num_correct'],
        'epsilon': epsilon,
        'delta': float(plan.delta),
        'non_private': bool(plan.non_private),
        'privacy': ('NON-PRIVATE run (no noise): no DP guarantee to audit'
                    if plan.non_private else
                    'DP-SGD' if plan.mechanism_name == 'dpsgd' else
                    f'BandMF (b = {plan.num_bands})'),
        'bound_exceeds_accountant': bool(not plan.non_private and bound > epsilon),
        'comparable_with_accountant': (
            plan.neighboring_relation == batch_selection.ADD_OR_REMOVE_ONE),
        'method': {
            'fdp': 'mahloujifar-melis-chaudhuri-2025 f-DP one-run test, against the '
                   "run's own accountant curve (audit/fdp.py)",
            'fdp_gaussian': 'mahloujifar-melis-chaudhuri-2025 f-DP one-run test, '
                            'against Gaussian-DP curves (jax-privacy)',
            'one_run': 'steinke-nasr-jagielski-2023 one-run bound (jax-privacy)',
        }[self.analysis],
        'bounds': bounds,
        'ceilings': {name: analyses.ceiling(name) for name in ANALYSES},
        'steps_observed': len(steps),
        'steps': int(plan.steps),
        'canary_parameter': '/'.join(c.parameter),
        'canary_raw_norm': c.raw_norm,
        'clipping_norm': clip,
        'sampling_rate_used_by_scores': rate,
        'neighboring_relation': NEIGHBORING_RELATION,
        'accountant_neighboring_relation': plan.neighboring_relation,
        'accountant': plan.accountant,
        'dataset_size': int(plan.dataset_size),
        'num_real_train': c.num_real,
        'seed': self.seed,
        'score_summary': {
            'included': _summary(scores[self.score][c.included]),
            'excluded': _summary(scores[self.score][~c.included]),
        },
        'computed_without_noise': list(COMPUTED_WITHOUT_NOISE),
        'audit_seconds': time.time() - started,
        'covers': ('batch selection, clipping arithmetic, micro-batch and cross-device '
                   'sums, privatizer (noise), normaliser, accountant'),
        'does_not_cover': ("per-example gradients of real images (the model's gradient "
                           'code, clipped-sum implementations, augmult, data pipeline)'),
        'proves': ('if the run is the mechanism its accountant describes, '
                   'P[epsilon_lower_bound > epsilon] < 1 - confidence; a bound above '
                   "the accountant's epsilon is evidence of a bug"),
        'does_not_prove': ('that the accountant is tight or that the run is private: '
                           'a small bound is not evidence of privacy'),
    }
    run_files.write_json(workdir, run_files.AUDIT, out)
    self._print(out, plan, os.path.join(workdir, run_files.AUDIT))
    return out

  @staticmethod
  def _noise_std(plan, steps: list[int]) -> np.ndarray:
    """Per observed step, the std of the noise at one coordinate (clipped-sum units)."""
    if plan.non_private:
      return np.zeros(len(steps))
    if plan.noise_std_per_step:
      return np.asarray(plan.noise_std_per_step, np.float64)[steps]
    return np.full(len(steps), float(plan.noise_multiplier * plan.clipping_norm))

  def _print(self, out: dict[str, Any], plan, path: str) -> None:
    bound, epsilon = out['epsilon_lower_bound'], out['epsilon']
    eps_text = ('inf (NON-PRIVATE)' if plan.non_private
                else round_up.round_up(epsilon, decimals=3))  # up: a claim
    print(f'audit (gradient, {self.analysis}, {self.score}): epsilon lower bound '
          f'{bound:.3f} at {100 * self.confidence:g}% confidence from '
          f'{out["num_canaries"]} gradient canaries ({out["num_included"]} included; '
          f'{out["num_correct"]}/{out["num_guesses"]} guesses correct; ceiling '
          f'{out["epsilon_ceiling"]:.3f}) vs accountant epsilon {eps_text} at '
          f'delta={round_up.round_up(plan.delta, 3)}; wrote {path}', flush=True)
    if out['bound_exceeds_accountant']:
      print(f'WARNING: the audit lower bound {bound:.3f} EXCEEDS the accountant\'s '
            f'epsilon {round_up.round_up(epsilon, decimals=3)}: evidence of a privacy '
            'bug (false with '
            f'probability < {1 - self.confidence:g} if the run is the accounted '
            'mechanism)', flush=True)


class _Analyses:
  """The three bounds for (m, k, c) of one run, and their ceilings (c = k)."""

  def __init__(self, plan, num_canaries: int, num_included: int, num_guesses: int,
               confidence: float):
    self.plan, self.m, self.k, self.confidence = plan, num_canaries, num_guesses, confidence
    self.num_in = num_included
    selection = plan.batch_selection()
    relation = selection.neighboring_relation

    def event(s):
      return selection.dp_event(s, plan.steps)

    def epsilon_of(s, accountant=plan.accountant):
      return accounting.epsilon(event(s), plan.delta, accountant, relation)

    @functools.lru_cache(maxsize=None)
    def cheap(s):  # RDP's epsilon >= PLD's: where to stop searching, never reported
      try:
        return epsilon_of(s, 'rdp')
      except accounting.UnsupportedEventError:
        return epsilon_of(s)

    self.family = fdp.CurveFamily(event, epsilon_of)
    self.cheap = cheap
    self.sigma = 0.0 if plan.non_private else float(plan.noise_multiplier)
    self.fdp_detail: dict[str, Any] = {}
    self._ceilings: dict[str, float] = {}

  def _jax_auditor(self, correct: int):
    """jax-privacy's auditor on the guess itself: the k guessed canaries score 1, the
    others 0, so that the threshold 1 makes exactly k guesses, c of them right."""
    from jax_privacy import auditing  # pylint: disable=g-import-not-at-top
    in_scores = np.r_[np.ones(correct), np.zeros(self.num_in - correct)]
    out_scores = np.r_[np.ones(self.k - correct), np.zeros(self.m - self.num_in
                                                             - (self.k - correct))]
    return auditing, auditing.CanaryScoreAuditor(in_scores, out_scores)

  def fdp_gaussian(self, correct: int) -> float:
    """jax-privacy's epsilon_one_run_fdp at k guesses (Gaussian-DP curves)."""
    auditing, auditor = self._jax_auditor(correct)
    return float(auditor.epsilon_one_run_fdp(
        1.0 - self.confidence, self.plan.delta,
        threshold_strategy=auditing.Explicit(1.0)))

  def one_run(self, correct: int) -> float:
    """jax-privacy's epsilon_one_run at k guesses (Steinke et al.; equal to
    statistics.epsilon_lower_bound, tests/audit/test_fdp.py)."""
    auditing, auditor = self._jax_auditor(correct)
    return float(auditor.epsilon_one_run(1.0 - self.confidence, self.plan.delta,
                                         threshold_strategy=auditing.Explicit(1.0)))

  def fdp(self, correct: int) -> float:
    """The f-DP test against the run's own accountant curves (audit/fdp.py)."""
    cap = max(2.0 * self.fdp_gaussian(self.k), 1.0)
    found = fdp.lower_bound(self.m, self.k, correct, self.confidence, self.family,
                            self.sigma, epsilon_cap=cap, cheap_epsilon=self.cheap)
    self.fdp_detail[correct] = {
        'noise_multiplier_rejected': found.noise_multiplier,
        'rejects_accountant_curve': found.rejects_claim, 'capped': found.capped,
        'curves_from': found.curve_accountant}
    return found.epsilon

  def all(self, correct: int, fdp_too: bool = True) -> dict[str, Any]:
    out = {'fdp_gaussian': self.fdp_gaussian(correct), 'one_run': self.one_run(correct)}
    if fdp_too:
      out['fdp'] = self.fdp(correct)
      out['fdp_detail'] = self.fdp_detail[correct]
    return out

  def ceiling(self, analysis: str) -> float:
    if analysis not in self._ceilings:
      self._ceilings[analysis] = getattr(self, analysis)(self.k)
    return self._ceilings[analysis]


def _summary(values: np.ndarray) -> dict[str, Any]:
  values = values[np.isfinite(values)]
  if values.size == 0:
    return {'count': 0, 'mean': None, 'std': None}
  return {'count': int(values.size), 'mean': float(values.mean()),
          'std': float(values.std())}
