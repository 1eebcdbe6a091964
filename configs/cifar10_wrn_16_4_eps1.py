"""CIFAR-10, WRN-16-4 from scratch, DP-SGD at (epsilon=1, delta=1e-5).

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 4 and Appendix C.5
(hyper-parameter table for CIFAR-10): batch size 4096, augmentation
multiplicity K=16 (random crop + flip), clipping norm C=1, plain SGD without
momentum or weight decay, constant learning rate, parameter EMA 0.9999,
WRN with GroupNorm (16 groups) and weight standardisation.

The paper fixes the noise multiplier and the number of steps, so both are set here
(privacy.noise_multiplier is NOT calibrated); the trainer refuses the run if they
would pass privacy.target_epsilon.

  python launch.py --config=configs/cifar10_wrn_16_4_eps1.py --workdir=DIR
"""
from configs import base


def get_config():
  config = base.get_config()
  config.experiment = 'cifar10_wrn_16_4_eps1'
  config.data.name = 'cifar10'
  config.data.augmult = 16
  config.data.random_crop = True
  config.data.random_flip = True

  config.model.name = 'wide_resnet'
  config.model.kwargs.depth = 16
  config.model.kwargs.width = 4

  # sigma, steps, lr and EMA exactly as jax_privacy's released
  # configs/cifar10_wrn_16_4_eps1.py (num_updates=875, std_relative=10.0,
  # lr 2.0, ema 0.9999); dp-accounting RDP gives epsilon 0.988 <= 1.
  config.privacy.target_epsilon = 1.0
  config.privacy.delta = 1e-5
  config.privacy.noise_multiplier = 10.0
  config.privacy.clipping_norm = 1.0

  config.training.batch_size = 4096
  # Examples per device per pass (x16 augmult views); jax_privacy's
  # per_device_per_step=64. Lower it if a device runs out of memory.
  config.training.micro_batch_size = 64
  config.training.num_steps = 875
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = 2.0
  config.training.optimizer.momentum = 0.0
  # 0.9999 as in jax_privacy's configs (averaging.ema.coefficient), which warm the
  # decay up as min(0.9999, (1 + t) / (10 + t)).
  config.training.ema.decay = 0.9999
  config.training.log_every_steps = 25
  config.training.eval_every_steps = 250
  return config
