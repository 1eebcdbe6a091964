"""CIFAR-100: fine-tune an ImageNet-32 pre-trained WRN-28-10 at (epsilon=1, delta=1e-5):
configs/cifar_wrn_28_10_finetune.py:eps=1,dataset=cifar100 (recipe, sources, usage)."""
from configs import cifar_wrn_28_10_finetune


def get_config():
  return cifar_wrn_28_10_finetune.build(eps=1, dataset='cifar100')
