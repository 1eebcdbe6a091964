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

  @property
  def mechanism(self) -> accounting.Mechanism:
    return accounting.Mechanism(self.noise_multiplier, self.dataset_size,
                                self.expected_batch_size, self.sampling, self.accountant)

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    for k in ('epsilon', 'target_epsilon'):
      if not math.isfinite(d[k]):
        d[k] = None if self.non_private else d[k]
    d['mechanism'] = ('non-private (no noise): NO differential privacy guarantee'
                      if self.non_private else
                      'DP-SGD: per-example clipping to L2 norm C, Gaussian noise '
                      'N(0, (sigma*C)^2) added once per logical batch, normalised by '
                      'the expected batch size')
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
  common = dict(clipping_norm=float(p.clipping_norm), sampling=p.sampling,
                sampling_rate=batch / dataset_size, expected_batch_size=batch,
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
          p.accountant)
    except ValueError as e:
      raise PlanError(f'config.privacy.target_epsilon={p.target_epsilon}: {e}') from e
  else:
    sigma = float(p.noise_multiplier)
  mechanism = accounting.Mechanism(sigma, dataset_size, batch, p.sampling, p.accountant)
  eps = accounting.epsilon(mechanism, steps, p.delta)
  if eps > p.target_epsilon * (1 + 1e-9):
    raise PlanError(
        f'config.privacy.noise_multiplier={sigma} spends epsilon={eps:.4g} in {steps} '
        f'steps, more than config.privacy.target_epsilon={p.target_epsilon}; unset '
        'noise_multiplier to calibrate it, raise it, or train fewer steps')
  return PrivacyPlan(noise_multiplier=sigma, epsilon=eps,
                     target_epsilon=float(p.target_epsilon), **common)
