"""The privacy plan of a run, fixed before training starts: steps, sampling rate,
noise multiplier (calibrated to the target epsilon unless given) and the epsilon the
run will have spent when it ends. It is what plan.json, privacy.json, privacy.md and
the checkpoints' metadata report.

This module is the one reader of ``config.privacy``: it validates the fields (asking
the registries ``batch_selection.SAMPLERS``, ``privatizers.PRIVATIZERS`` and
``accounting.ACCOUNTANTS`` for their choices) and builds the mechanism's objects from
the plan: ``plan.batch_selection(seed)``, ``plan.privatizer()``, ``plan.ledger()``.
The BandMF strategy (optimised for the plan's steps and bands) is cached in the
workdir here, so that the DP core does no file I/O.
"""
import dataclasses
import json
import math
import os

from absl import logging
import ml_collections
import numpy as np

from image_classification.privacy import accounting
from image_classification.privacy import bandmf
from image_classification.privacy import batch_selection as selection_lib
from image_classification.privacy import mechanism_secret
from image_classification.privacy import privatizers
from image_classification.reporting import round_up
from image_classification import errors

# Figures the trainer logs that are computed from private data WITHOUT noise: they are
# not covered by the (epsilon, delta) guarantee and must not be published as such.
NON_PRIVATE_FIGURES = ('train_loss', 'clip_fraction', 'realized_batch_size',
                       'nonfinite_gradients', 'images_per_sec')

STRATEGY_FILE = 'bandmf_strategy.json'

# A plan field with this metadata is part of the mechanism: a resume must find it
# unchanged (workdir/resume.py).
_RESUME = {'resume': True}


def _resume_field(default=dataclasses.MISSING):
  return dataclasses.field(default=default, metadata=_RESUME)


class PlanError(errors.ConfigError):
  """No plan meets the config's privacy target, or a privacy field is invalid; the
  message names the fields. A ConfigError, so that callers need not re-wrap it."""


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  noise_multiplier: float = _resume_field()
  clipping_norm: float = _resume_field()
  sampling: str = _resume_field()        # a key of batch_selection.SAMPLERS
  sampling_rate: float = _resume_field()
  expected_batch_size: int = _resume_field()
  steps: int = _resume_field()
  delta: float = _resume_field()
  epsilon: float = dataclasses.field()   # spent after all steps (inf when non-private)
  target_epsilon: float = dataclasses.field()
  accountant: str = _resume_field()      # a key of accounting.ACCOUNTANTS
  neighboring_relation: str = dataclasses.field()
  dataset_size: int = _resume_field()
  non_private: bool = _resume_field(False)
  # Testing switch: noise and batches derived from config.seed (no guarantee once the
  # config is published); see privacy/mechanism_secret.py.
  insecure_seeded_noise: bool = False
  # A key of privatizers.PRIVATIZERS. For BandMF, sampling_rate is the rate within
  # the eligible group (b * B / N) and the strategy's Toeplitz coefficients (filled in
  # by with_strategy, cached in the workdir) are reported.
  mechanism_name: str = _resume_field('dpsgd')
  num_bands: int = _resume_field(1)
  strategy_coefs: tuple = _resume_field(())
  strategy_sensitivity: float = 1.0
  noise_std_per_step: tuple = ()   # BandMF: marginal std of step t's noise, per coordinate

  @property
  def _privatizer_class(self):
    return privatizers.PRIVATIZERS[self.mechanism_name]

  @property
  def large_delta(self) -> bool:
    """Whether delta >= 1/N (only possible with privacy.allow_large_delta=True)."""
    return bool(self.delta >= 1.0 / self.dataset_size)

  def batch_selection(self, seed: int | None = None):
    """The batch selection the run draws from (with its secret ``seed``) and is
    accounted with (any seed)."""
    chosen = selection_lib.SAMPLERS[self.sampling](
        self.dataset_size, self.expected_batch_size, seed=seed)
    return self._privatizer_class.accounted_selection(chosen, self.num_bands)

  def privatizer(self):
    """The privatizer of the plan (BandMF needs ``with_strategy`` first)."""
    if self.non_private:
      return privatizers.GaussianPrivatizer(0.0)
    return self._privatizer_class.create(
        noise_multiplier=self.noise_multiplier, clipping_norm=self.clipping_norm,
        steps=self.steps, num_bands=self.num_bands,
        strategy_coefs=self.strategy_coefs,
        strategy_sensitivity=self.strategy_sensitivity)

  def ledger(self, accountant: str | None = None) -> accounting.Ledger:
    """Epsilon spent after t steps, by the plan's accountant unless another is named."""
    return accounting.Ledger(self.batch_selection(), self.noise_multiplier, self.delta,
                             accountant or self.accountant)

  def with_strategy(self, cache_dir: str | None = None) -> 'PrivacyPlan':
    """The plan with its BandMF strategy (coefficients, sensitivity and the noise std
    of every step) filled in; the coefficients are cached in ``cache_dir``."""
    if not self._privatizer_class.uses_strategy:
      return self
    coefs = strategy(self.steps, self.num_bands, cache_dir)
    sensitivity = bandmf.sensitivity(coefs, self.steps)
    stds = bandmf.marginal_stds(
        coefs, self.steps, self.noise_multiplier * self.clipping_norm * sensitivity)
    return dataclasses.replace(self, strategy_coefs=tuple(float(c) for c in coefs),
                               strategy_sensitivity=sensitivity,
                               noise_std_per_step=tuple(float(x) for x in stds))

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    for k in ('epsilon', 'target_epsilon'):
      if not math.isfinite(d[k]):
        d[k] = None if self.non_private else d[k]
    d['mechanism'] = ('non-private (no noise): NO differential privacy guarantee'
                      if self.non_private else
                      self._privatizer_class.describe(self.num_bands))
    if self._privatizer_class.uses_strategy:
      d['strategy_coefs'] = list(self.strategy_coefs)
      d['noise_std_per_step'] = list(self.noise_std_per_step)
      d['participation'] = self.batch_selection().describe()
    else:
      del d['strategy_coefs'], d['strategy_sensitivity'], d['noise_std_per_step']
    d['computed_without_noise'] = list(NON_PRIVATE_FIGURES)
    d['randomness'] = mechanism_secret.describe(self.insecure_seeded_noise)
    if self.insecure_seeded_noise:
      d['WARNING'] = mechanism_secret.INSECURE_WARNING
    return d


