"""The jitted DP-SGD step, sharded over the device mesh with shard_map.

One logical batch (padded to a static capacity, with a mask) flows as:
  split over devices -> each device scans its micro-batches: augmult views ->
  per-example gradients averaged over views -> clip to C -> sum ->
  psum across devices -> add N(0, (sigma C)^2) ONCE, from the step's noise key (the same
  on every device) -> divide by the expected batch size -> optax -> EMA.
The noise key is secret (privacy/mechanism_secret.py): it is passed to the jitted
functions as an argument on every call, never closed over, so it is not baked into a
compiled executable (the compilation cache, XLA dumps). The augmentation and dropout
keys are secret too and travel the same way (``augment_key``): they are drawn per batch
slot, and adding one example to the data shifts the slots of the examples after it, so
with keys an adversary knows the other examples' augmentations would change with it
and the sum would move by more than C. With keys unknown to the adversary (i.i.d.
across slots) the other examples' augmentations have the same distribution whichever
slots they land in, and the step's sensitivity is C (docs/privacy.md, invariant 18).
A batch larger than the capacity (a rare Poisson overflow) is processed as several
chunks whose clipped sums are added before the single noise draw.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from image_classification.input import augmentation
from image_classification.models import features as features_lib
from image_classification.privacy import clipped_sums
from image_classification.privacy.clipped_sums import coverage
from image_classification.privacy import noise
from image_classification.training import canary_slots
from image_classification.training import mesh as mesh_lib
from image_classification.training import state as state_lib

PyTree = Any

_AUGMENT_STREAM = 0xA06


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static parameters of the step (all public). The noise is not among them: it
  reaches the step by one route, the privatizer (from the privacy plan)."""
  clipping_norm: float
  expected_batch_size: float     # the normaliser: public, never the realised size
  micro_batch_size: int          # per device; must divide the per-device batch
  # The clipped-sum implementation (privacy/clipped_sums, e.g. 'vmap', 'fast',
  # 'ghost'): the same clipped sum to float tolerance, different speed and memory.
  per_example_grads: str
  augmult: int = 1
  # > 1: the examples are this many fixed views stacked on the channel axis (the
  # features of shifted images, config.model.features_shift), used as the K views.
  feature_views: int = 1
  random_crop: bool = False
  random_flip: bool = False
  mean: tuple = (0.5,)
  std: tuple = (0.5,)
  ema_decay: float = 0.0
  ema_start_step: int = 0


def step_config(config: ml_collections.ConfigDict, *, clipping_norm: float,
                expected_batch_size: float, mean, std, **overrides) -> StepConfig:
  """The step's parameters from an experiment config, the one place that maps config
  fields to them. The privacy numbers come from the privacy plan (the caller passes
  plan.clipping_norm, ...); ``mean``/``std`` are the dataset's normalisation;
  ``overrides`` replace any other field (the benchmark's batch sizes, augmult, ...)."""
  t, d = config.training, config.data
  fields = dict(
      clipping_norm=clipping_norm, expected_batch_size=expected_batch_size, micro_batch_size=t.micro_batch_size,
      per_example_grads=t.per_example_grads, augmult=d.augmult,
      feature_views=features_lib.num_views(config), random_crop=d.random_crop, random_flip=d.random_flip, mean=tuple(mean),
      std=tuple(std), ema_decay=t.ema.decay, ema_start_step=t.ema.start_step)
  fields.update(overrides)
  return StepConfig(**fields)


def example_views(cfg: StepConfig, aug_keys, images):
  """[B, K, H, W, C] standardised views of a batch [B, H, W, C']: the stored fixed
  views of features (cfg.feature_views > 1; nothing is drawn), else augmult's K views
  from the per-example keys ``aug_keys`` [B, 2]."""
  if cfg.feature_views > 1:
    return augmentation.stacked_views(images, views=cfg.feature_views, mean=cfg.mean,
                                      std=cfg.std)
  return augmentation.augmult_views(
      aug_keys, images, augmult=cfg.augmult, random_crop=cfg.random_crop,
      random_flip=cfg.random_flip, mean=cfg.mean, std=cfg.std)


