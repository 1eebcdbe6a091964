"""Pieces that several experiment configs share: the `file.py:key=value` argument
parser, and the recipes of De et al. 2022 and Tramer & Boneh 2021 that a family file
(e.g. configs/cifar10_wrn_16_4.py) completes with its own hyperparameter table.

ml_collections' config flag passes what follows ':' in --config=FILE.py:ARG to
get_config(ARG), so a family file serves every row of its table:

  python launch.py --config=configs/cifar10_wrn_16_4.py:eps=1 --workdir=DIR
"""
from typing import Any, Mapping, Optional

import ml_collections

from configs import base

_TRUE, _FALSE = ('1', 'true', 'yes', 'y'), ('0', 'false', 'no', 'n')


def _convert(key: str, text: str, default: Any) -> Any:
  """`text` read as the type of `default` (a string when the default is None)."""
  if isinstance(default, bool):
    if text.lower() not in _TRUE + _FALSE:
      raise ValueError(f'config argument {key}={text!r}: expected true or false')
    return text.lower() in _TRUE
  if isinstance(default, (int, float)):
    try:
      return type(default)(text)
    except ValueError:
      raise ValueError(f'config argument {key}={text!r}: expected '
                       f'{type(default).__name__}') from None
  return text


def parse_arg(arg: Optional[str], **defaults: Any) -> ml_collections.ConfigDict:
  """'eps=1,augmult=16' -> ConfigDict(eps=1.0, augmult=16) over `defaults`.

  Only the keys of `defaults` are accepted (a typo is an error, not a silent default);
  each value is converted to the type of its default (bool: true/false/1/0; a bare
  `key` sets a bool to True). An empty or None `arg` gives the defaults.
  """
  parsed = dict(defaults)
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, sep, text = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'config argument {key!r} is not one of '
                       f'{sorted(defaults)} (in {arg!r})')
    if not sep and not isinstance(defaults[key], bool):
      raise ValueError(f'config argument {key!r} needs a value: {key}=...')
    parsed[key] = _convert(key, text.strip(), defaults[key]) if sep else True
  return ml_collections.ConfigDict(parsed)


def row(table: Mapping[float, Mapping[str, Any]], eps: Optional[float],
        family: str, **other_arguments: Any) -> Mapping[str, Any]:
  """The hyperparameter row of `table` for target epsilon `eps`. `other_arguments`:
  the family file's other arguments and their defaults, named in the error."""
  if eps is None or eps not in table:
    choices = ', '.join(f'{e:g}' for e in table)
    others = ''.join(f', {key} (default {value})' for key, value in
                     other_arguments.items())
    raise ValueError(f'{family}: choose eps= one of {choices} (its arguments: eps'
                     f'{others}; e.g. --config=configs/{family}.py:'
                     f'eps={next(iter(table)):g})')
  return table[eps]


def eps_name(eps: float) -> str:
  """1.0 -> 'eps1', 0.5 -> 'eps0.5': the suffix of the experiment names."""
  return f'eps{eps:g}'


def set_fixed_noise(config: ml_collections.ConfigDict, eps: float, delta: float,
                    noise_multiplier: Optional[float], steps: int) -> None:
  """Target (eps, delta) with the given sigma (None: calibrated) and step count."""
  config.privacy.target_epsilon = float(eps)
  config.privacy.delta = delta
  config.privacy.noise_multiplier = noise_multiplier
  config.training.num_steps = steps


def de2022(dataset: str, augmult: int, batch_size: int, ema: float,
           learning_rate: float) -> ml_collections.ConfigDict:
  """De et al. 2022's recipe (arXiv:2204.13650, Appendix C): augmentation
  multiplicity K with random crop and flip, clipping norm C=1, plain SGD (no momentum,
  no weight decay) at a constant learning rate, parameter EMA. The caller sets the
  model and the privacy row."""
  config = base.get_config()
  config.data.name = dataset
  config.data.augmult = augmult
  config.data.random_crop = True
  config.data.random_flip = True
  config.privacy.clipping_norm = 1.0
  config.training.batch_size = batch_size
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = learning_rate
  config.training.optimizer.momentum = 0.0
  config.training.ema.decay = ema
  return config


def imagenet(image_size: int, learning_rate: float) -> ml_collections.ConfigDict:
  """De et al. 2022's ImageNet recipe (the de2022 one at batch 16384, augmentation
  multiplicity 4, EMA 0.99999) on `image_size` x `image_size` images, with the
  paper's ImageNet delta, 8e-7. That delta is just above 1/N = 7.8e-7 (N = 1,281,167),
  which is refused unless allowed; kept for comparability, and privacy.md says so
  first."""
  config = de2022('imagenet2012', augmult=4, batch_size=16384, ema=0.99999,
                  learning_rate=learning_rate)
  config.data.image_size = image_size
  config.privacy.delta = 8e-7
  config.privacy.allow_large_delta = True
  return config