# Plan fields a resume must find unchanged (checkpoint metadata records them).
RESUME_FIELDS = tuple(f.name for f in dataclasses.fields(PrivacyPlan)
                      if f.metadata.get('resume'))


def num_steps(training: ml_collections.ConfigDict, dataset_size: int) -> int:
  if training.num_steps:
    return int(training.num_steps)
  return int(math.ceil(training.num_epochs * dataset_size / training.batch_size))


def seeded_noise(config: ml_collections.ConfigDict) -> bool:
  """privacy.insecure_seeded_noise: the testing switch (privacy/mechanism_secret.py)."""
  return bool(config.privacy.insecure_seeded_noise)


def composes_with_pretrained_run(config: ml_collections.ConfigDict) -> bool:
  """privacy.compose_with_pretrained_run: report the total with the earlier run."""
  return bool(config.privacy.compose_with_pretrained_run)


def timing_parameters(config: ml_collections.ConfigDict) -> tuple[float, float]:
  """(clipping norm, noise multiplier) for timing a step without a dataset (the
  benchmark): the configured sigma, or 1.0 where it would be calibrated or is 0 (the
  noise's scale does not change the step's cost). Accounts nothing."""
  sigma = config.privacy.noise_multiplier
  if sigma is None or sigma <= 0:
    sigma = 1.0
  return float(config.privacy.clipping_norm), float(sigma)


# The steps a timed BandMF strategy is normalised for when the config gives epochs
# (the benchmark has no dataset): the step's cost does not depend on it.
TIMING_STEPS = 1000


def timing_privatizer(config: ml_collections.ConfigDict):
  """The privatizer for timing a step without a dataset (the benchmark): the config's
  mechanism with ``timing_parameters``; accounts nothing. DP-SGD's Gaussian noise
  N(0, (sigma C)^2), or BandMF with b = privacy.num_bands: the same state (b - 1 past
  draws) and streaming solve as a run, with placeholder strategy coefficients (all
  equal, norm 1) instead of optimised ones: the cost of a step does not depend on
  their values, and optimising them would take longer than the timing."""
  clipping_norm, sigma = timing_parameters(config)
  p = config.privacy
  cls = privatizers.PRIVATIZERS[p.mechanism]
  bands = int(p.num_bands) if cls.uses_strategy else 1
  if bands <= 1:
    return privatizers.GaussianPrivatizer.create(noise_multiplier=sigma,
                                                 clipping_norm=clipping_norm)
  steps = max(int(config.training.num_steps or 0), TIMING_STEPS, bands)
  return cls.create(noise_multiplier=sigma, clipping_norm=clipping_norm, steps=steps,
                    num_bands=bands, strategy_coefs=(bands ** -0.5,) * bands,
                    strategy_sensitivity=1.0)


