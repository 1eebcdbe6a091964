"""The mechanism's randomness: the noise key and the sampling seed are independent
derivations of a 256-bit secret, the noise key is an argument of the compiled step (not
a constant in it), and the seeded derivation exists only behind the labelled testing
switch (privacy/mechanism_secret.py). Keeping the secret in the workdir, and keeping it
out of every published file, is tests/workdir/test_secret_file.py's."""
import jax
import numpy as np
import optax
import pytest

from image_classification.models import registry
from image_classification.privacy import batch_selection
from image_classification.privacy import mechanism_secret
from image_classification.privacy import privatizers
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib


def test_noise_and_sampling_are_independent_derivations_of_the_secret():
  r = mechanism_secret.from_secret(bytes(32))
  other = mechanism_secret.from_secret(bytes(31) + b'\x01')
  assert r.noise_key_words != other.noise_key_words
  assert r.sampling_seed != other.sampling_seed
  assert r.sampling_seed.bit_length() > 200  # all 256 bits reach the sampler
  words = r.noise_key_words
  assert len(words) == 4  # a 128-bit noise key (tests/privacy/test_noise_key.py)
  as_int = int.from_bytes(b''.join(w.to_bytes(4, 'little') for w in words), 'little')
  assert as_int != r.sampling_seed % 2**128


def test_the_augmentation_key_is_a_third_independent_derivation_of_the_secret():
  r = mechanism_secret.from_secret(bytes(32))
  other = mechanism_secret.from_secret(bytes(31) + b'\x01')
  assert len(r.augment_key_words) == 4  # 128 bits, like the noise key
  assert r.augment_key_words != r.noise_key_words
  assert r.augment_key_words != other.augment_key_words
  assert r.augment_key().dtype == np.uint32


def test_the_testing_switch_reproduces_the_seeded_keys():
  for seed in (0, 7, 2**40 + 3):
    r = mechanism_secret.from_seed(seed)
    assert r.insecure
    np.testing.assert_array_equal(r.noise_key(), np.asarray(jax.random.PRNGKey(seed)))
    # Augmentation and dropout as before the augmentation key was secret.
    np.testing.assert_array_equal(r.augment_key(), np.asarray(jax.random.PRNGKey(seed)))
    assert r.sampling_seed == seed


def test_the_noise_key_is_not_compiled_into_the_step():
  """The key is an argument of the jitted step, so the compilation cache and XLA dumps
  never hold it."""
  model = registry.build('cnn', 3, channels=(4,))
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 6, 6, 1), np.float32))['params']
  optimizer = optax.sgd(1.0)
  cfg = dp_step.StepConfig(clipping_norm=1.0, expected_batch_size=4.0,
                           micro_batch_size=0,
                           per_example_grads='vmap')
  mesh = mesh_lib.make_mesh()
  words = mechanism_secret.from_secret(bytes(range(7, 39))).noise_key_words
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(0),
                        noise_key=np.asarray(words, np.uint32),
                        privatizer=privatizers.GaussianPrivatizer(1.0))
  state = dp_step.init_state(params, optimizer, False)
  images = np.zeros((4, 6, 6, 1), np.uint8)
  lowered = step.step.lower(state, images, np.zeros(4, np.int32), np.ones(4, bool),
                            step.noise_key, step.augment_key)
  text = lowered.as_text() + lowered.compile().as_text()
  for w in words:
    assert str(w) not in text and f'{w:x}' not in text.lower()
  # The augmentation key travels the same way.
  augment = mechanism_secret.from_secret(bytes(range(7, 39))).augment_key_words
  secret_augment = dp_step.DPStep(model.apply, optimizer, cfg, mesh,
                                  np.asarray(augment, np.uint32),
                                  noise_key=np.asarray(words, np.uint32),
                                  privatizer=step.privatizer)
  lowered = secret_augment.step.lower(state, images, np.zeros(4, np.int32),
                                      np.ones(4, bool), secret_augment.noise_key,
                                      secret_augment.augment_key)
  text = lowered.as_text() + lowered.compile().as_text()
  for w in augment + words:
    assert str(w) not in text and f'{w:x}' not in text.lower()
  # And the key given is the key used: two keys, two different updates.
  other = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(0),
                         noise_key=np.asarray((1, 2, 3, 4), np.uint32),
                         privatizer=step.privatizer)
  batch = (images, np.zeros(4, np.int32), np.ones(4, bool))
  fresh = lambda: dp_step.init_state(jax.tree_util.tree_map(np.array, params),  # pylint: disable=g-long-lambda
                                     optimizer, False)
  p1 = jax.device_get(step.run(fresh(), [batch])[0])
  p2 = jax.device_get(other.run(fresh(), [batch])[0])
  assert not np.allclose(jax.tree_util.tree_leaves(p1.params)[0],
                         jax.tree_util.tree_leaves(p2.params)[0])


def test_the_sampler_draws_from_the_secret_seed_not_config_seed():
  secret = mechanism_secret.from_secret(bytes(range(32)))
  a = batch_selection.PoissonSampling(1000, 100, seed=secret.sampling_seed)
  seeded = batch_selection.PoissonSampling(1000, 100, seed=0)
  assert not np.array_equal(a.indices(0), seeded.indices(0))
  assert 'seed' not in repr(a)


def test_a_secret_has_256_bits():
  assert len(mechanism_secret.fresh_secret()) == mechanism_secret.SECRET_BYTES == 32
  assert mechanism_secret.fresh_secret() != mechanism_secret.fresh_secret()
  with pytest.raises(mechanism_secret.SecretError, match='32 bytes'):
    mechanism_secret.from_secret(bytes(31))
