"""Where a run keeps its mechanism secret: WORKDIR/mechanism_secret.json.

The secret itself (what it is, how the noise key and the sampling seed derive from it)
is privacy/mechanism_secret.py's. This module keeps it across a resume and hands it to
every process of a job (``for_run``).

Privacy semantics:
- the file is created owner-only (0600) and never overwritten, so a run's secret
  cannot be replaced halfway;
- a resume reads it back, and a resume without it is refused: a new secret would
  silently change the mechanism's noise and batches in the middle of the run;
- a restart without it is refused too when an earlier attempt in the workdir already
  released metrics rows (metrics.jsonl) but left no checkpoint: those figures came
  from the noisy parameters of the lost secret, and a fresh secret would start a
  second, independent mechanism on the same data whose ledger does not count them;
- it is deleted once the run is complete (nothing will resume); it is never copied
  into a published file.
"""
import json
import os

import numpy as np

from image_classification.workdir import run_files
from image_classification.privacy import mechanism_secret

SECRET_FILE = run_files.MECHANISM_SECRET


def path(workdir: str) -> str:
  return os.path.join(workdir, SECRET_FILE)


def create(workdir: str) -> bytes:
  """Draws a fresh secret from the OS's entropy and writes it to the workdir."""
  secret = mechanism_secret.fresh_secret()
  write(workdir, secret)
  return secret


def write(workdir: str, secret: bytes) -> None:
  """Writes ``secret`` owner-only (0600); refuses to overwrite an existing one."""
  mechanism_secret.check_secret(secret)
  os.makedirs(workdir, exist_ok=True)
  content = json.dumps({
      'secret_hex': secret.hex(),
      'about': 'The secret noise and batch-selection randomness of this DP run. Keep it '
               'private: whoever has it can regenerate the noise and the batches and '
               'undo the privacy guarantee. Needed only to resume the run; deleted when '
               'the run completes.'}, indent=2) + '\n'
  fd = os.open(path(workdir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  with os.fdopen(fd, 'w') as f:
    f.write(content)
    f.flush()
    os.fsync(f.fileno())


def read(workdir: str) -> bytes:
  """The workdir's secret; SecretError (naming the file) if it cannot be read."""
  try:
    with open(path(workdir)) as f:
      secret = bytes.fromhex(json.load(f)['secret_hex'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise mechanism_secret.SecretError(
        f'{path(workdir)} cannot be read ({e}): it holds the secret noise and batch '
        'randomness this run needs to resume exactly. Restore the file, or use a new '
        '--workdir to train again from scratch') from e
  if len(secret) != mechanism_secret.SECRET_BYTES:
    raise mechanism_secret.SecretError(
        f'{path(workdir)} holds {len(secret)} bytes, not '
        f'{mechanism_secret.SECRET_BYTES}: restore the file, or use a new --workdir')
  return secret


def read_or_create(workdir: str, resuming: bool, released_rows: int = 0) -> bytes:
  """The workdir's secret, drawn and written first for a new run.

  ``resuming``: the workdir holds a checkpoint, so the secret must already be there (a
  new secret would silently change the mechanism's randomness halfway).
  ``released_rows``: the metrics rows an earlier attempt in the workdir wrote (it left
  no checkpoint). Without the secret they cannot be continued: a new secret would be a
  second mechanism on the same data that the ledger does not count, so it is refused.
  """
  if os.path.exists(path(workdir)):
    return read(workdir)
  if resuming:
    raise mechanism_secret.SecretError(
        f'{path(workdir)} is missing, but the workdir holds checkpoints: the secret '
        'noise and batch randomness of the run are needed to resume it exactly. Restore '
        'the file, or use a new --workdir to train again from scratch')
  if released_rows:
    raise mechanism_secret.SecretError(
        f'{path(workdir)} is missing, but an earlier attempt in this workdir already '
        f'released {released_rows} metrics row(s) ({run_files.METRICS}) computed from '
        'the noisy parameters of that secret, before its first checkpoint. A fresh '
        'secret would start a second mechanism on the same data, and its ledger would '
        'not count what the earlier attempt released. Restore the file, or start a new '
        '--workdir (and count the earlier attempt\'s figures as released)')
  return create(workdir)


def for_run(workdir: str, seed: int, insecure: bool, resuming: bool,
            released_rows: int = 0, *, writer: bool = True,
            broadcast=None) -> mechanism_secret.MechanismRandomness:
  """The run's randomness: from the workdir's secret, or (INSECURE, testing switch)
  from ``seed``, in which case no file is read or written. ``resuming`` and
  ``released_rows``: see ``read_or_create``.

  Several processes (``broadcast``: process 0's uint8 array on every process, a
  collective): process 0 (``writer``) alone reads or creates the file and sends the
  32 secret bytes; every process then derives the same noise key and sampling seed.
  A failure on process 0 (a missing file for a resume) stops every process, with
  process 0 naming the file.
  """
  if insecure:
    return mechanism_secret.from_seed(seed)
  if broadcast is None:
    return mechanism_secret.from_secret(read_or_create(workdir, resuming, released_rows))
  message = np.zeros(1 + mechanism_secret.SECRET_BYTES, np.uint8)
  error = None
  if writer:
    try:
      secret = read_or_create(workdir, resuming, released_rows)
      message[0] = 1
      message[1:] = np.frombuffer(secret, np.uint8)
    except mechanism_secret.SecretError as e:
      error = e
  message = broadcast(message)
  if error is not None:
    raise error
  if not message[0]:
    raise mechanism_secret.SecretError(
        'process 0 could not read or create the run\'s secret '
        f'{path(workdir)} (see its error): stopping')
  return mechanism_secret.from_secret(bytes(message[1:]))


def discard(workdir: str) -> None:
  """Deletes the secret once nothing needs it (the run is complete)."""
  try:
    os.remove(path(workdir))
  except FileNotFoundError:
    pass
