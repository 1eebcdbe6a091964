"""ImageNet: fine-tune a JFT-4B pre-trained NFNet-F3 with DP-SGD at (eps, delta=8e-7).

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 5.2: an NFNet-F3
pre-trained (non-privately) on JFT-4B, fine-tuned privately on ImageNet: the
abstract reports 83.8% top-1 at (0.5, 8e-7) and 86.7% at (8, 8e-7).

UNVERIFIED: the paper's fine-tuning table (Appendix C) and its JFT-4B checkpoint
are not available offline, and jax_privacy released no config for this run. The
values below are therefore the platform's best reading, NOT the paper's table:
  * batch 16384, augmult 4 with random crop and flip, C=1, SGD without momentum,
    EMA 0.99999: the paper's ImageNet from-scratch recipe
    (imagenet_nf_resnet_50_eps8.py);
  * lr 1.0 and all layers trained with a fresh head: jax_privacy's released
    fine-tuning config (cifar100_wrn_28_10_eps1_finetune.py);
  * 1000 steps with sigma calibrated (None) to spend exactly the target epsilon
    (sigma ~2.05 at eps=1, ~0.69 at eps=8);
  * images at NFNet-F3's published train resolution, 320 (models/nfnet.py
    IMAGE_SIZES; Brock et al. 2021).
Replace them with the paper's table when at hand.

config.model.pretrained_path is a placeholder for the pre-trained parameters (an
orbax folder of this platform, or a .npz / .msgpack params dict; see
image_classification/trained/pretrained.py). A dry run works without it.

Arguments (after ':'): eps, 1 or 8 (required).

  python launch.py --config=configs/imagenet_nfnet_f3_finetune.py:eps=1 --workdir=DIR \
      --config.model.pretrained_path=/path/to/nfnet_f3_jft4b \
      --config.data.tfds_data_dir=/path/to/tensorflow_datasets
"""
from configs import common

# eps -> (sigma, steps): both rows calibrated over 1000 steps; see the docstring.
TABLE = {
    1: dict(noise_multiplier=None, steps=1000),
    8: dict(noise_multiplier=None, steps=1000),
}


def build(eps: float):
  """The fine-tuning config of the table's row for `eps`."""
  hp = common.row(TABLE, eps, 'imagenet_nfnet_f3_finetune')
  config = common.imagenet(image_size=320, learning_rate=1.0)
  config.experiment = f'imagenet_nfnet_f3_{common.eps_name(eps)}_finetune'
  config.model.update(name='nfnet', pretrained_path='/path/to/nfnet_f3_jft4b',
                      train_only_head=False)
  config.model.kwargs.variant = 'F3'
  common.set_fixed_noise(config, eps, 8e-7, hp['noise_multiplier'], hp['steps'])
  config.training.update(micro_batch_size=8, log_every_steps=10, eval_every_steps=250,
                         eval_batch_size=250, checkpoint_every_steps=250)
  return config


def get_config(arg=None):
  return build(common.parse_arg(arg, eps=0.0).eps or None)
