"""CIFAR-10: fine-tune an ImageNet-32 pre-trained WRN-28-10 with DP-SGD at
(epsilon=1, delta=1e-5).

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 5.1 and Appendix C:
a WRN-28-10 pre-trained (non-privately) on downsampled ImageNet 32x32 is fine-tuned,
all layers, with a freshly initialised classifier. The values follow jax_privacy's
released configs/cifar100_wrn_28_10_eps1_finetune.py (the paper's code): batch
16384, 250 updates (jax_privacy's num_updates), SGD lr 1.0 without momentum, clipping
norm 1, EMA 0.9999, augmentation multiplicity 16 with random crop and flip,
restore WRN_28_10_IMAGENET32 with reset_classifier=True, train_only_layer=None.

config.model.pretrained_path is a placeholder: point it at the pre-trained
parameters (an orbax folder of this platform, or a .npz / .msgpack params dict;
see image_classification/training/pretrained.py). A dry run works without it.

  python launch.py --config=configs/cifar10_wrn_28_10_eps1_finetune.py --workdir=DIR \
      --config.model.pretrained_path=/path/to/imagenet32_wrn_28_10
"""
from configs import base


def get_config():
  config = base.get_config()
  config.experiment = 'cifar10_wrn_28_10_eps1_finetune'
  config.data.name = 'cifar10'
  config.data.augmult = 16
  config.data.random_crop = True
  config.data.random_flip = True

  config.model.name = 'wide_resnet'
  config.model.kwargs.depth = 28
  config.model.kwargs.width = 10
  config.model.pretrained_path = '/path/to/imagenet32_wrn_28_10'
  # The paper fine-tunes every layer (jax_privacy: train_only_layer=None).
  config.model.train_only_head = False

  config.privacy.target_epsilon = 1.0
  config.privacy.delta = 1e-5
  # Fixed by the paper (jax_privacy's std_relative=21.1, num_updates=250);
  # dp-accounting RDP gives epsilon 0.998 <= 1 for them. Not calibrated.
  config.privacy.noise_multiplier = 21.1
  config.privacy.clipping_norm = 1.0

  config.training.batch_size = 16384
  # jax_privacy's per_device_per_step=16 (x16 augmult views).
  config.training.micro_batch_size = 16
  config.training.num_steps = 250
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = 1.0
  config.training.optimizer.momentum = 0.0
  config.training.ema.decay = 0.9999
  config.training.log_every_steps = 10
  config.training.eval_every_steps = 50
  return config
