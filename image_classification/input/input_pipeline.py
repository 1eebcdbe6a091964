"""Worker processes (grain) that decode and crop the examples of on-disk datasets.

``ParallelSource(source, num_workers)`` wraps an on-disk source (input/on_disk.py: an
image folder read from disk, tfds ImageNet) and is itself an ``ImageSource``:
``get(indices, step)`` returns exactly ``source.get(indices, step)``, but the
examples are read, decoded, cropped and resized by ``num_workers`` worker processes
that grain starts and drives (``MapDataset.range(...).map(read).mp_prefetch``).
``num_workers=0`` reads in the calling thread (the prefetch thread of the training
loop, input/prefetch.py), as before. In-memory datasets (``ArraySource``) never use
workers: indexing an array costs less than sending the examples between processes.

The trainer keeps the batch selection: it draws each step's indices, and each
process asks only for the rows its own devices hold (``distributed.global_batch``
calls ``get`` with them), so a host decodes only its share of the batch.

How the given indices reach the workers. A grain pipeline is a fixed sequence of
elements that its workers compute independently (worker w computes elements
w, w + W, w + 2W, ...). Here an element is a chunk of consecutive rows of one
request (a row: one example the parent asks for; rows are numbered across requests).
For each ``get`` the parent sends the request (its first element, first row, chunk
size, step, indices) to every worker over a private channel. The chunk size is
``rows_per_element`` (8), smaller when the request has fewer than two chunks per
worker, so that grain's bookkeeping is paid once per chunk and every worker still has
work. Each worker looks up its elements' rows there, calls
``source.read_one(index, step)`` for each, writes the image of row r to slot r of a
ring of image slots in shared memory and returns (element, labels); the parent takes
the elements back in order and copies each image out of its slot. The channel is a
Unix socket in Linux's abstract namespace (no file; elsewhere a socket file with a
random name in a private temporary folder), each connection authenticated by a random
key; the ring is a memfd (memory with no name in any file system) whose descriptor
goes to the workers over that socket. Off Linux there is no ring: the images are
pickled through grain's pipes.

Determinism: an example's crop depends on (seed, step, record id) only (on_disk.HostCrop),
so the batch of (step, indices) is the same with 0, 1 or many workers, in one process
or several, before and after a restart; the pipeline keeps no state to checkpoint.

Lifecycle: the workers start at the first ``get`` (a few seconds: each imports
grain, and with it jax; about 200 MB each), serve every later one and stop at
``close()`` (also at garbage collection and when the process exits); a worker whose
parent dies exits too. They are started with multiprocessing's "spawn": a script that
reads through the pipeline needs the usual ``if __name__ == '__main__':`` guard
(launch.py has it).

Privacy: the indices of a step are secret (they tell the batch's composition).
* They live in memory only: the parent's, the socket's buffers, and a worker's while
  it reads them. Nothing is written to disk or put in a file name: the channel is a
  socket with a random name and no file (Linux); the examples come back as (element
  number, labels) with the images in the memfd ring, never with their indices. grain's
  own way (a shared-memory segment per image, /dev/shm/psm_*) is turned off, so no
  file of the batch exists even in memory; multiprocessing's named semaphores
  (/dev/shm/sem.mp-<random>) hold counters.
* Nothing is logged: grain's debug mode and dataset-graph output are switched off
  when the workers start, and this pipeline's objects print no index, key or file
  list (their repr is fixed text); the workers' command lines hold file descriptors
  only. A failed read of the private split raises an error that names no file and
  no index (on_disk.read_failure).
* The examples themselves are private data, held in memory as the in-thread path
  holds them.
"""
import collections
import dataclasses
import math
import mmap
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing import connection
from multiprocessing import reduction

from absl import flags
import grain
import numpy as np

from image_classification.data import base
from image_classification.data import fingerprint as fingerprint_lib
from image_classification.data import record_split

