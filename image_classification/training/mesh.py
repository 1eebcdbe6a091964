"""The device mesh: one 'data' axis over every device; parameters replicated, the
batch split along its first dimension."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(devices=None) -> str:
  """E.g. 'cpu x2' or 'NVIDIA H100 x1'."""
  devices = jax.devices() if devices is None else devices
  kind = devices[0].device_kind if devices[0].platform != 'cpu' else 'cpu'
  return f'{kind} x{len(devices)}'
