"""ImageNet, NF-ResNet-50 from scratch, DP-SGD at (epsilon=8, delta=8e-7).

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), Section 5 and Appendix C:
the values below are those of jax_privacy's released
configs/imagenet_nf_resnet_50_eps8.py (the paper's code): batch size 16384,
71589 updates, noise multiplier 2.5, clipping norm 1, SGD lr 4.0 (no momentum,
no weight decay), EMA 0.99999, augmentation multiplicity 4 with random crop and
flip, 224x224 images, delta = 8e-7. (That delta is just above 1/N = 7.8e-7 for
N = 1,281,167: the trainer refuses such a delta unless privacy.allow_large_delta is
set, as it is here to keep the paper's choice for comparability; privacy.md then
opens with a LARGE DELTA warning.)

The paper fixes sigma and the number of steps, so both are set here (no
calibration); dp-accounting's RDP gives epsilon 7.93 <= 8 for them.

Differences from the released config, where our NF-ResNet differs: its head is
zero-initialised (theirs N(0, 0.01)) and its skip gains start at 0 (theirs 1).

ImageNet is read through tfds (prepared array_record copy, see data/readers/tfds_source.py):
  python launch.py --config=configs/imagenet_nf_resnet_50_eps8.py --workdir=DIR \
      --config.data.tfds_data_dir=/path/to/tensorflow_datasets
"""
from configs import common


def get_config():
  # 224x224 train and eval, as in the released config.
  config = common.imagenet(image_size=224, learning_rate=4.0)
  config.experiment = 'imagenet_nf_resnet_50_eps8'
  config.model.name = 'nf_resnet'
  config.model.kwargs.depth = 50
  # sigma fixed by the paper, not calibrated.
  common.set_fixed_noise(config, 8, 8e-7, noise_multiplier=2.5, steps=71589)
  # micro_batch_size: jax_privacy's per_device_per_step=32 (x4 augmult views).
  config.training.update(micro_batch_size=32, log_every_steps=100, eval_every_steps=5000,
                         eval_batch_size=500, checkpoint_every_steps=1000)
  return config
