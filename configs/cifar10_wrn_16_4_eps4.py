"""CIFAR-10, WRN-16-4 from scratch, DP-SGD at (epsilon=4, delta=1e-5), De et al. 2022:
configs/cifar10_wrn_16_4.py:eps=4 (the table, its sources and the usage are there)."""
from configs import cifar10_wrn_16_4


def get_config():
  return cifar10_wrn_16_4.build(eps=4)
