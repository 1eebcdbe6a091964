"""The privacy plan of a run, fixed before training starts: steps, sampling rate,
noise multiplier (calibrated to the target epsilon unless given) and the epsilon the
run will have spent when it ends. It is what privacy.json and plan.json report.
"""
import dataclasses
import math

import ml_collections

from image_classification.privacy import accounting
from image_classification.privacy import mechanism_secret

# Figures the trainer logs that are computed from private data WITHOUT noise: they are
# not covered by the (epsilon, delta) guarantee and must not be published as such.
NON_PRIVATE_FIGURES = ('train_loss', 'clip_fraction', 'realized_batch_size',
                       'nonfinite_gradients', 'images_per_sec')


class PlanError(ValueError):
  """No plan meets the config's privacy target; the message names the fields."""


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  noise_multiplier: float
  clipping_norm: float
  sampling: str
  sampling_rate: float
  expected_batch_size: int
  steps: int
  delta: float
  epsilon: float              # spent after all steps (inf when non-private)
  target_epsilon: float
  accountant: str
  neighboring_relation: str
  dataset_size: int
  non_private: bool = False
  # Testing switch: noise and batches derived from config.seed (no guarantee once the
  # config is published); see privacy/mechanism_secret.py.
  insecure_seeded_noise: bool = False
  # 'dpsgd' | 'bandmf' (privacy/privatizers.py). For BandMF, sampling_rate is the rate
  # within the eligible group (b * B / N) and the strategy's Toeplitz coefficients
  # (filled in by privatizers.with_strategy, cached in the workdir) are reported.
  mechanism_name: str = 'dpsgd'
  num_bands: int = 1
  strategy_coefs: tuple = ()
  strategy_sensitivity: float = 1.0
  noise_std_per_step: tuple = ()   # BandMF: marginal std of step t's noise, per coordinate

  @property
  def mechanism(self) -> accounting.Mechanism:
    return accounting.Mechanism(self.noise_multiplier, self.dataset_size,
                                self.expected_batch_size, self.sampling, self.accountant,
                                self.mechanism_name, self.num_bands)

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    for k in ('epsilon', 'target_epsilon'):
      if not math.isfinite(d[k]):
        d[k] = None if self.non_private else d[k]
    d['mechanism'] = ('non-private (no noise): NO differential privacy guarantee'
                      if self.non_private else
                      'DP-SGD: per-example clipping to L2 norm C, Gaussian noise '
                      'N(0, (sigma*C)^2) added once per logical batch, normalised by '
                      'the expected batch size' if self.mechanism_name == 'dpsgd' else
                      f'BandMF (banded matrix factorisation, b = {self.num_bands} bands): '
                      'per-example clipping to L2 norm C; step t adds the noise '
                      'sigma*C*sens * (C^-1 Z)_t, correlated with the previous b-1 '
                      "steps' draws through the column-normalised b-banded Toeplitz "
                      'strategy C (max column norm sens = 1); cyclic Poisson sampling: '
                      'the examples are split into b groups, step t samples group t mod '
                      'b with rate q; normalised by the expected batch size')
    if self.mechanism_name == 'bandmf':
      d['strategy_coefs'] = list(self.strategy_coefs)
      d['noise_std_per_step'] = list(self.noise_std_per_step)
      d['participation'] = (f'each example belongs to one of b = {self.num_bands} groups '
                            f'(drawn independently per example) and can be sampled only '
                            f'at steps t with t mod b = its group, with rate '
                            f'q = b*B/N = {self.sampling_rate:.6g}')
    else:
      del d['strategy_coefs'], d['strategy_sensitivity'], d['noise_std_per_step']
    d['computed_without_noise'] = list(NON_PRIVATE_FIGURES)
    d['randomness'] = mechanism_secret.describe(self.insecure_seeded_noise)
    if self.insecure_seeded_noise:
      d['WARNING'] = mechanism_secret.INSECURE_WARNING
    return d


def num_steps(training: ml_collections.ConfigDict, dataset_size: int) -> int:
  if training.num_steps:
    return int(training.num_steps)
  return int(math.ceil(training.num_epochs * dataset_size / training.batch_size))


def make_plan(config: ml_collections.ConfigDict, dataset_size: int) -> PrivacyPlan:
  """Calibrates (or checks) the noise so that the whole run stays within the target.

  Raises PlanError, naming the fields, when a given noise multiplier would pass the
  target epsilon within the planned steps, or no noise multiplier reaches the target.
  """
  p = config.privacy
  steps = num_steps(config.training, dataset_size)
  batch = int(config.training.batch_size)
  name, bands = p.get('mechanism', 'dpsgd'), int(p.get('num_bands', 1))
  if name == 'dpsgd':
    bands = 1
  rate = accounting.Mechanism(1.0, dataset_size, batch, p.sampling, p.accountant, name,
                              bands).sampling_rate
  common = dict(clipping_norm=float(p.clipping_norm), sampling=p.sampling,
                sampling_rate=rate, expected_batch_size=batch,
                mechanism_name=name, num_bands=bands,
                steps=steps, delta=float(p.delta), accountant=p.accountant,
                neighboring_relation=accounting.NEIGHBORING_RELATIONS[p.sampling],
                dataset_size=int(dataset_size),
                insecure_seeded_noise=bool(p.get('insecure_seeded_noise', False)))
  if p.allow_non_private and (p.noise_multiplier is None or p.noise_multiplier == 0):
    return PrivacyPlan(noise_multiplier=0.0, epsilon=math.inf, target_epsilon=math.inf,
                       non_private=True, **common)
  if p.noise_multiplier is None:
    try:
      sigma = accounting.calibrate_noise_multiplier(
          p.target_epsilon, p.delta, steps, dataset_size, batch, p.sampling,
          p.accountant, mechanism=name, num_bands=bands)
    except ValueError as e:
      raise PlanError(f'config.privacy.target_epsilon={p.target_epsilon}: {e}') from e
  else:
    sigma = float(p.noise_multiplier)
  mechanism = accounting.Mechanism(sigma, dataset_size, batch, p.sampling, p.accountant,
                                   name, bands)
  eps = accounting.epsilon(mechanism, steps, p.delta)
  if eps > p.target_epsilon * (1 + 1e-9):
    raise PlanError(
        f'config.privacy.noise_multiplier={sigma} spends epsilon={eps:.4g} in {steps} '
        f'steps, more than config.privacy.target_epsilon={p.target_epsilon}; unset '
        'noise_multiplier to calibrate it, raise it, or train fewer steps')
  return PrivacyPlan(noise_multiplier=sigma, epsilon=eps,
                     target_epsilon=float(p.target_epsilon), **common)