# config.data.num_workers = -1: one worker per core of this host, at most this many.
MAX_DEFAULT_WORKERS = 32
AUTO = -1
# Rows (examples) per grain element at most: grain's per-element cost is paid once per
# chunk; a request with fewer than two chunks per worker gets smaller chunks.
ROWS_PER_ELEMENT = 8
# Chunks each worker may hold ready ahead of the parent.
BUFFER_PER_WORKER = 2
# Elements of the endless grain pipeline: far more than any run reads.
_NUM_SLOTS = 2 ** 62
# A request is int64 [first element, first row, chunk size, step, n, index_1 .. index_n].
_HEADER = 5
_PARENT_POLL_S = 1.0
_NO_SHARED_MEMORY = 2 ** 62  # grain's min_shm_size: arrays of fewer bytes are pickled
_RING_HEADER = 64  # bytes before the image slots: int64 number of rows taken
_SLOT_POLL_S = 0.001


def default_num_workers() -> int:
  """The cores this process may run on, at most MAX_DEFAULT_WORKERS."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    cores = os.cpu_count() or 1
  return max(1, min(cores, MAX_DEFAULT_WORKERS))


def resolve_num_workers(value) -> int:
  """config.data.num_workers as a count: -1 -> default_num_workers(); n >= 0 -> n."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < AUTO:
    raise base.DataError(
        f'config.data.num_workers={value!r}: give the number of worker processes that '
        'decode on-disk images (0: decode in the loading thread; -1: one per core of '
        f'this host, at most {MAX_DEFAULT_WORKERS})')
  return default_num_workers() if value == AUTO else int(value)


def reads_on_disk(source) -> bool:
  """Whether ``source`` decodes when read (so workers can help): it has read_one."""
  return callable(getattr(source, 'read_one', None))


