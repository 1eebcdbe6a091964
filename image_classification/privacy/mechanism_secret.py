"""The secret randomness of the DP mechanism: the noise key and the batch-selection seed.

Privacy semantics. The Gaussian mechanism protects a clipped sum only while its noise is
unknown to the adversary, and Poisson (or fixed-size) subsampling amplifies privacy only
while nobody knows which examples were drawn. Both therefore come from a secret:

- 256 bits from the operating system's entropy (``fresh_secret``), drawn when a run
  starts in a fresh workdir, so every run, every sweep point and every re-run of a config
  into a new workdir has its own noise stream and its own batches;
- kept private by the trainer (workdir/secret_file.py) so that a resume continues the
  same streams exactly, and never written to a published file (config.json,
  metrics.jsonl, privacy.json/.md, summary.json, plan.json, checkpoint metadata, wandb,
  sweep tables, reports), nor compiled into an executable: the noise key reaches the
  jitted step as an argument, so XLA dumps and the compilation cache do not hold it.

``config.seed`` drives only the initialisation and the augmentation/dropout keys, which
need not be secret (an example's contribution is clipped whatever its augmentation).

The noise key is a 128-bit key of the Threefry-4x32-20 generator (four uint32 words;
privacy/noise_generator.py): the 256-bit secret is hashed (SHA-256, domain-separated)
down to it, and every step's Gaussian draws are a function of all 128 bits
(privacy/noise.py says how; docs/privacy.md, invariant 17). Rebuilding a step's noise
from released checkpoints therefore means searching 2^128 keys. (Until 2026-12-06 the
key was JAX's default threefry2x32 key, 64 bits: a search of 2^64 keys, each tested
against a hundred released coordinates, is within reach of a well-funded attacker.) The batch-selection seed keeps all 256 bits (numpy's SeedSequence takes them
whole).

For tests and debugging only, ``privacy.insecure_seeded_noise=True`` derives both from
``config.seed`` as earlier versions did, with the same 64-bit threefry2x32 key, so that
such runs stay bit for bit what they were: anyone who holds the config can then
regenerate the noise and the batches, and every report of such a run says so in its
first lines.
"""
import dataclasses
import hashlib
import secrets

import jax
import numpy as np
from image_classification import errors

INSECURE_WARNING = (
    'INSECURE: privacy.insecure_seeded_noise=True derived the noise and the batches from '
    'config.seed. Anyone who has this config can regenerate them, so the (epsilon, delta) '
    'guarantee does NOT hold once the config is published. For tests and debugging only.')

SECRET_BYTES = 32  # 256 bits
NOISE_KEY_WORDS = 4  # the noise key: 4 uint32 words, 128 bits (threefry4x32)


class SecretError(errors.UserError):
  """The run's secret is missing, unreadable or malformed; the message says which."""


@dataclasses.dataclass(frozen=True, repr=False)
class MechanismRandomness:
  """The two secrets of one run. ``repr`` hides them so a log line cannot leak them."""
  # The raw noise key: NOISE_KEY_WORDS uint32 words (threefry4x32, 128 bits) from a
  # secret; the two words of a threefry2x32 key (64 bits) from the insecure seed.
  noise_key_words: tuple[int, ...]
  sampling_seed: int                 # the batch selection's numpy seed
  insecure: bool

  def noise_key(self) -> np.ndarray:
    """The base noise key as a raw uint32 array (pass it to the step as an argument;
    privacy/noise.py picks the generator from its length)."""
    return np.asarray(self.noise_key_words, dtype=np.uint32)

  def __repr__(self) -> str:
    return f'MechanismRandomness(insecure={self.insecure}, secret=<hidden>)'


def describe(insecure: bool) -> str:
  """One sentence for the privacy report (it reveals nothing about the values)."""
  if insecure:
    return INSECURE_WARNING
  # The file is workdir/secret_file.py's SECRET_FILE (a test keeps the two equal).
  return ('noise and batch selection drawn from a 256-bit secret taken from the '
          "operating system's entropy at the start of the run, kept private in the "
          'workdir (mechanism_secret.json, deleted when the run completes) and never '
          'published; every noise draw depends on a 128-bit key derived from it')


def fresh_secret() -> bytes:
  """A new secret: SECRET_BYTES from the operating system's entropy."""
  return secrets.token_bytes(SECRET_BYTES)


def check_secret(secret: bytes) -> bytes:
  """``secret`` if it has SECRET_BYTES bytes; raises SecretError otherwise."""
  if len(secret) != SECRET_BYTES:
    raise SecretError(f'a mechanism secret has {SECRET_BYTES} bytes, got {len(secret)}')
  return secret


def _derive(secret: bytes, label: bytes) -> bytes:
  return hashlib.sha256(b'dp-image-classification/' + label + b'/' + secret).digest()


def from_secret(secret: bytes) -> MechanismRandomness:
  """The noise key (128 bits) and sampling seed (256 bits) of a secret: independent,
  domain-separated SHA-256 derivations."""
  check_secret(secret)
  noise = _derive(secret, b'noise')
  words = tuple(int.from_bytes(noise[4 * i:4 * i + 4], 'little')
                for i in range(NOISE_KEY_WORDS))
  sampling_seed = int.from_bytes(_derive(secret, b'sampling'), 'little')
  return MechanismRandomness(noise_key_words=words, sampling_seed=sampling_seed,
                             insecure=False)


def from_seed(seed: int) -> MechanismRandomness:
  """INSECURE, for tests: what ``jax.random.PRNGKey(seed)`` and ``seed`` gave before
  (a 64-bit threefry2x32 noise key, so that seeded runs reproduce earlier ones)."""
  words = tuple(int(w) for w in np.asarray(jax.random.PRNGKey(int(seed))))
  return MechanismRandomness(noise_key_words=words, sampling_seed=int(seed),
                             insecure=True)