def make_plan(config: ml_collections.ConfigDict, dataset_size: int) -> PrivacyPlan:
  """Calibrates (or checks) the noise so that the whole run stays within the target.

  Raises PlanError, naming the fields, when a given noise multiplier would pass the
  target epsilon within the planned steps, or no noise multiplier reaches the target.
  """
  p = config.privacy
  steps = num_steps(config.training, dataset_size)
  batch = int(config.training.batch_size)
  name, bands = p.mechanism, int(p.num_bands)
  if not privatizers.PRIVATIZERS[name].uses_strategy:
    bands = 1
  selection = privatizers.PRIVATIZERS[name].accounted_selection(
      selection_lib.SAMPLERS[p.sampling](int(dataset_size), batch), bands)
  relation = selection.neighboring_relation
  common = dict(clipping_norm=float(p.clipping_norm), sampling=p.sampling,
                sampling_rate=selection.sampling_rate, expected_batch_size=batch,
                mechanism_name=name, num_bands=bands,
                steps=steps, delta=float(p.delta), accountant=p.accountant,
                neighboring_relation=relation, dataset_size=int(dataset_size),
                insecure_seeded_noise=bool(p.insecure_seeded_noise))
  if p.allow_non_private and (p.noise_multiplier is None or p.noise_multiplier == 0):
    return PrivacyPlan(noise_multiplier=0.0, epsilon=math.inf, target_epsilon=math.inf,
                       non_private=True, **common)
  if p.noise_multiplier is None:
    try:
      sigma = accounting.calibrate_noise_multiplier(
          p.target_epsilon, p.delta, lambda s: selection.dp_event(s, steps),
          p.accountant, relation)
    except ValueError as e:
      raise PlanError(f'config.privacy.target_epsilon={p.target_epsilon}: {e} '
                      f'({steps} steps, q={selection.sampling_rate:.4g})') from e
  else:
    sigma = float(p.noise_multiplier)
  try:
    eps = accounting.Ledger(selection, sigma, p.delta, p.accountant).epsilon(steps)
  except accounting.PldTooLargeError as e:
    raise PlanError(f'config.privacy.noise_multiplier={sigma}: {e}') from e
  if eps > p.target_epsilon * (1 + 1e-9):
    raise PlanError(
        f'config.privacy.noise_multiplier={sigma} spends '
        f'epsilon={round_up.round_up(eps)} in {steps} steps, more than '
        f'config.privacy.target_epsilon={p.target_epsilon}; unset noise_multiplier '
        'to calibrate it, raise it, or train fewer steps')
  return PrivacyPlan(noise_multiplier=sigma, epsilon=eps,
                     target_epsilon=float(p.target_epsilon), **common)


# ------------------------------------------------------------------ validation
def _fail(field: str, value, why: str):
  raise PlanError(f'config.privacy.{field}={value!r}: {why}')