# ---------------------------------------------------------------------- the images
def _num_chunks(rows: int, chunk: int) -> int:
  """The grain elements that a request of ``rows`` rows in chunks of ``chunk`` takes."""
  return -(-rows // chunk)


class _ImageRing:
  """Slots for decoded images that the parent and its workers map: a memfd, memory
  with no name in any file system (not under /dev/shm), shared by passing its file
  descriptor over the authenticated channel. Row r goes to slot r mod slots; a
  worker writes it only once the parent has taken row r - slots (the header's
  counter), so nothing is overwritten before it is copied out. With at least
  ``rows_per_element`` slots this never deadlocks: the chunk the parent waits for
  only needs slots of rows the parent has already taken."""

  def __init__(self, slots: int, shape, fd: int | None = None):
    self.slots, self.shape = int(slots), tuple(int(d) for d in shape)
    size = _RING_HEADER + self.slots * math.prod(self.shape)
    if fd is None:
      fd = os.memfd_create('input-pipeline', os.MFD_CLOEXEC)
      os.ftruncate(fd, size)
    self.fd = fd
    self._map = mmap.mmap(fd, size)
    self.taken = np.ndarray((1,), np.int64, buffer=self._map)
    self.images = np.ndarray((self.slots,) + self.shape, np.uint8, buffer=self._map,
                             offset=_RING_HEADER)

  def __repr__(self):
    return f'_ImageRing({self.slots} slots)'

  @staticmethod
  def available() -> bool:
    return hasattr(os, 'memfd_create')

  def describe(self) -> bytes:
    return np.array([self.slots, *self.shape], '<i8').tobytes()

  def close(self) -> None:
    del self.taken, self.images
    self._map.close()
    os.close(self.fd)


# ---------------------------------------------------------------------- the channel
def _private_address() -> str:
  token = secrets.token_hex(16)
  if sys.platform.startswith('linux'):
    return f'\0dp-input-{token}'  # the abstract namespace: no file at all
  folder = tempfile.mkdtemp(prefix='dp-input-')  # mode 0700
  return os.path.join(folder, token)


class _RequestChannel:
  """The parent's end: sends every request to every worker, in order.

  A worker that connects late first gets every request it may still need (those not
  yet fully taken back by the parent).
  """

  def __init__(self, ring: _ImageRing | None):
    self._ring = ring
    self.address = _private_address()
    self.authkey = secrets.token_bytes(32)
    # Authenticated per connection in a thread of its own (_admit), so that a
    # stranger who connects and never answers cannot hold up the workers.
    self._listener = connection.Listener(self.address, 'AF_UNIX')
    self._lock = threading.Lock()
    self._connections = []
    self._pending = collections.deque()  # (end row, message)
    self._closed = False
    self._thread = threading.Thread(target=self._accept, name='input-pipeline-accept',
                                    daemon=True)
    self._thread.start()

  def __repr__(self):
    return '_RequestChannel()'

  def _accept(self):
    while True:
      try:
        conn = self._listener.accept()
      except OSError:
        if self._closed:
          return
        continue
      if self._closed:
        conn.close()
        return
      threading.Thread(target=self._admit, args=(conn,), name='input-pipeline-admit',
                       daemon=True).start()

  def _admit(self, conn) -> None:
    """Checks that ``conn`` holds the key (HMAC challenges both ways), then sends it
    the ring and the pending requests and adds it to the workers."""
    try:
      connection.deliver_challenge(conn, self.authkey)
      connection.answer_challenge(conn, self.authkey)
    except (OSError, EOFError, connection.AuthenticationError):
      conn.close()
      return
    with self._lock:
      if self._closed:
        conn.close()
        return
      try:
        # First the image ring (or none), then every request still needed.
        if self._ring is None:
          conn.send_bytes(b'')
        else:
          conn.send_bytes(self._ring.describe())
          reduction.send_handle(conn, self._ring.fd, None)
        for _, message in self._pending:
          conn.send_bytes(message)
      except OSError:
        conn.close()
        return
      self._connections.append(conn)

  def publish(self, element: int, row: int, chunk: int, step: int,
              indices: np.ndarray) -> None:
    """Sends the request for rows [row, row + len(indices)), read in chunks of
    ``chunk`` rows as elements from ``element`` on, to every worker."""
    header = np.array([element, row, chunk, step, len(indices)], np.int64)
    message = np.concatenate([header, indices.astype(np.int64)]).astype('<i8').tobytes()
    with self._lock:
      self._pending.append((row + len(indices), message))
      for conn in list(self._connections):
        try:
          conn.send_bytes(message)
        except OSError:  # that worker died; grain reports it to the reader
          self._connections.remove(conn)

  def taken(self, count: int) -> None:
    """The parent has every row before ``count``: no worker needs those requests."""
    with self._lock:
      while self._pending and self._pending[0][0] <= count:
        self._pending.popleft()

  def close(self) -> None:
    with self._lock:
      if self._closed:
        return
      self._closed = True
      self._pending.clear()
      for conn in self._connections:
        conn.close()  # a worker waiting for a request sees the end and exits
      self._connections = []
    try:  # wake the accepting thread
      connection.Client(self.address, 'AF_UNIX').close()
    except OSError:
      pass
    self._listener.close()
    self._thread.join(timeout=5)
    if not self.address.startswith('\0'):
      try:
        os.rmdir(os.path.dirname(self.address))
      except OSError:
        pass


class _Closed(ConnectionError):
  """The parent closed the request channel (never seen by users: raised in workers
  that are being stopped)."""


class _Requests:
  """A worker's end: the (step, index) of each row it reads, in order."""

  def __init__(self, address: str, authkey: bytes):
    self._conn = connection.Client(address, 'AF_UNIX', authkey=authkey)
    # (first element, end element, first row, chunk size, step, indices)
    self._requests = collections.deque()
    self.ring = None
    ring = np.frombuffer(self._recv(), '<i8')
    if ring.size:
      self.ring = _ImageRing(int(ring[0]), ring[1:],
                             fd=reduction.recv_handle(self._conn))

  def _recv(self) -> bytes:
    try:
      return self._conn.recv_bytes()
    except (EOFError, OSError) as e:
      # The parent closed the pipeline: the error ends this worker's stream, which
      # lets grain stop it (a worker idle in recv would hold grain's close forever).
      raise _Closed('the input pipeline was closed') from e

  def _receive_request(self) -> None:
    values = np.frombuffer(self._recv(), '<i8')
    element, row, chunk, step, count = (int(v) for v in values[:_HEADER])
    end = element + _num_chunks(count, chunk)
    self._requests.append((element, end, row, chunk, step, values[_HEADER:]))

  def lookup(self, element: int) -> tuple[int, int, np.ndarray]:
    """(step, first row, indices) of the rows of ``element``."""
    while True:
      while self._requests and self._requests[0][1] <= element:
        self._requests.popleft()
      if self._requests:
        first, _, row, chunk, step, indices = self._requests[0]
        if element < first:
          raise RuntimeError('input pipeline: an element was skipped')
        offset = (element - first) * chunk
        return step, row + offset, indices[offset:offset + chunk]
      self._receive_request()

  def put_image(self, row: int, image: np.ndarray) -> None:
    """Writes ``image`` to the ring once its slot is free (see _ImageRing)."""
    ring = self.ring
    while int(ring.taken[0]) <= row - ring.slots:
      if self._conn.poll(_SLOT_POLL_S):  # a request, or the end of the pipeline
        self._receive_request()
    ring.images[row % ring.slots] = image


_WORKER_REQUESTS: dict[str, _Requests] = {}  # per worker process, by channel


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class _ReadElement:
  """grain's map in a worker: element k -> (k, images, labels) of the rows of chunk k;
  images is None when they went to the ring."""
  source: object
  address: str
  authkey: bytes

  def __repr__(self):  # grain may print its pipeline: no key, no file list
    return f'ReadElement({type(self.source).__name__})'

  def __call__(self, element: int):
    requests = _WORKER_REQUESTS.get(self.address)
    if requests is None:
      requests = _WORKER_REQUESTS[self.address] = _Requests(self.address, self.authkey)
    element = int(element)
    step, first, indices = requests.lookup(element)
    pickled = None if requests.ring is not None else []  # else: through shared memory
    labels = np.empty((len(indices),), np.int32)
    for i, index in enumerate(indices):
      image, labels[i] = self.source.read_one(int(index), step)
      if pickled is None:
        requests.put_image(first + i, image)
      else:
        pickled.append(image)
    return element, (None if pickled is None else np.stack(pickled)), labels


@dataclasses.dataclass(frozen=True)
class _ExitWithParent:
  """grain's worker_init_fn: the worker exits when its parent process is gone, and
  leaves Ctrl-C to its parent (which checkpoints and stops the workers; a terminal
  sends SIGINT to every process of the job)."""
  parent: int

  def __call__(self, worker_index: int, num_workers: int) -> None:
    del worker_index, num_workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
      while os.getppid() == self.parent:
        time.sleep(_PARENT_POLL_S)
      os._exit(1)  # pylint: disable=protected-access

    threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def _prepare_grain() -> None:
  """No debug statistics or dataset graph in grain's logs (they would print reprs).
  grain reads absl flags: outside an absl app (tests, notebooks) they take their
  defaults."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  grain.config.update('py_debug_mode', False)
  grain.config.update('py_dataset_visualization_output_dir', None)


def _shut(state: dict) -> None:
  channel, iterator = state.pop('channel', None), state.pop('iterator', None)
  ring = state.pop('ring', None)
  if channel is not None:
    channel.close()
  if iterator is not None:
    try:
      iterator.close()
    except Exception:  # pylint: disable=broad-except  # a worker that never started
      pass
  if ring is not None:
    ring.close()


# ---------------------------------------------------------------------- the source
class ParallelSource:
  """``source.get(indices, step)``, computed by ``num_workers`` worker processes."""

  def __init__(self, source, num_workers: int, buffer_per_worker: int = BUFFER_PER_WORKER,
               rows_per_element: int = ROWS_PER_ELEMENT):
    if not reads_on_disk(source):
      raise TypeError(f'{type(source).__name__} has no read_one: not an on-disk source')
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) \
        or num_workers < 0:
      raise base.DataError(
          f'config.data.num_workers={num_workers!r}: a ParallelSource needs >= 0 '
          'worker processes (0: read in the calling thread)')
    if buffer_per_worker < 1 or rows_per_element < 1:
      raise ValueError(f'buffer_per_worker={buffer_per_worker}, rows_per_element='
                       f'{rows_per_element}: each must be >= 1')
    self.source = source
    self.num_workers = int(num_workers)
    self._buffer = int(buffer_per_worker)
    self._max_chunk = int(rows_per_element)
    self._lock = threading.Lock()
    self._state = {}  # channel, iterator: the running workers
    self._next_element = self._next_row = 0
    self._finalizer = weakref.finalize(self, _shut, self._state)

  def __repr__(self):
    return f'ParallelSource({type(self.source).__name__}, num_workers={self.num_workers})'

  @property
  def num_examples(self) -> int:
    return self.source.num_examples

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.source.image_shape)

  @property
  def running(self) -> bool:
    return 'iterator' in self._state

  def record_ids(self, count: int | None = None):
    """The source's record ids (data/record_split.py): read in this process."""
    return record_split.source_ids(self.source, count)

  def fingerprint(self) -> fingerprint_lib.Fingerprint:
    """The source's (data/fingerprint.py), computed in this process."""
    return fingerprint_lib.of(self.source)

  def _start(self) -> None:
    _prepare_grain()
    ring = None
    if _ImageRing.available():
      # Room for every worker's buffered chunks and the one it is reading, and one
      # more chunk (at least one chunk is needed, see _ImageRing).
      slots = self._max_chunk * (self.num_workers * (self._buffer + 1) + 1)
      ring = _ImageRing(slots, self.image_shape)
    channel = _RequestChannel(ring)
    try:
      elements = (grain.MapDataset.range(_NUM_SLOTS)
                  .map(_ReadElement(self.source, channel.address, channel.authkey))
                  .to_iter_dataset(grain.ReadOptions(num_threads=0)))
      # Without the ring (not Linux), images come back pickled through the worker's
      # pipe, not in a shared-memory segment per image (grain's way, under /dev/shm).
      elements = grain.experimental.WithOptionsIterDataset(
          elements, grain.experimental.DatasetOptions(min_shm_size=_NO_SHARED_MEMORY))
      dataset = elements.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self.num_workers,
                                       per_worker_buffer_size=self._buffer),
          worker_init_fn=_ExitWithParent(os.getpid()))
      iterator = iter(dataset)
    except BaseException:
      channel.close()
      if ring is not None:
        ring.close()
      raise
    self._state.update(channel=channel, iterator=iterator, ring=ring)
    self._next_element = self._next_row = 0

  def get(self, indices: np.ndarray, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices).reshape(-1)
    if self.num_workers == 0 or not len(indices):
      return self.source.get(indices, step)
    if indices.min() < 0 or indices.max() >= self.num_examples:
      raise IndexError(f'indices outside [0, {self.num_examples})')
    images = np.empty((len(indices),) + self.image_shape, np.uint8)
    labels = np.empty((len(indices),), np.int32)
    with self._lock:
      if not self.running:
        self._start()
      first, first_element = self._next_row, self._next_element
      # At least two chunks per worker where the request allows (the load balance).
      chunk = max(1, min(self._max_chunk, len(indices) // (2 * self.num_workers)))
      self._state['channel'].publish(first_element, first, chunk, int(step), indices)
      iterator, ring = self._state['iterator'], self._state['ring']
      try:
        for expected, start in enumerate(range(0, len(indices), chunk), first_element):
          element, chunk_images, chunk_labels = next(iterator)
          if element != expected:
            raise RuntimeError(f'input pipeline out of order: element {element}, '
                               f'expected {expected}')
          stop = min(start + chunk, len(indices))
          labels[start:stop] = chunk_labels
          if chunk_images is None:  # in the ring: copy them out, then free the slots
            for row in range(start, stop):
              images[row] = ring.images[(first + row) % ring.slots]
            ring.taken[0] = first + stop
          else:
            images[start:stop] = chunk_images
      except BaseException:
        _shut(self._state)  # a later get starts fresh workers
        raise
      self._next_row = first + len(indices)
      self._next_element = first_element + _num_chunks(len(indices), chunk)
      self._state['channel'].taken(self._next_row)
    return images, labels

  def read_one(self, index: int, step: int = 0):
    return self.source.read_one(index, step)

  def close(self) -> None:
    """Stops the workers (idempotent); a later ``get`` starts new ones."""
    with self._lock:
      _shut(self._state)


def parallel(source, num_workers: int):
  """``source`` read by ``num_workers`` worker processes when it decodes on reads (an
  on-disk source) and ``num_workers > 0``; otherwise ``source`` itself."""
  if num_workers and reads_on_disk(source) and not isinstance(source, ParallelSource):
    return ParallelSource(source, num_workers)
  return source


def close(*sources) -> None:
  """Stops the workers of every ParallelSource among ``sources`` or under them (a
  source that wraps another holds it as ``.source``: subsets, truncations)."""
  for source in sources:
    while source is not None:
      if isinstance(source, ParallelSource):
        source.close()
        break
      source = getattr(source, 'source', None)
