"""ScatterNet features (models/scattering.py, models/features.py) and the models trained
on them (models/feature_heads.py): shapes for grey and RGB images, determinism, no
parameters in the extractor, per-example computation, per-example GroupNorm, and the
DP step still clipping each example's gradient of the head."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from image_classification.data import base
from image_classification.models import features
from image_classification.models import registry
from image_classification.models import scattering
from image_classification.privacy import clipped_sums


def _images(n, h, w, c, seed=0):
  return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


@pytest.mark.parametrize('shape,expected', [
    ((28, 28, 1), (7, 7, 81)),      # MNIST, Fashion-MNIST
    ((32, 32, 3), (8, 8, 3 * 81)),  # CIFAR-10, SVHN: 81 coefficients per colour
    ((8, 8, 1), (2, 2, 81)),
])
def test_output_shape(shape, expected):
  net = features.build('scattering', shape, J=2, L=8)
  assert net.output_shape == expected
  out = net(_images(2, *shape))
  assert out.shape == (2,) + expected and out.dtype == jnp.float32
  assert np.all(np.isfinite(out))


def test_coefficient_count_follows_j_and_l():
  # 1 + J L + L^2 J (J - 1) / 2 per input channel.
  assert features.build('scattering', (16, 16, 1), J=1, L=4).output_shape == (8, 8, 5)
  assert features.build('scattering', (16, 16, 2), J=2, L=4).output_shape == (4, 4, 2 * 25)


def test_rgb_channels_are_transformed_separately():
  net = features.build('scattering', (8, 8, 3))
  x = _images(1, 8, 8, 3)
  out = np.asarray(net(x))
  grey = features.build('scattering', (8, 8, 1))
  for c in range(3):  # channel c's 81 coefficients are the grey transform of channel c
    np.testing.assert_allclose(out[..., 81 * c:81 * (c + 1)],
                               np.asarray(grey(x[..., c:c + 1])), rtol=1e-5, atol=1e-6)


def test_deterministic_and_built_from_no_data():
  x = _images(3, 8, 8, 1)
  a = features.build('scattering', (8, 8, 1))
  b = features.build('scattering', (8, 8, 1))  # a second, independent build
  np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(a(x)))
  np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
  assert 'no data used to build them' in a.describe()
  assert a.describe().startswith('ScatterNet (J=2, L=8) fixed wavelet features')


def test_each_example_features_depend_on_that_example_alone():
  net = features.build('scattering', (8, 8, 1))
  x = _images(4, 8, 8, 1)
  together = np.asarray(net(x))
  other = x.copy()
  other[1:] = _images(3, 8, 8, 1, seed=5)  # change every other example
  np.testing.assert_allclose(np.asarray(net(other))[0], together[0], rtol=1e-6)
  for i in range(4):
    np.testing.assert_allclose(np.asarray(net(x[i:i + 1]))[0], together[i],
                               rtol=1e-5, atol=1e-6)


def test_precompute_keeps_labels_and_uses_public_constants_only():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, 10).astype(np.int32)
  splits = base.DatasetSplits('toy', base.ArraySource(images, labels),
                              base.ArraySource(images[:4], labels[:4]), 3,
                              mean=(0.5,), std=(0.25,))
  net = features.build('scattering', (8, 8, 1))
  ids = np.array([bytes([i]) for i in range(3)], dtype=object)
  held = base.ArraySource(images[:3], labels[:3], ids, base.IDS_CONTENT_AS_LOADED)
  new, val = features.precompute(splits, held, net, batch_size=4)  # 10 = 4 + 4 + 2
  # The records keep their ids and what those are (data/base.py).
  assert list(val.record_ids) == list(ids)
  assert val.record_ids_kind == base.IDS_CONTENT_AS_LOADED and new.train.record_ids is None
  assert new.train.image_shape == (2, 2, 81) and new.test.num_examples == 4
  np.testing.assert_array_equal(new.train.labels, labels)
  np.testing.assert_array_equal(val.labels, labels[:3])
  expected = net((images.astype(np.float32) / 255 - 0.5) / 0.25)
  np.testing.assert_allclose(new.train.images, np.asarray(expected), rtol=1e-5,
                             atol=1e-6)
  # The step's standardisation leaves the features unchanged.
  x = (new.train.images / 255.0 - np.asarray(new.mean)) / np.asarray(new.std)
  np.testing.assert_allclose(x, new.train.images, rtol=1e-5, atol=1e-6)
  # A dry run computes nothing: shape-only stand-ins.
  dry, _ = features.precompute(splits, None, net, compute=False)
  assert dry.train.image_shape == (2, 2, 81) and dry.train.num_examples == 10
  assert getattr(dry.train, 'holds_no_images', False)


def test_bad_extractor_configurations_are_refused():
  with pytest.raises(ValueError, match="config.model.features='wavelets'"):
    features.build('wavelets', (8, 8, 1))
  with pytest.raises(ValueError, match='divisible by 2\\^J=8'):
    features.build('scattering', (28, 28, 1), J=3)
  with pytest.raises(ValueError, match='features_kwargs'):
    features.build('scattering', (8, 8, 1), angles=8)


def test_scatternet_is_no_flax_module_and_has_no_parameters():
  net = features.build('scattering', (8, 8, 1))
  assert isinstance(net, scattering.ScatterNet)
  assert not hasattr(net, 'init') and not hasattr(net, 'apply')
  # Its only arrays are the fixed filters, rebuilt identically from (J, L, shape).
  assert net == features.build('scattering', (8, 8, 1))


# ------------------------------------------------------------------ heads
@pytest.mark.parametrize('name,kwargs,num_params', [
    ('feature_linear', {}, 2 * 2 * 81 * 10 + 10),
    ('feature_linear', {'num_groups': 0}, 2 * 2 * 81 * 10 + 10),
    # conv 81->4 (stride 2: 2x2 -> 1x1), conv 4->8, dense 8->5, head 5->10
    ('feature_cnn', {'channels': (4, 8), 'hidden': 5},
     (81 * 9 * 4 + 4) + (4 * 9 * 8 + 8) + (8 * 5 + 5) + (5 * 10 + 10)),
])
def test_heads_shapes_and_parameters(name, kwargs, num_params):
  model = registry.build(name, 10, **kwargs)
  x = _images(3, 2, 2, 81)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  assert sum(p.size for p in jax.tree_util.tree_leaves(params)) == num_params
  assert model.apply({'params': params}, x).shape == (3, 10)
  assert 'head' in params


def test_linear_head_starts_at_zero_and_feature_cnn_on_mnist_shapes():
  model = registry.build('feature_linear', 10)
  params = model.init(jax.random.PRNGKey(0), _images(1, 7, 7, 81))['params']
  assert not np.any(params['head']['kernel'])
  cnn = registry.build('feature_cnn', 10)
  x = _images(2, 7, 7, 81)
  cnn_params = cnn.init(jax.random.PRNGKey(0), x)['params']
  assert cnn_params['hidden']['kernel'].shape == (4 * 4 * 32, 32)  # 7x7 -> 4x4


def test_group_norm_is_per_example_and_takes_no_statistics_from_the_batch():
  model = registry.build('feature_linear', 3, num_groups=27, zero_init=False)
  x = _images(4, 2, 2, 81)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  out = np.asarray(model.apply({'params': params}, x))
  scaled = x.copy()
  scaled[0] = 100.0 * x[0] + 3.0  # an affine change of one example's features
  moved = np.asarray(model.apply({'params': params}, scaled))
  np.testing.assert_allclose(moved[1:], out[1:], rtol=1e-6)  # others untouched
  np.testing.assert_allclose(moved[0], out[0], rtol=1e-3, atol=1e-4)  # normalised away
  with pytest.raises(ValueError, match='num_groups=10 does not divide'):
    registry.build('feature_linear', 3, num_groups=10).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize('name', ['feature_linear', 'feature_cnn'])
@pytest.mark.parametrize('impl', ['vmap', 'fast', 'ghost'])
def test_the_dp_step_clips_each_example_gradient_of_the_head(name, impl):
  kwargs = ({'zero_init': False} if name == 'feature_linear'
            else {'channels': (4, 8), 'hidden': 8})
  model = registry.build(name, 3, **kwargs)
  n, clip = 4, 0.1
  x = 50.0 * _images(n, 2, 2, 27)  # large features: unclipped gradients far above C
  labels = np.arange(n, dtype=np.int32) % 3
  params = model.init(jax.random.PRNGKey(1), x[:1])['params']

  def loss_fn(p, v, y, k):
    del k
    logits = model.apply({'params': p}, v)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))

  views, keys = x[:, None], jax.random.split(jax.random.PRNGKey(2), n)
  raw = jax.vmap(jax.grad(loss_fn), (None, 0, 0, 0))(params, views, labels, keys)
  raw_norms = np.sqrt(sum(np.sum(np.asarray(g).reshape(n, -1) ** 2, axis=1)
                          for g in jax.tree_util.tree_leaves(raw)))
  assert np.all(raw_norms > 10 * clip)

  @jax.jit
  def contribution(mask):  # the clipped sum with only the unmasked example in it
    total = clipped_sums.get(impl)(loss_fn, params, views, labels, keys, mask, clip)[0]
    return jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(total)))

  for i in range(n):
    assert float(contribution(np.arange(n) == i)) == pytest.approx(clip, rel=1e-4)