def covered_implementation(apply_fn: Callable, params, image_shape: tuple, name: str,
                           augmult: int = 1) -> tuple[str, str]:
  """The clipped-sum implementation to train a model with, and a line saying why.

  ``name`` when it covers the model (privacy/clipped_sums/coverage.py: traced on two
  abstract examples, nothing compiled): its per-layer rules where the layers have one,
  the generic per-example rule elsewhere. Otherwise 'vmap', the reference, which is
  exact for any model. ``params`` may be jax.ShapeDtypeStructs.
  """
  def loss(p, views, label, key):
    logits = apply_fn({'params': p}, views, is_training=True, rngs={'dropout': key})
    return jnp.mean(cross_entropy(logits, jnp.broadcast_to(label, views.shape[:1])))

  batch = 2
  found = coverage.check(
      name, loss, params,
      jax.ShapeDtypeStruct((batch, augmult) + tuple(image_shape), jnp.float32),
      jax.ShapeDtypeStruct((batch,), jnp.int32),
      jax.ShapeDtypeStruct((batch, 2), jnp.uint32),
      jax.ShapeDtypeStruct((batch,), jnp.bool_), 1.0)
  if found.problem is None:
    return name, (f'per-example gradients: {name!r}'
                  + (f' with layer rules {found.describe()}' if found.rules else ''))
  return 'vmap', (f"per-example gradients: 'vmap' instead of {name!r}, which does not "
                  f'cover this model: {found.problem}')


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def example_keys(augment_key, step, chunk, size):
  """Per-example keys for augmentation and dropout (raw threefry2x32 keys, [size, 2]
  uint32): one per batch slot, depending on (key, step, chunk, slot) only, so they do
  not depend on how the batch is sharded.

  ``augment_key``: a secret's 128-bit key (four uint32 words, threefry4x32;
  privacy/mechanism_secret.py), from which each step's slot keys are pseudo-random
  bits; or a two-word threefry2x32 key (the insecure seeded mode, benchmarks, tests),
  split as earlier versions did.
  """
  if np.shape(augment_key)[-1] == noise.noise_generator.KEY_WORDS:
    key = noise.base_noise_key(augment_key)
    key = jax.random.fold_in(jax.random.fold_in(
        jax.random.fold_in(key, _AUGMENT_STREAM), step), chunk)
    return jax.random.bits(key, (size, 2), jnp.uint32)
  key = jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(augment_key, _AUGMENT_STREAM), step), chunk)
  return jax.random.split(key, size)


def ema_decay_at(step, decay: float, start_step: int = 0):
  """The EMA decay used at ``step``: 0 before ``start_step`` (the EMA is the
  parameters), then min(decay, (1 + t) / (10 + t)) with t = step - start_step.

  The warm-up (as in jax_privacy and De et al. 2022) keeps the average from holding
  on to the random initialisation: with a constant 0.9999 the initial parameters
  would still weigh 0.9999^2468 = 0.78 at the end of a 2468-step run. The EMA is
  post-processing of the noisy iterates, so it costs no privacy.
  """
  t = (step - start_step).astype(jnp.float32)
  warm = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jnp.where(step >= start_step, warm, 0.0)


