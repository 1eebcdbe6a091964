"""One training process per workdir.

Two commands training into the same --workdir at once (a command typed twice, a sweep
point started by hand beside its sweep) would interleave their metrics rows, overwrite
each other's checkpoints and run files, and each would take the other's rows for an
earlier attempt's. ``held(workdir)`` takes an exclusive, non-blocking ``flock`` on the
workdir folder itself for as long as a run trains in it (process 0 of a job: the others
share its workdir by design). A second command fails at once with ``WorkdirBusy``,
before it writes anything; the lock goes with the process (a killed run leaves none
behind). File systems without ``flock`` (some network mounts) run unlocked.

Privacy: nothing here touches the mechanism; the lock holds no content.
"""
import contextlib
import errno
import fcntl
import os

from image_classification import errors

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class WorkdirBusy(errors.UserError):
  """Another process is training in the workdir; the message says what to do."""


@contextlib.contextmanager
def held(workdir: str, writer: bool = True):
  """Holds the workdir's lock while the block runs (creating the folder if needed);
  raises WorkdirBusy when another process holds it. ``writer=False``: no lock."""
  if not writer:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(workdir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise WorkdirBusy(
            f'--workdir={workdir} is in use: another process is training in it (it '
            'holds the folder\'s lock). Wait for it to finish or stop it (Ctrl-C, or '
            'kill: it saves a checkpoint), then run this command again to resume; or '
            'use another --workdir') from None
      if e.errno not in _UNSUPPORTED:
        raise
    yield
  finally:
    os.close(fd)  # releases the lock
