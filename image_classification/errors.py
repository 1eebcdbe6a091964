"""The one base of every error a user can cause (a config field, a file, a flag).

launch.py catches ``UserError`` in one place and prints it as one ``error:`` line with
exit status 2; anything else is a bug and keeps its traceback. Each package raises its
own subclass next to the check that fails (ConfigError, data.base.DataError,
plan.PlanError, ...), and its message names the field or file and what would fix it.

``ConfigError`` lives here, not in config.py, because every package checks its own
config section (data/, models/, optimizers.py, plan.py, training/config_checks.py,
audit/config_checks.py, ...) and raises it; config.validate only calls them in order.
"""
from typing import NoReturn


class UserError(ValueError):
  """Something the user can fix: the message says what and how."""


class ConfigError(UserError):
  """A config field is invalid; the message names it and says what would fix it."""


def config_fail(field: str, value, why: str) -> NoReturn:
  """Raises ConfigError 'config.FIELD=VALUE: WHY'."""
  raise ConfigError(f'config.{field}={value!r}: {why}')
