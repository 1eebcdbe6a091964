"""Wires the one-run audit (privacy/audit.py) into a training run.

Two calls, one on each side of training (see loop.py):

* ``prepare(config, dataset)``, before the privacy plan is made: picks m =
  config.audit.num_canaries training examples, takes them OUT of the training
  split, gives each a fixed random wrong label, draws each canary's membership
  bit (probability 1/2) and puts back only the included canaries, with their
  wrong labels. The returned training split is what the run trains on and what
  the accountant counts (N = n - m + number included).
* ``finish(setup, apply_fn, params, mean, std, plan, workdir)``, after the final
  evaluation: scores every canary with the evaluation parameters (log-probability
  of its wrong label), turns the scores into an epsilon lower bound with
  ``audit.audit_from_scores`` at the plan's delta, and writes WORKDIR/audit.json.

What is proven (Steinke, Nasr & Jagielski 2023, Theorem 3.1; see audit.py):
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

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np

from image_classification.data import augmentation
from image_classification.data import base
from image_classification.privacy import audit
from image_classification.privacy import batch_selection
from image_classification.reporting import run_files

AUDIT = 'audit.json'
CANARY_TYPES = ('mislabeled',)
NEIGHBORING_RELATION = 'add/remove one canary'

# Stream tag for choosing which training examples become canaries; distinct from
# the tags in audit.py (membership, wrong labels) and from the sampler's.
_POOL_STREAM = 0x504F4F4C  # 'POOL'
_SCORE_BATCH = 1000

# Figures in audit.json computed from private data (the canaries and their
# membership) without noise: not covered by the run's (epsilon, delta) guarantee.
COMPUTED_WITHOUT_NOISE = ('epsilon_lower_bound', 'choices', 'score_summary',
                          'canary_label_rate', 'num_included', 'num_correct')


@dataclasses.dataclass(frozen=True)
class AuditSetup:
  """What ``prepare`` decided before training; ``finish`` needs nothing else.

  The canaries are examples of the original training split under a new label;
  their images are read from ``source`` only when needed (``canaries()``), so
  ``prepare`` reads no pixels (dry runs, on-disk ImageNet).

  Attributes:
    source: the original training split (before canaries were taken out).
    source_indices: [m] distinct positions of the canaries in ``source``.
    label_shifts: [m] in [1, num_classes): canary label = (true label + shift)
      mod num_classes, never the true label.
    included: [m] bool membership bits; True canaries are in the training split.
    num_classes: number of classes.
    seed: the seed the canaries and membership were drawn from (config.seed).
    confidence: config.audit.confidence.
    canary_type: config.audit.canary_type.
  """
  source: base.ImageSource
  source_indices: np.ndarray
  label_shifts: np.ndarray
  included: np.ndarray
  num_classes: int
  seed: int
  confidence: float
  canary_type: str

  @property
  def num_canaries(self) -> int:
    return int(self.included.shape[0])

  @property
  def num_included(self) -> int:
    return int(self.included.sum())

  @property
  def num_clean_train(self) -> int:
    """n - m: training examples that are not canaries."""
    return int(self.source.num_examples) - self.num_canaries

  @property
  def train_size(self) -> int:
    """N: the size of the training split built by ``prepare``."""
    return self.num_clean_train + self.num_included

  def canaries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [m, H, W, C], canary labels [m] int32, true labels [m] int32)."""
    images, true_labels = self.source.get(self.source_indices)
    true_labels = np.asarray(true_labels, np.int32)
    labels = ((true_labels + self.label_shifts) % self.num_classes).astype(np.int32)
    return np.asarray(images), labels, true_labels


@dataclasses.dataclass(frozen=True)
class RelabelledSource:
  """A view of an ImageSource: a subset of its examples, some relabelled.

  Example i is ``source`` example indices[i] with label (label + shifts[i]) mod
  num_classes. Reads ``source`` on demand, so large on-disk splits are never
  loaded whole.
  """
  source: base.ImageSource
  indices: np.ndarray  # [N] int64, distinct positions in source.
  shifts: np.ndarray  # [N] int32; 0 keeps the label.
  num_classes: int

  @property
  def num_examples(self) -> int:
    return int(self.indices.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.source.image_shape

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_examples):
      raise IndexError(f'indices outside [0, {self.num_examples})')
    images, labels = self.source.get(self.indices[indices], step=step)
    labels = (np.asarray(labels, np.int32) + self.shifts[indices]) % self.num_classes
    return images, labels.astype(np.int32)


def _fail(field: str, value, why: str):
  # Imported here: image_classification.config imports the model registry.
  from image_classification import config as config_lib  # pylint: disable=g-import-not-at-top
  raise config_lib.ConfigError(f'config.{field}={value!r}: {why}')


