"""The one base of every error a user can cause (a config field, a file, a flag).

launch.py catches ``UserError`` in one place and prints it as one ``error:`` line with
exit status 2; anything else is a bug and keeps its traceback. Each package raises its
own subclass next to the check that fails (config.ConfigError, data.base.DataError,
plan.PlanError, ...), and its message names the field or file and what would fix it.
"""


class UserError(ValueError):
  """Something the user can fix: the message says what and how."""
