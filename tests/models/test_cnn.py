"""Tests for the small CNNs: Tramer & Boneh's tanh CNN and its initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification.models import cnn
from image_classification.models import registry


def _params(**kwargs):
  model = cnn.TanhCNN(num_classes=10, **kwargs)
  return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))['params']


def test_tanh_cnn_shape_and_parameter_count():
  model, params = _params()
  assert sum(x.size for x in jax.tree.leaves(params)) == 26_010
  assert params['conv0']['kernel'].shape == (8, 8, 1, 16)
  assert params['conv1']['kernel'].shape == (4, 4, 16, 32)
  assert params['hidden']['kernel'].shape == (512, 32)
  logits = model.apply({'params': params}, jnp.zeros((3, 28, 28, 1)))
  assert logits.shape == (3, 10)
  assert isinstance(registry.build('tanh_cnn', num_classes=10), cnn.TanhCNN)


@pytest.mark.parametrize('layer, fan_in', [('conv0', 64), ('conv1', 256),
                                           ('hidden', 512), ('head', 32)])
def test_torch_init_is_uniform_within_one_over_sqrt_fan_in(layer, fan_in):
  """PyTorch's default for Conv2d/Linear: weights and biases U(-b, b), b = fan_in**-0.5."""
  _, params = _params(init_scheme='torch')
  bound = fan_in ** -0.5
  for name in ('kernel', 'bias'):
    w = np.asarray(params[layer][name]).ravel()
    assert np.all(np.abs(w) <= bound)
    assert np.abs(w).max() > 0.85 * bound  # spread over the interval, not shrunk
  kernel = np.asarray(params[layer]['kernel']).ravel()
  np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.15)


def test_lecun_init_has_zero_biases_and_larger_weights():
  _, torch_params = _params(init_scheme='torch')
  _, lecun_params = _params(init_scheme='lecun')
  for layer in ('conv0', 'conv1', 'hidden', 'head'):
    assert not np.any(np.asarray(lecun_params[layer]['bias']))
    ratio = lecun_params[layer]['kernel'].std() / torch_params[layer]['kernel'].std()
    assert 1.4 < ratio < 2.1  # sqrt(3) in expectation


def test_unknown_init_scheme_is_refused_naming_the_field():
  with pytest.raises(ValueError, match='init_scheme'):
    _params(init_scheme='xavier')
