"""The audit as a run plug-in: one call on each side of training (training/loop.py).

* ``AuditHook.prepare(dataset)``, before the privacy plan is made: takes the
  canaries out of the training split and puts back the included ones
  (audit/canaries.py). The returned training split is what the run trains on and
  what the accountant counts (N = n - m + number included).
* ``AuditHook.finish(apply_fn, params, mean, std, plan, workdir)``, after the final
  evaluation: scores every canary with the evaluation parameters (audit/scoring.py),
  turns the scores into an epsilon lower bound at the plan's delta
  (audit/statistics.py), writes WORKDIR/audit.json and prints one console line.

``for_config(config)`` gives the hook that config.audit asks for (None when the audit
is off); runs.train and runs.check plug it into the loop. The loop refuses a config
with the audit on and no hook.

What is proven (Steinke, Nasr & Jagielski 2023, Theorem 3.1; see statistics.py):
if the training run is (epsilon, delta)-DP with respect to adding or removing
one canary, with everything else fixed, then the reported
epsilon_lower_bound exceeds epsilon with probability below 1 - confidence.
A bound above the accountant's epsilon is therefore evidence of a bug.

What is NOT proven:
* That the accountant is tight, or that the run is private: a bound of 0, or one
  far below the accountant's epsilon, says nothing either way. On the quickstart
  scale the audit of a private run has almost no power (see docs/audit.md).
* Like-for-like comparison under fixed-size batches: the audit's neighbouring
  relation is add/remove of one canary; the 'fixed' sampler is accounted under
  replace-one, which says nothing about adding an example. audit.json marks such
  runs 'comparable_with_accountant': false.
* That the premise holds exactly. The plan derives the sampling rate q = B / N
  and calibrates sigma from the N of the training split actually built, so
  adding a canary also moves q (by a factor N / (N + 1)) and sigma slightly.
  The accountant's guarantee is for fixed q and sigma, the convention of every
  DP-SGD implementation that sets q = B / N; we know of no proof covering the
  data-dependent q, and only expect its effect to be negligible at this N.
* audit.json is not differentially private: it is computed from the membership
  bits and from the model's outputs on training examples, without noise.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections
import numpy as np

from image_classification import config as config_lib
from image_classification.audit import canaries as canaries_lib
from image_classification.audit import gradient_hook
from image_classification.audit import scoring
from image_classification.audit import statistics
from image_classification.data import base
from image_classification.privacy import batch_selection
from image_classification.reporting import round_up
from image_classification.workdir import run_files

CANARY_TYPES = ('mislabeled',)
NEIGHBORING_RELATION = 'add/remove one canary'

# Figures in audit.json computed from private data (the canaries and their
# membership) without noise: not covered by the run's (epsilon, delta) guarantee.
COMPUTED_WITHOUT_NOISE = ('epsilon_lower_bound', 'choices', 'score_summary',
                          'canary_label_rate', 'num_included', 'num_correct')


def _fail(field: str, value, why: str):
  raise config_lib.ConfigError(f'config.{field}={value!r}: {why}')


class AuditHook:
  """The audit of one run: its settings, then (after ``prepare``) its canaries.

  Attributes:
    num_canaries: config.audit.num_canaries.
    confidence: config.audit.confidence.
    canary_type: config.audit.canary_type.
    seed: config.seed; the canaries and membership bits are drawn from it.
    canaries: the CanarySet ``prepare`` drew (None before).
  """

  def __init__(self, num_canaries: int, confidence: float, canary_type: str,
               seed: int):
    self.num_canaries = int(num_canaries)
    self.confidence = float(confidence)
    self.canary_type = canary_type
    self.seed = int(seed)
    self.canaries: canaries_lib.CanarySet | None = None

  def prepare(self, dataset: base.DatasetSplits) -> base.DatasetSplits:
    """The dataset with the audited training split (audit/canaries.py).

    Raises:
      ConfigError: unknown canary_type, or not fewer canaries than training examples.
    """
    if self.canary_type not in CANARY_TYPES:
      _fail('audit.canary_type', self.canary_type, f'choose one of {CANARY_TYPES}')
    n, m = int(dataset.train.num_examples), self.num_canaries
    if not 2 <= m < n:
      _fail('audit.num_canaries', m,
            f'must be in [2, {n - 1}]: canaries are taken out of the training split '
            f'({n} examples) and some of it must stay clean')
    dataset, self.canaries = canaries_lib.prepare(dataset, m, self.seed)
    return dataset

  # Input canaries are examples, not gradients: nothing to check in the model, no
  # canary for the step to insert, nothing to observe (the loop calls these on any
  # audit hook; the gradient audit's are in audit/gradient_hook.py).
  def check_model(self, params) -> None:
    del params

  def step_canaries(self, params, plan) -> None:
    del params, plan

  def observe(self, step: int, values) -> None:
    raise ValueError('the input audit observes no step')

  def finish(self, apply_fn, params, mean, std, plan, workdir: str,
             inputs_of=None) -> dict[str, Any]:
    """Scores the canaries, computes the epsilon lower bound, writes audit.json.

    The score of a canary is the log-probability the model gives its wrong label
    (scoring.score_canaries); it does not look at the membership bits, which is
    all validity needs. A non-finite score (a diverged model) is ranked lowest.
    The bound is statistics.audit_from_scores at delta = plan.delta and
    self.confidence, with the default guess counts fixed in advance.

    Args:
      apply_fn: the model's apply function.
      params: the final evaluation parameters (EMA ones when EMA is on).
      mean, std: dataset.mean / dataset.std, as passed to evaluation.
      plan: the run's privacy plan (epsilon, delta, non_private, dataset_size,
        sampling, neighboring_relation, mechanism_name, num_bands).
      workdir: where audit.json goes.
      inputs_of: what the model sees of raw images, where that is not the images
        (config.model.features: their features); None: the images themselves.

    Returns:
      audit.json's content as a dict. 'epsilon' is float('inf') for a
      non-private run (written as null in the JSON file, beside non_private: true).

    Raises:
      ValueError: ``prepare`` was not called, or the plan's N is not the size of
        the audited training split (the plan was made before ``prepare``).
    """
    c = self.canaries
    if c is None or plan.dataset_size != c.train_size:
      raise ValueError(
          f'the privacy plan counts N={plan.dataset_size} training examples but the '
          f'audited training split has {c and c.train_size}: call the audit hook\'s '
          'prepare before the plan is made')
    images, labels, _ = c.canaries()
    if inputs_of is not None:  # e.g. the canaries' features, as the model trained on
      images = inputs_of(images)
    logits = scoring.canary_logits(apply_fn, params, images, mean, std)
    scores, nonfinite = scoring.rankable(scoring.score_canaries(logits, labels))
    result = statistics.audit_from_scores(scores, c.included, plan.delta,
                                          self.confidence)
    out = self._report(result, plan, c, np.argmax(logits, axis=-1) == labels,
                       nonfinite)
    run_files.write_json(workdir, run_files.AUDIT, out)
    self._print(out, plan, os.path.join(workdir, run_files.AUDIT))
    return out

  def _report(self, result, plan, c: canaries_lib.CanarySet, predicted: np.ndarray,
              nonfinite: np.ndarray) -> dict[str, Any]:
    """audit.json: the statistics, beside what they are compared with and why."""
    epsilon = math.inf if plan.non_private else float(plan.epsilon)
    return {
        'mode': 'input',
        'analysis': 'one_run',
        **result,
        # What perfect guessing would give with these guess counts: the most m can show.
        'epsilon_ceiling': max(
            statistics.epsilon_lower_bound(r['num_guesses'], r['num_guesses'],
                                           result['num_canaries'], plan.delta,
                                           result['per_choice_confidence'])
            for r in result['choices']),
        'epsilon': epsilon,
        'non_private': bool(plan.non_private),
        'privacy': ('NON-PRIVATE run (no noise): no DP guarantee to audit'
                    if plan.non_private else
                    'DP-SGD' if plan.mechanism_name == 'dpsgd' else
                    f'BandMF (b = {plan.num_bands})'),
        'bound_exceeds_accountant': bool(
            not plan.non_private and result['epsilon_lower_bound'] > epsilon),
        'comparable_with_accountant': (
            plan.neighboring_relation == batch_selection.ADD_OR_REMOVE_ONE),
        'neighboring_relation': NEIGHBORING_RELATION,
        'accountant_neighboring_relation': plan.neighboring_relation,
        'canary_type': self.canary_type,
        'dataset_size': int(plan.dataset_size),
        'num_clean_train': c.num_clean_train,
        'seed': self.seed,
        'num_nonfinite_scores': int(nonfinite.sum()),
        'canary_label_rate': {
            'included': float(predicted[c.included].mean())
                        if c.num_included else None,
            'excluded': float(predicted[~c.included].mean())
                        if c.num_included < c.num_canaries else None,
        },
        'computed_without_noise': list(COMPUTED_WITHOUT_NOISE),
        'proves': ('if the run is (epsilon, delta)-DP under add/remove of one canary, '
                   'P[epsilon_lower_bound > epsilon] < 1 - confidence; a bound above '
                   'the accountant\'s epsilon is evidence of a bug'),
        'does_not_prove': ('that the accountant is tight or that the run is private: '
                           'a small bound is not evidence of privacy'),
    }

  def _print(self, out: dict[str, Any], plan, path: str) -> None:
    """The console line, and a warning when the bound exceeds the accountant."""
    bound, epsilon = out['epsilon_lower_bound'], out['epsilon']
    eps_text = ('inf (NON-PRIVATE)' if plan.non_private
                else round_up.round_up(epsilon, decimals=3))  # up: a claim
    print(f'audit: epsilon lower bound {bound:.3f} at {100 * self.confidence:g}% '
          f'confidence from {out["num_canaries"]} canaries ({out["num_included"]} '
          f'included; {out["num_correct"]}/{out["num_guesses"]} guesses correct) '
          f'vs accountant epsilon {eps_text} at '
          f'delta={round_up.round_up(plan.delta, 3)}; wrote {path}', flush=True)
    if out['bound_exceeds_accountant']:
      print(f'WARNING: the audit lower bound {bound:.3f} EXCEEDS the accountant\'s '
            f'epsilon {round_up.round_up(epsilon, decimals=3)}: evidence of a privacy '
            'bug (false with '
            f'probability < {1 - self.confidence:g} if the run is DP)', flush=True)
    if not out['comparable_with_accountant']:
      print(f"note: the accountant's adjacency is {plan.neighboring_relation} "
            f'(sampling={plan.sampling}); the audit tests add/remove, so the two '
            'epsilons are not like for like', flush=True)


def for_config(config: ml_collections.ConfigDict
               ) -> AuditHook | gradient_hook.GradientAuditHook | None:
  """The audit config.audit asks for; None when config.audit.enabled is False.

  mode 'input' (the default): mislabelled input canaries (this module); mode
  'gradient': white-box gradient canaries (audit/gradient_hook.py)."""
  a = config.audit
  if not a.enabled:
    return None
  if a.mode == 'gradient':
    return gradient_hook.GradientAuditHook(
        a.num_canaries, a.confidence, a.analysis, a.score, a.num_guesses,
        a.canary_parameter, config.seed, config.model.train_only_head)
  return AuditHook(a.num_canaries, a.confidence, a.canary_type, config.seed)
