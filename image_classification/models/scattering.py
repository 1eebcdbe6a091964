"""ScatterNet: a fixed wavelet scattering transform used as a public feature extractor.

The scattering transform (Mallat 2012; Bruna & Mallat 2013) of order 2 with J scales
and L angles: Morlet wavelet filters built from (J, L, image size) alone, then
|x * psi| cascades averaged by a Gaussian low-pass and subsampled by 2^J. Tramer &
Boneh 2021 ("Differentially private learning needs better features") train linear
models and small CNNs on these features with DP-SGD; J=2, L=8 on 28x28 images gives
1 + J L + L^2 J (J-1) / 2 = 81 channels of 7x7 per input channel.

Privacy: the filters are a closed-form function of (J, L, the image size). No data is
used to build them and nothing is trained, so the transform is a public, per-example
function: applying it to every private image costs no privacy (each example's
features depend on that example alone), and DP-SGD then clips the per-example
gradients of whatever model is trained on the features.

The filter bank comes from kymatio 0.3's JAX frontend; kymatio is imported only when an
extractor is built.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from image_classification.models import features


@dataclasses.dataclass(frozen=True)
class ScatterNet:
  """The order-2 scattering transform of images of ``image_shape`` [H, W, C].

  Called on standardised float images [B, H, W, C], returns [B, H / 2^J, W / 2^J,
  C * K] with K = 1 + J L + L^2 J (J - 1) / 2 coefficients per input channel, channel
  c's K coefficients contiguous (channels last, as every model here expects).
  """
  image_shape: tuple[int, int, int]
  J: int = 2
  L: int = 8
  _transform: Any = dataclasses.field(default=None, compare=False, repr=False)

  def __post_init__(self):
    h, w, c = self.image_shape
    if self.J < 1 or self.L < 1:
      raise ValueError(f'ScatterNet needs J >= 1 and L >= 1, got J={self.J}, '
                       f'L={self.L} (config.model.features_kwargs)')
    if h % 2 ** self.J or w % 2 ** self.J:
      raise ValueError(f'ScatterNet with J={self.J} needs image sides divisible by '
                       f'2^J={2 ** self.J}; the images are {h}x{w}x{c}: lower J or set '
                       'config.data.image_size')
    # pylint: disable=g-import-not-at-top
    # kymatio 0.3: `import kymatio.jax` needs scipy's removed sph_harm; the 2-D
    # frontend alone does not.
    from kymatio.scattering2d.frontend.jax_frontend import ScatteringJax2D
    transform = ScatteringJax2D(J=self.J, shape=(h, w), L=self.L)
    object.__setattr__(self, '_transform', transform)

  @property
  def coefficients_per_channel(self) -> int:
    return 1 + self.J * self.L + self.L ** 2 * self.J * (self.J - 1) // 2

  @property
  def output_shape(self) -> tuple[int, int, int]:
    h, w, c = self.image_shape
    return (h // 2 ** self.J, w // 2 ** self.J, c * self.coefficients_per_channel)

  def describe(self) -> str:
    return (f'ScatterNet (J={self.J}, L={self.L}) fixed wavelet features, no data used '
            'to build them')

  def __call__(self, images: jax.Array) -> jax.Array:
    b, h, w, c = images.shape
    x = jnp.transpose(images.astype(jnp.float32), (0, 3, 1, 2))  # [B, C, H, W]
    s = self._transform(x)  # [B, C, K, H', W']
    s = s.reshape((b, c * s.shape[2]) + s.shape[3:])
    return jnp.transpose(s, (0, 2, 3, 1))


@features.register('scattering')
def scattering(image_shape, J: int = 2, L: int = 8) -> ScatterNet:  # pylint: disable=invalid-name
  return ScatterNet(tuple(int(d) for d in image_shape), J=int(J), L=int(L))

