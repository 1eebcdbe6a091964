"""CIFAR-10, WRN-40-4 from scratch, DP-SGD at (epsilon=8, delta=1e-5).

WRN-40-4 is De et al. 2022's best CIFAR-10 model without extra data: 81.4% at
(8, 1e-5). It uses the same privacy / optimisation hyperparameters as the WRN-16-4
eps=8 row (Appendix C.5; configs/cifar10_wrn_16_4.py); only the depth changes.

  python launch.py --config=configs/cifar10_wrn_40_4_eps8.py --workdir=DIR
"""
from configs import cifar10_wrn_16_4


def get_config():
  return cifar10_wrn_16_4.build(eps=8, depth=40)
