"""CIFAR-10, WRN-16-4 from scratch, DP-SGD at (epsilon=8, delta=1e-5).

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 4 and Appendix C.5
(hyper-parameter table for CIFAR-10): batch size 4096, augmentation
multiplicity K=16 (random crop + flip), clipping norm C=1, plain SGD without
momentum or weight decay, constant learning rate, parameter EMA 0.9999,
WRN with GroupNorm (16 groups) and weight standardisation.

The paper fixes the noise multiplier and the number of steps, so both are set here
(privacy.noise_multiplier is NOT calibrated); the trainer refuses the run if they
would pass privacy.target_epsilon.

  python launch.py --config=configs/cifar10_wrn_16_4_eps8.py --workdir=DIR
"""
from configs import base


def get_config():
  config = base.get_config()
  config.experiment = 'cifar10_wrn_16_4_eps8'
  config.data.name = 'cifar10'
  config.data.augmult = 16
  config.data.random_crop = True
  config.data.random_flip = True

  config.model.name = 'wide_resnet'
  config.model.kwargs.depth = 16
  config.model.kwargs.width = 4

  # sigma=3.0 / 2468 steps / lr 4.0 as given for the paper's eps=8 row
  # (Appendix C.5; lr 4.0 is also what jax_privacy's eps=8 runs log, see
  # github.com/google-deepmind/jax_privacy/issues/22; the TAN paper's repro
  # uses sigma=3, 2500 steps, B=4096 for eps=8). NOT fully verified: with
  # dp-accounting's RDP this spends only epsilon 7.05 < 8 (the trainer accepts
  # it; plan.json reports 7.05). Unset privacy.noise_multiplier to calibrate
  # sigma to exactly 8 (~2.71) instead.
  config.privacy.target_epsilon = 8.0
  config.privacy.delta = 1e-5
  config.privacy.noise_multiplier = 3.0
  config.privacy.clipping_norm = 1.0

  config.training.batch_size = 4096
  # Examples per device per pass (x16 augmult views); jax_privacy's
  # per_device_per_step=64. Lower it if a device runs out of memory.
  config.training.micro_batch_size = 64
  config.training.num_steps = 2468
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = 4.0
  config.training.optimizer.momentum = 0.0
  # 0.9999 as in jax_privacy's configs (averaging.ema.coefficient), which warm the
  # decay up as min(0.9999, (1 + t) / (10 + t)).
  config.training.ema.decay = 0.9999
  config.training.log_every_steps = 25
  config.training.eval_every_steps = 250
  return config