def bandmf(config: ml_collections.ConfigDict, experiment: str,
           num_bands: int) -> ml_collections.ConfigDict:
  """`config` with banded matrix factorisation over `num_bands` steps instead of
  independent noise (privacy/bandmf.py; b = 1 is DP-SGD exactly)."""
  config.experiment = experiment
  config.privacy.mechanism = 'bandmf'
  config.privacy.num_bands = num_bands
  return config


def tramer_boneh(experiment: str, dataset: str, batch_size: int, learning_rate: float,
                 log_every_steps: int,
                 eval_every_steps: int) -> ml_collections.ConfigDict:
  """Tramer & Boneh 2021's end-to-end CNN setting (github.com/ftramer/Handcrafted-DP,
  cnns.py): their tanh CNN (about 26k params) with their PyTorch initialisation, SGD
  momentum 0.9, clipping norm 0.1, 40 epochs, at (3, 1e-5). The noise multiplier is
  left None: calibrated so that the 40 epochs spend exactly epsilon=3 (the target
  they calibrated to; see configs/mnist_eps3_end_to_end.py on their looser conversion)."""
  config = base.get_config()
  config.experiment = experiment
  config.data.name = dataset
  config.model.name = 'tanh_cnn'
  config.model.kwargs.init_scheme = 'torch'
  config.privacy.target_epsilon = 3.0
  config.privacy.delta = 1e-5
  config.privacy.noise_multiplier = None
  config.privacy.clipping_norm = 0.1
  config.training.batch_size = batch_size
  config.training.num_epochs = 40.0
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = learning_rate
  config.training.optimizer.momentum = 0.9
  config.training.update(log_every_steps=log_every_steps,
                         eval_every_steps=eval_every_steps)
  return config


def scatternet(experiment: str, dataset: str, model: str = 'feature_linear',
               batch_size: int = 4096, learning_rate: float = 8.0,
               num_epochs: float = 40.0, ema: float = 0.0, scale: int = 3,
               image_size: int = 32, num_groups: int = 31,
               shift: int = 1) -> ml_collections.ConfigDict:
  """Tramer & Boneh 2021's ScatterNet recipe (github.com/ftramer/Handcrafted-DP),
  one scale coarser: fixed ScatterNet features (J = ``scale``, L=8; models/scattering.py,
  no data used to build them) of the images resized to ``image_size`` (J=3 needs sides
  divisible by 8: 28x28 digits are resized to 32x32, bilinear, data-independent),
  per-example GroupNorm of the features (``num_groups``, no parameters: nothing
  estimated from the data), then a linear model ('feature_linear') or a small tanh CNN
  ('feature_cnn') trained with DP-SGD on 5 fixed views of each example (the image and
  its shifts by ``shift`` pixels; augmentation multiplicity on public views, the
  gradients averaged before clipping): clipping norm 0.1, SGD momentum 0.9, noise
  calibrated so that ``num_epochs`` of Poisson-sampled batches spend (3, 1e-5) under
  PLD accounting (the same guarantee as RDP's at less noise). No random
  augmentation (the features are computed once from the images). The defaults were
  chosen on the MNIST validation split; results/records.md holds the searches."""
  config = base.get_config()
  config.experiment = experiment
  config.data.name = dataset
  config.model.features = 'scattering'
  config.model.features_kwargs = ml_collections.ConfigDict({'J': scale, 'L': 8})
  config.model.features_shift = shift
  config.data.image_size = image_size
  config.model.name = model
  config.model.kwargs.num_groups = num_groups
  config.privacy.target_epsilon = 3.0
  config.privacy.delta = 1e-5
  config.privacy.noise_multiplier = None
  # PLD accounting: the same (3, 1e-5) guarantee as RDP at 7% less noise
  # (sigma 2.46 instead of 2.63 for 586 steps at q = 4096 / 60000).
  config.privacy.accountant = 'pld'
  config.privacy.clipping_norm = 0.1
  config.training.batch_size = batch_size
  config.training.num_epochs = num_epochs
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = learning_rate
  config.training.optimizer.momentum = 0.9
  config.training.ema.decay = ema
  # The dense layers' per-example norms from ||x|| ||dy||, without per-example
  # gradients (the same clipped sum; 10x fewer bytes for a 3969 x 10 linear model).
  config.training.per_example_grads = 'ghost'
  config.training.log_every_steps = 10
  config.training.eval_every_steps = 100
  return config