class DPStep:
  """Builds the jitted functions of one DP-SGD step for a model and a mesh."""

  def __init__(self, apply_fn: Callable, optimizer: optax.GradientTransformation,
               cfg: StepConfig, mesh, augment_key, noise_key, privatizer,
               canaries: canary_slots.GradientCanaries | None = None):
    """``augment_key``: the key of augmentation and dropout as raw uint32 words
    (``example_keys``: four, the run's secret 128-bit key; two, a public key of the
    insecure seeded mode or a benchmark), passed to the jitted functions as an argument
    like the noise key; ``noise_key``: the run's
    secret base noise key as raw uint32 words (privacy/noise.py: four, a 128-bit
    threefry4x32 key; two, the insecure seeded threefry2x32 key), step t's noise uses
    fold-ins of t.
    ``privatizer`` (privacy/privatizers.py, the plan's ``plan.privatizer()``): how the
    noise is added, the one route of sigma to the step. ``canaries``: the gradient
    audit's canaries (training/canary_slots.py); None (the default) leaves the step as
    it always was."""
    self.privatizer = privatizer
    self.apply_fn = apply_fn
    self.optimizer = optimizer
    self.cfg = cfg
    self.mesh = mesh
    self.augment_key = np.asarray(augment_key, dtype=np.uint32)
    self.noise_key = np.asarray(noise_key, dtype=np.uint32)
    self.canaries = canaries
    self.num_devices = mesh.devices.size
    # An unknown name fails here, naming the choices, before anything is traced.
    self._clipped_sum_fn = clipped_sums.get(cfg.per_example_grads)
    self._sum_fn = self._make_sharded_sum()
    # The common case: one chunk, one fused jit call per step.
    self.step = jax.jit(self._fused_step, donate_argnums=(0,))
    self.clipped_sum = jax.jit(self._sum_fn)
    self.apply_update = jax.jit(self._update, donate_argnums=(0,))

  # ------------------------------------------------------------ per example
  def _example_loss(self, trainable, frozen, views, label, key):
    """Mean loss over the K views of one example."""
    params = state_lib.merge_params(trainable, frozen)
    logits = self.apply_fn({'params': params}, views, is_training=True,
                           rngs={'dropout': key})
    return jnp.mean(cross_entropy(logits, jnp.broadcast_to(label, views.shape[:1])))

  def _micro_batch_sum(self, trainable, frozen, images, labels, mask, keys):
    cfg = self.cfg
    if self.canaries is not None:  # canary slots leave the model's sum (canary_slots.py)
      canary_labels = labels
      mask, is_canary, labels = canary_slots.split_slots(labels, mask)
    aug_keys, drop_keys = jax.vmap(lambda k: jax.random.split(k))(keys).swapaxes(0, 1)
    views = example_views(cfg, aug_keys, images)
    loss_fn = lambda p, v, y, k: self._example_loss(p, frozen, v, y, k)
    summed, norms, valid, losses = self._clipped_sum_fn(
        loss_fn, trainable, views, labels, drop_keys, mask, cfg.clipping_norm)
    if self.canaries is not None:
      summed = canary_slots.add_clipped_canaries(summed, canary_labels, is_canary,
                                                 self.canaries, cfg.clipping_norm)
    stats = {
        'loss_sum': jnp.sum(jnp.where(valid, losses, 0.0)),
        'num_examples': jnp.sum(valid.astype(jnp.float32)),
        'num_clipped': jnp.sum((valid & (norms > cfg.clipping_norm)).astype(jnp.float32)),
        'num_nonfinite': jnp.sum((mask & ~jnp.isfinite(norms)).astype(jnp.float32)),
    }
    return summed, stats

  # ------------------------------------------------------------ per device
  def _device_sum(self, trainable, frozen, images, labels, mask, keys):
    """Clipped sum over this device's shard, scanning its micro-batches; psum'd."""
    # Differentiate w.r.t. a device-local copy of the parameters. With replicated
    # (invariant) params, shard_map's AD would psum each gradient across devices,
    # mixing examples of different devices BEFORE clipping and breaking sensitivity.
    trainable = jax.lax.pcast(trainable, mesh_lib.DATA_AXIS, to='varying')
    frozen = jax.lax.pcast(frozen, mesh_lib.DATA_AXIS, to='varying')
    per_device = images.shape[0]
    micro = self.cfg.micro_batch_size or per_device
    n_micro = per_device // micro

    def split(x):
      return x.reshape((n_micro, micro) + x.shape[1:])

    def body(carry, batch):
      summed, stats = self._micro_batch_sum(trainable, frozen, *batch)
      return jax.tree_util.tree_map(jnp.add, carry, (summed, stats)), None

    # Inside shard_map the carry differs across devices until the psum.
    zero_stats = jax.lax.pcast(
        {k: jnp.zeros((), jnp.float32) for k in
         ('loss_sum', 'num_examples', 'num_clipped', 'num_nonfinite')},
        mesh_lib.DATA_AXIS, to='varying')
    zero = (jax.tree_util.tree_map(jnp.zeros_like, trainable), zero_stats)
    batches = tuple(split(x) for x in (images, labels, mask, keys))
    if n_micro == 1:
      total, _ = body(zero, tuple(x[0] for x in batches))
    else:
      total, _ = jax.lax.scan(body, zero, batches)
    return jax.lax.psum(total, mesh_lib.DATA_AXIS)

  def _make_sharded_sum(self):
    data = P(mesh_lib.DATA_AXIS)
    sharded = jax.shard_map(
        self._device_sum, mesh=self.mesh,
        in_specs=(P(), P(), data, data, data, data), out_specs=P())

    def clipped_sum(state, images, labels, mask, chunk, augment_key):
      keys = example_keys(augment_key, state.step, chunk, images.shape[0])
      return sharded(state.params, state.frozen, images, labels, mask, keys)

    return clipped_sum

  # ------------------------------------------------------------ per logical batch
  def _update(self, state, summed, stats, noise_key):
    """Adds noise once, normalises by the expected batch size, applies optax and EMA."""
    cfg = self.cfg
    key = noise.step_noise_key(noise_key, state.step)
    noisy, noise_state = self.privatizer.update(summed, state.noise_state, key)
    # The EXPECTED (public) batch size, never the realised one.
    grads = jax.tree_util.tree_map(lambda x: x / cfg.expected_batch_size, noisy)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if cfg.ema_decay > 0:
      decay = ema_decay_at(state.step, cfg.ema_decay, cfg.ema_start_step)
      ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p,
                                   state.ema_params, params)
    else:
      ema = params
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema, noise_state=noise_state)
    if self.canaries is not None:  # the privatized gradient at the canaries' coordinates
      stats = {**stats, canary_slots.OBSERVATION: canary_slots.observe(grads, self.canaries)}
    return new_state, stats

  def _fused_step(self, state, images, labels, mask, noise_key, augment_key):
    summed, stats = self._sum_fn(state, images, labels, mask, 0, augment_key)
    return self._update(state, summed, stats, noise_key)

  def run(self, state, chunks):
    """One logical batch given as a list of (images, labels, mask) device arrays."""
    if len(chunks) == 1:
      return self.step(state, *chunks[0], self.noise_key, self.augment_key)
    total = None
    for i, chunk in enumerate(chunks):
      part = self.clipped_sum(state, *chunk, i, self.augment_key)
      total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
    return self.apply_update(state, *total, self.noise_key)


def init_state(params: dict, optimizer, train_only_head: bool,
               privatizer=None) -> state_lib.TrainState:
  trainable, frozen = state_lib.split_params(params, train_only_head)
  return state_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=trainable, frozen=frozen,
      opt_state=optimizer.init(trainable),
      ema_params=jax.tree_util.tree_map(jnp.copy, trainable),
      noise_state=privatizer.init(trainable) if privatizer is not None else ())
