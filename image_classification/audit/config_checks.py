"""The checks of config.audit, before anything is loaded: ``validate_config(config)``
raises ConfigError naming the field and the fix (docs/audit.md). What needs the model
or the data (the canaries fit the training set and the model's parameters) is checked
by hook.for_config and the gradient hook in the dry run.

Imports nothing of the audit package, so that config.validate (a lower layer:
tests/test_architecture.py puts this module beside it) calls it with the other
sections' checks, in one order.
"""
import ml_collections

from image_classification import errors

# config.audit.mode and, for mode 'gradient', its analysis and score.
MODES = ('input', 'gradient')
ANALYSES = ('fdp', 'fdp_gaussian', 'one_run')
SCORES = ('llr', 'sum', 'last_iterate')

_fail = errors.config_fail


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks config.audit when the audit is enabled; raises ConfigError."""
  a = config.audit
  if not a.enabled:
    return
  if a.num_canaries < 2:
    _fail('audit.num_canaries', a.num_canaries, 'must be >= 2')
  if not 0 < a.confidence < 1:
    _fail('audit.confidence', a.confidence, 'must be in (0, 1)')
  if a.mode not in MODES:
    _fail('audit.mode', a.mode, f'choose one of {MODES}')
  if a.mode != 'gradient':
    return
  if a.analysis not in ANALYSES:
    _fail('audit.analysis', a.analysis, f'choose one of {ANALYSES}')
  if a.score not in SCORES:
    _fail('audit.score', a.score, f'choose one of {SCORES}')
  if not a.num_guesses >= 0:
    _fail('audit.num_guesses', a.num_guesses,
          'must be >= 0 (0: chosen before training from public numbers)')
  if config.privacy.sampling != 'poisson':
    _fail('privacy.sampling', config.privacy.sampling,
          "audit.mode='gradient' needs sampling='poisson': the audit tests add/remove "
          'of one canary, which fixed-size (replace-one) batches are not accounted for')