def validate_privacy(config: ml_collections.ConfigDict) -> None:
  """Checks config.privacy alone; raises PlanError naming the field."""
  p = config.privacy
  if not p.allow_non_private or p.noise_multiplier:
    if not (isinstance(p.target_epsilon, (int, float)) and p.target_epsilon > 0
            and math.isfinite(p.target_epsilon)):
      _fail('target_epsilon', p.target_epsilon,
            'must be a finite number > 0 (set privacy.allow_non_private=True for a '
            'run without noise)')
  if not 0 < p.delta < 1:
    _fail('delta', p.delta, 'must be in (0, 1); usually well below 1/N')
  if not (p.clipping_norm > 0 and math.isfinite(p.clipping_norm)):
    _fail('clipping_norm', p.clipping_norm, 'must be a finite number > 0')
  if p.noise_multiplier is not None and not (p.noise_multiplier >= 0
                                             and math.isfinite(p.noise_multiplier)):
    # NaN passes every comparison: it would train on NaN noise and report epsilon 0.
    _fail('noise_multiplier', p.noise_multiplier,
          'must be a finite number >= 0, or None to calibrate it to the target epsilon')
  if p.noise_multiplier == 0 and not p.allow_non_private:
    _fail('noise_multiplier', 0.0, 'zero noise gives no privacy; set '
          'privacy.allow_non_private=True to run without DP on purpose')
  if p.accountant not in accounting.ACCOUNTANTS:
    _fail('accountant', p.accountant, f'choose one of {list(accounting.ACCOUNTANTS)}')
  if p.sampling not in selection_lib.SAMPLERS:
    _fail('sampling', p.sampling, f'choose one of {list(selection_lib.SAMPLERS)}')
  mechanism = p.mechanism
  if mechanism not in privatizers.PRIVATIZERS:
    _fail('mechanism', mechanism, f'choose one of {list(privatizers.PRIVATIZERS)}')
  privatizer = privatizers.PRIVATIZERS[mechanism]
  bands = p.num_bands
  if not (isinstance(bands, int) and bands >= 1):
    _fail('num_bands', bands, 'must be an integer >= 1 (1 is DP-SGD)')
  if not privatizer.uses_strategy and bands != 1:
    _fail('num_bands', bands, "bands need privacy.mechanism='bandmf'")
  if not privatizer.accepts(selection_lib.SAMPLERS[p.sampling]):
    _fail('sampling', p.sampling, privatizer.requirement)
  # Whether the accountant supports the batch selection's event (its form does not
  # depend on the sizes: any small instance tells).
  selection = privatizer.accounted_selection(
      selection_lib.SAMPLERS[p.sampling](dataset_size=10**6, expected_batch_size=1),
      bands)
  try:
    accounting.check_supported(selection.dp_event(1.0, bands), p.accountant,
                               selection.neighboring_relation)
  except accounting.UnsupportedEventError as e:
    _fail('accountant', p.accountant, str(e))


def validate_with_data(config: ml_collections.ConfigDict, dataset_size: int) -> None:
  """Checks what needs the training set's size N (batch vs N, bands, delta vs 1/N)."""
  t, p = config.training, config.privacy
  bands = p.num_bands
  if privatizers.PRIVATIZERS[p.mechanism].uses_strategy and bands > 1:
    steps = num_steps(t, dataset_size)
    if bands > steps:
      _fail('num_bands', bands, f'is larger than the number of steps ({steps})')
    if steps % bands:
      _fail('num_bands', bands, f'must divide the number of steps ({steps}) so '
            'that every group takes part equally often; e.g. set training.num_steps to '
            f'{steps - steps % bands or bands}')
    if bands * t.batch_size > dataset_size:
      _fail('num_bands', bands, f'times training.batch_size ({t.batch_size}) '
            f'must be <= N = {dataset_size}: each of the b groups (about N/b examples) '
            f'must hold the expected batch; use b <= {dataset_size // t.batch_size}')
  if t.batch_size > dataset_size:
    raise PlanError(f'config.training.batch_size={t.batch_size!r}: is larger than the '
                    f'training set ({dataset_size} examples); lower it')
  if p.delta >= 1.0 / dataset_size:
    if not p.allow_large_delta:
      _fail('delta', p.delta,
            f'is >= 1/N = {1.0 / dataset_size:.3g} (N={dataset_size} training '
            'examples): such a delta permits releasing a few examples outright. Use '
            'delta well below 1/N (e.g. 1e-5 for CIFAR-10\'s N = 50,000), or set '
            'privacy.allow_large_delta=True to run it anyway (the privacy report '
            'then says so first)')
    logging.warning(
        'config.privacy.delta=%g is >= 1/N = %g (allowed by privacy.allow_large_delta): '
        'such a delta permits releasing a few examples outright.', p.delta,
        1.0 / dataset_size)


# ------------------------------------------------------------------ the strategy
def strategy(steps: int, bands: int, cache_dir: str | None = None,
             optimizer_steps: int = bandmf.OPTIMIZER_STEPS) -> np.ndarray:
  """``bandmf.optimize_strategy``, cached in ``cache_dir``/bandmf_strategy.json
  (the optimisation takes seconds to minutes for long runs; a resume reuses it)."""
  path = os.path.join(cache_dir, STRATEGY_FILE) if cache_dir else None
  key = f'steps={steps},bands={bands},optimizer_steps={optimizer_steps}'
  cache = {}
  if path and os.path.exists(path):
    with open(path) as f:
      cache = json.load(f)
    if key in cache:
      return np.asarray(cache[key], np.float64)
  coefs = bandmf.optimize_strategy(steps, bands, optimizer_steps)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    cache[key] = [float(c) for c in coefs]
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(cache, f, indent=1)
    os.replace(tmp, path)
  return coefs
