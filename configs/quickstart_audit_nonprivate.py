"""configs/quickstart_audit.py WITHOUT noise: a NON-PRIVATE run (no DP guarantee at
all), the audit's positive control.

  python launch.py --config=configs/quickstart_audit_nonprivate.py --workdir=/tmp/audit_np

Same data, canaries, model, clipping, batch and learning rate as the private config;
the noise is off (privacy.allow_non_private=True, noise_multiplier=0), so every report
of the run says NON-PRIVATE and its epsilon is infinite (null in the JSON files). It
trains 1000 steps instead of 200 and scores the last iterate (no EMA, which would average the memorisation away), so
the model memorises many of the included canaries' wrong labels: the audit's lower
bound comes out well above 1 (1.92, 2.24, 2.07 on seeds 0-2, 96-98 of 100 guesses
right), evidence from this one run that it is not (1, 1e-5)-DP, i.e. that the audit
can see a leak when there is one. See docs/audit.md.
"""
from configs import quickstart_audit


def get_config():
  config = quickstart_audit.get_config()
  config.experiment = 'quickstart_audit_nonprivate'
  config.privacy.allow_non_private = True
  config.privacy.noise_multiplier = 0.0
  config.training.num_steps = 1000
  config.training.ema.decay = 0.0
  return config