def canary_draws(num_examples: int, num_canaries: int, num_classes: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The audit's random choices, all fixed before training.

  Args:
    num_examples: n, the size of the training split canaries are taken from.
    num_canaries: m <= n.
    num_classes: C >= 2.
    seed: a non-negative integer (the run's config.seed).

  Returns:
    (source_indices [m] distinct in [0, n), label_shifts [m] uniform in
     [1, C), included [m] bool with P[True] = 1/2). Positions and shifts come from
    SeedSequence([seed, 'POOL']); the bits from audit.make_canary_membership,
    i.e. SeedSequence([seed, 'MEMB']). Neither is a stream the trainer uses.
  """
  if num_classes < 2:
    raise ValueError(f'need >= 2 classes to mislabel, got {num_classes}')
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), _POOL_STREAM]))
  source_indices = rng.choice(num_examples, size=num_canaries, replace=False)
  label_shifts = rng.integers(1, num_classes, size=num_canaries).astype(np.int32)
  included = audit.make_canary_membership(num_canaries, seed)
  return source_indices.astype(np.int64), label_shifts, included


def prepare(config, dataset: base.DatasetSplits
            ) -> tuple[base.DatasetSplits, AuditSetup | None]:
  """Builds the audited training split: clean examples plus the included canaries.

  m = config.audit.num_canaries examples are drawn uniformly from the training
  split and removed from it. Each gets a fixed wrong label, uniform over the
  other classes, and a membership bit, 1 with probability 1/2. Only canaries
  with bit 1 go back into the training split, under their wrong label; canaries
  with bit 0 are used nowhere in training. The test split is untouched. The
  new training split has N = n - m + (number of bits set) examples: the N the
  privacy plan must be made with.

  Randomness (``canary_draws``): numpy streams from SeedSequence([config.seed,
  tag]) with tags distinct from each other and from the sampler's
  ([seed, 0x5A3D, step]); the JAX keys (noise, init) come from another generator.
  So the bits are reproducible from config.seed and independent of the training
  streams, and training sees them only through the data set.

  No pixels are read: the training split is a relabelled view of the original
  one, so this is cheap for any dataset and works on dry-run stand-ins.

  Args:
    config: the run's config; reads audit.* and seed.
    dataset: the loaded splits.

  Returns:
    (dataset, None) when config.audit.enabled is False (the dataset unchanged);
    else (dataset with the audited training split, AuditSetup).

  Raises:
    ConfigError: unknown canary_type, or not fewer canaries than training examples.
  """
  a = config.audit
  if not a.enabled:
    return dataset, None
  if a.canary_type not in CANARY_TYPES:
    _fail('audit.canary_type', a.canary_type, f'choose one of {CANARY_TYPES}')
  train = dataset.train
  n, m, seed = int(train.num_examples), int(a.num_canaries), int(config.seed)
  if not 2 <= m < n:
    _fail('audit.num_canaries', m,
          f'must be in [2, {n - 1}]: canaries are taken out of the training split '
          f'({n} examples) and some of it must stay clean')
  source_indices, shifts, included = canary_draws(n, m, dataset.num_classes, seed)
  is_canary = np.zeros(n, bool)
  is_canary[source_indices] = True
  clean = np.flatnonzero(~is_canary)
  indices = np.concatenate([clean, source_indices[included]])
  all_shifts = np.concatenate([np.zeros(clean.shape[0], np.int32), shifts[included]])
  new_train = RelabelledSource(train, indices, all_shifts, int(dataset.num_classes))
  setup = AuditSetup(
      source=train, source_indices=source_indices, label_shifts=shifts,
      included=included, num_classes=int(dataset.num_classes), seed=seed,
      confidence=float(a.confidence), canary_type=a.canary_type)
  return dataclasses.replace(dataset, train=new_train), setup


def canary_logits(apply_fn, params, images, mean, std,
                  batch_size: int = _SCORE_BATCH) -> np.ndarray:
  """Model outputs on ``images``, standardised exactly as evaluation does.

  Args:
    apply_fn: the Flax model's apply.
    params: the parameters evaluation uses (EMA ones when EMA is on).
    images: [m, H, W, C] raw images (uint8 or float, as the source gives them).
    mean, std: the dataset's public standardisation constants.
    batch_size: images per forward pass; the last batch is padded.

  Returns:
    [m, num_classes] float32 logits.
  """
  params = jax.device_get(params)  # Replicated on the mesh; a host copy is simple.

  @jax.jit
  def forward(p, x):
    return apply_fn({'params': p}, augmentation.standardise(x, mean, std),
                    is_training=False)

  m = images.shape[0]
  size = min(batch_size, m)
  out = []
  for start in range(0, m, size):
    chunk = images[start:start + size]
    pad = size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(forward(params, chunk))[:size - pad])
  return np.concatenate(out)


def finish(setup: AuditSetup, apply_fn, params, mean, std, plan,
           workdir: str) -> dict[str, Any]:
  """Scores the canaries, computes the epsilon lower bound, writes audit.json.

  The score of a canary is the log-probability the model gives its wrong label
  (``audit.score_canaries``); it does not look at the membership bits, which is
  all validity needs. A non-finite score (a diverged model) is ranked lowest.
  The bound is ``audit.audit_from_scores`` at delta = plan.delta and
  setup.confidence, with the default guess counts fixed in advance.

  Args:
    setup: from ``prepare``.
    apply_fn: the model's apply function.
    params: the final evaluation parameters (EMA ones when EMA is on).
    mean, std: dataset.mean / dataset.std, as passed to evaluation.
    plan: the run's PrivacyPlan (epsilon, delta, non_private, dataset_size).
    workdir: where audit.json goes.

  Returns:
    audit.json's content as a dict. 'epsilon' is float('inf') for a
    non-private run (written as null in the JSON file, beside non_private: true).

  Raises:
    ValueError: the plan's N is not the size of the audited training split (the
      canaries were added after the plan was made, or not at all).
  """
  if plan.dataset_size != setup.train_size:
    raise ValueError(
        f'the privacy plan counts N={plan.dataset_size} training examples but the '
        f'audited training split has {setup.train_size}: call canary_audit.prepare '
        'before the plan is made')
  images, labels, _ = setup.canaries()
  logits = canary_logits(apply_fn, params, images, mean, std)
  scores = audit.score_canaries(logits, labels)
  # NaN (non-finite logits) cannot be ranked: rank it lowest. Ties keep index
  # order, which does not depend on the membership bits.
  nonfinite = ~np.isfinite(scores)
  scores = np.where(nonfinite, -np.inf, scores)
  result = audit.audit_from_scores(scores, setup.included, plan.delta,
                                   setup.confidence)
  predicted = np.argmax(logits, axis=-1) == labels
  epsilon = math.inf if plan.non_private else float(plan.epsilon)
  bound = result['epsilon_lower_bound']
  # Like for like only when the accountant's adjacency is the audit's (add/remove).
  comparable = plan.neighboring_relation == batch_selection.ADD_OR_REMOVE_ONE
  out = {
      **result,
      'epsilon': epsilon,
      'non_private': bool(plan.non_private),
      'privacy': ('NON-PRIVATE run (no noise): no DP guarantee to audit'
                  if plan.non_private else
                  'DP-SGD' if getattr(plan, 'mechanism_name', 'dpsgd') == 'dpsgd' else
                  f'BandMF (b = {plan.num_bands})'),
      'bound_exceeds_accountant': bool(not plan.non_private and bound > epsilon),
      'comparable_with_accountant': comparable,
      'neighboring_relation': NEIGHBORING_RELATION,
      'accountant_neighboring_relation': plan.neighboring_relation,
      'canary_type': setup.canary_type,
      'dataset_size': int(plan.dataset_size),
      'num_clean_train': setup.num_clean_train,
      'seed': setup.seed,
      'num_nonfinite_scores': int(nonfinite.sum()),
      'canary_label_rate': {
          'included': float(predicted[setup.included].mean())
                      if setup.num_included else None,
          'excluded': float(predicted[~setup.included].mean())
                      if setup.num_included < setup.num_canaries else None,
      },
      'computed_without_noise': list(COMPUTED_WITHOUT_NOISE),
      'proves': ('if the run is (epsilon, delta)-DP under add/remove of one canary, '
                 'P[epsilon_lower_bound > epsilon] < 1 - confidence; a bound above '
                 'the accountant\'s epsilon is evidence of a bug'),
      'does_not_prove': ('that the accountant is tight or that the run is private: '
                         'a small bound is not evidence of privacy'),
  }
  run_files.write_json(workdir, AUDIT, out)
  eps_text = 'inf (NON-PRIVATE)' if plan.non_private else f'{epsilon:.3f}'
  print(f'audit: epsilon lower bound {bound:.3f} at {100 * setup.confidence:g}% '
        f'confidence from {setup.num_canaries} canaries ({setup.num_included} '
        f'included; {result["num_correct"]}/{result["num_guesses"]} guesses correct) '
        f'vs accountant epsilon {eps_text} at delta={plan.delta:g}; wrote '
        f'{os.path.join(workdir, AUDIT)}', flush=True)
  if out['bound_exceeds_accountant']:
    print(f'WARNING: the audit lower bound {bound:.3f} EXCEEDS the accountant\'s '
          f'epsilon {epsilon:.3f}: evidence of a privacy bug (false with '
          f'probability < {1 - setup.confidence:g} if the run is DP)', flush=True)
  if not comparable:
    print(f'note: the accountant\'s adjacency is {plan.neighboring_relation} '
          f'(sampling={plan.sampling}); the audit tests '
          'add/remove, so the two epsilons are not like for like', flush=True)
  return out
