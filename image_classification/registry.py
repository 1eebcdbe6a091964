"""Name -> implementation tables that the config's choices are validated against.

A module registers what it defines with ``@TABLE.register('name')`` when it is
imported; config validation lists ``list(TABLE)`` as the choices. A name registered
twice is refused, so a new module cannot silently replace a mechanism.
"""
from typing import Callable, TypeVar

T = TypeVar('T')


class Registry(dict):
  """A dict of registered implementations of one kind (e.g. 'privatizer')."""

  def __init__(self, kind: str):
    super().__init__()
    self.kind = kind

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator: registers the decorated class or function under ``name``."""
    def add(implementation: T) -> T:
      if name in self:
        raise ValueError(f'{self.kind} {name!r} is registered twice')
      self[name] = implementation
      return implementation
    return add
