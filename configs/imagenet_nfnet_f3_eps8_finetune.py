"""ImageNet: fine-tune a JFT-4B pre-trained NFNet-F3, DP-SGD at (epsilon=8, delta=8e-7), =
configs/imagenet_nfnet_f3_finetune.py:eps=8 (the UNVERIFIED values, sources, usage)."""
from configs import imagenet_nfnet_f3_finetune


def get_config():
  return imagenet_nfnet_f3_finetune.build(eps=8)
