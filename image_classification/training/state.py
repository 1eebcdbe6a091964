"""The train state: a pytree, so it can be jitted, sharded and checkpointed whole."""
from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array           # number of DP-SGD steps taken (= steps the ledger counts)
  params: Any               # trainable parameters
  frozen: Any               # parameters that are never updated (fine-tuning); {} if none
  opt_state: Any
  ema_params: Any           # EMA of the trainable params (= params when EMA is off)
  # The privatizer's state (privacy/privatizers.py, privacy/bandmf.py): () for DP-SGD; for BandMF the
  # streaming C^-1 state (the last b-1 noise vectors). Checkpointed with the rest; it
  # never holds a key.
  noise_state: Any = ()

  def eval_params(self, use_ema: bool):
    return merge_params(self.ema_params if use_ema else self.params, self.frozen)


def split_params(params: dict, train_only_head: bool) -> tuple[dict, dict]:
  """(trainable, frozen). With train_only_head only params['head'] is trained."""
  if not train_only_head:
    return params, {}
  trainable = {k: v for k, v in params.items() if k == 'head'}
  frozen = {k: v for k, v in params.items() if k != 'head'}
  return trainable, frozen


def merge_params(trainable: dict, frozen: dict) -> dict:
  return {**frozen, **trainable}
