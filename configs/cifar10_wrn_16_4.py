"""CIFAR-10, wide ResNet from scratch, DP-SGD at (eps, delta=1e-5): one row of De et
al. 2022's CIFAR-10 table per epsilon.

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 4 and Appendix C.5
(hyper-parameter table for CIFAR-10): batch size 4096, augmentation
multiplicity K=16 (random crop + flip), clipping norm C=1, plain SGD without
momentum or weight decay, constant learning rate, parameter EMA 0.9999,
WRN with GroupNorm (16 groups) and weight standardisation.

The paper fixes the noise multiplier and the number of steps, so both are set here
(privacy.noise_multiplier is NOT calibrated); the trainer refuses the run if they
would pass privacy.target_epsilon.

Arguments (after ':'): eps, one of 1, 2, 4, 8 (required); depth, 16 unless given (the
paper's WRN-40-4, its best CIFAR-10 model without extra data, is depth=40 with the
same rows; configs/cifar10_wrn_40_4_eps8.py).

  python launch.py --config=configs/cifar10_wrn_16_4.py:eps=1 --workdir=DIR
"""
from configs import common

# eps -> the paper's (sigma, steps, learning rate).
TABLE = {
    # Exactly as jax_privacy's released configs/cifar10_wrn_16_4_eps1.py
    # (num_updates=875, std_relative=10.0, lr 2.0, ema 0.9999); dp-accounting RDP
    # gives epsilon 0.988 <= 1.
    1: dict(noise_multiplier=10.0, steps=875, learning_rate=2.0),
    # From the paper's CIFAR-10 table (Appendix C.5); dp-accounting RDP gives epsilon
    # 1.9996, i.e. the row is calibrated to exactly 2, which corroborates it. lr 4.0
    # from the same table (not re-checked against the PDF here: no copy offline).
    2: dict(noise_multiplier=6.0, steps=1125, learning_rate=4.0),
    # From the paper's CIFAR-10 table (Appendix C.5); dp-accounting RDP gives epsilon
    # 3.87 <= 4. lr 4.0 from the same table (not re-checked against the PDF here: no
    # copy offline).
    4: dict(noise_multiplier=4.0, steps=1593, learning_rate=4.0),
    # As given for the paper's eps=8 row (Appendix C.5; lr 4.0 is also what
    # jax_privacy's eps=8 runs log, see github.com/google-deepmind/jax_privacy/issues/22;
    # the TAN paper's repro uses sigma=3, 2500 steps, B=4096 for eps=8). NOT fully
    # verified: with dp-accounting's RDP this spends only epsilon 7.05 < 8 (the trainer
    # accepts it; plan.json reports 7.05). Unset privacy.noise_multiplier to calibrate
    # sigma to exactly 8 (~2.71) instead.
    8: dict(noise_multiplier=3.0, steps=2468, learning_rate=4.0),
}


def build(eps: float, depth: int = 16, width: int = 4):
  """The WRN-depth-width config of the table's row for `eps`."""
  hp = common.row(TABLE, eps, 'cifar10_wrn_16_4', depth=16)
  # EMA 0.9999 as in jax_privacy's configs (averaging.ema.coefficient), which warm the
  # decay up as min(0.9999, (1 + t) / (10 + t)).
  config = common.de2022('cifar10', augmult=16, batch_size=4096, ema=0.9999,
                         learning_rate=hp['learning_rate'])
  config.experiment = f'cifar10_wrn_{depth}_{width}_{common.eps_name(eps)}'
  config.model.name = 'wide_resnet'
  config.model.kwargs.update(depth=depth, width=width)
  common.set_fixed_noise(config, eps, 1e-5, hp['noise_multiplier'], hp['steps'])
  # micro_batch_size: examples per device per pass (x16 augmult views); jax_privacy's
  # per_device_per_step=64. Lower it if a device runs out of memory.
  config.training.update(micro_batch_size=64, log_every_steps=25, eval_every_steps=250)
  return config


def get_config(arg=None):
  args = common.parse_arg(arg, eps=0.0, depth=16)
  return build(args.eps or None, depth=args.depth)
