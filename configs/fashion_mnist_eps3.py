"""Fashion-MNIST at (epsilon=3, delta=1e-5): the recipe of configs/mnist_eps3.py
(ScatterNet features + a linear model), only the dataset differs. Nothing here was
tuned on Fashion-MNIST (results/records.md). The end-to-end CNN:
configs/fashion_mnist_eps3_end_to_end.py.

  python launch.py --config=configs/fashion_mnist_eps3.py --config.data.path=DIR \
      --workdir=DIR
"""
from configs import common


def get_config():
  return common.scatternet('fashion_mnist_eps3', 'fashion_mnist', ema=0.99)
