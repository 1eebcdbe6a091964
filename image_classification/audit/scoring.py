"""Membership scores of the canaries: the trained model's log-probability of each
canary's (wrong) label.

Validity of the audit needs only that the scores are computed without looking at the
membership bits; nothing here reads them. Better scores make the bound larger, never
less valid.
"""

from __future__ import annotations

import jax
import numpy as np

from image_classification.input import augmentation

_SCORE_BATCH = 1000


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


def score_canaries(logits, labels) -> np.ndarray:
  """Membership score: log-probability of the canary label (= -cross-entropy).

  Higher means "more likely a member": the canary label is wrong, so the model
  gives it high probability essentially only if it trained on the canary, and
  the cross-entropy is exactly what training pushed down on members. The audit
  uses only the ranking of scores, and log p_y ranks canaries the same as the
  confidence p_y or the LiRA-style logit log(p_y / (1 - p_y)), so those choices
  are equivalent here. The logit margin z_y - max_{j != y} z_j ranks
  differently (it ignores the mass on the other classes); we keep the loss the
  model was trained on. Computed in float64 with a max-shift, so it is stable
  for large logits. Non-finite logits give NaN scores, which the audit refuses.

  Args:
    logits: [m, num_classes] model outputs on the canary images.
    labels: [m] canary (wrong) labels.

  Returns:
    [m] float64 scores.
  """
  logits = np.asarray(logits, dtype=np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f'logits must be [m, num_classes], got {logits.shape}.')
  m, num_classes = logits.shape
  if labels.shape != (m,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers of shape ({m},).')
  if m and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must lie in [0, {num_classes}).')
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_norm = np.log(np.exp(shifted).sum(axis=1))
  return shifted[np.arange(m), labels] - log_norm



def rankable(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(scores with every non-finite one set to -inf, [m] bool mask of those).

  A NaN score (a diverged model's logits) cannot be ranked: it is ranked lowest.
  Ties keep index order, which does not depend on the membership bits.
  """
  nonfinite = ~np.isfinite(scores)
  return np.where(nonfinite, -np.inf, scores), nonfinite
