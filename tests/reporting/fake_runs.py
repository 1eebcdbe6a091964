"""Writes run folders shaped like the trainer's, for the reporting tests."""
import json
import os
from typing import Any, Optional


def write_run(workdir: str, *, accuracy: float = 0.8, epsilon: float = 4.0,
              steps: int = 30, non_private: bool = False,
              model: str = 'cnn', dataset: str = 'digits',
              complete: bool = True,
              config: Optional[dict[str, Any]] = None) -> str:
  """Writes config.json, metrics.jsonl, privacy.json and summary.json."""
  os.makedirs(workdir, exist_ok=True)
  config = config or {'model': {'name': model}, 'data': {'name': dataset},
                      'privacy': {'delta': 1e-5, 'target_epsilon': epsilon,
                                  'allow_non_private': non_private}}
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step in range(10, steps + 1, 10):
      row = {'step': step, 'epsilon': epsilon * step / steps,
             'train_loss': 2.0 / step, 'images_per_sec': 100.0}
      if step % 20 == 0 or step == steps:
        row['test_accuracy'] = accuracy * step / steps
      f.write(json.dumps(row) + '\n')
  privacy = {'noise_multiplier': 0.0 if non_private else 1.1,
             'clipping_norm': 1.0, 'sampling': 'poisson',
             'sampling_rate': 0.01, 'expected_batch_size': 16, 'steps': steps,
             # The trainer writes an infinite epsilon as null (JSON has no inf).
             'delta': 1e-5, 'epsilon': None if non_private else epsilon,
             'accountant': 'rdp', 'neighboring_relation': 'add_or_remove_one',
             'dataset_size': 1600, 'non_private': non_private}
  with open(os.path.join(workdir, 'privacy.json'), 'w') as f:
    json.dump(privacy, f)
  if complete:
    summary = {'test_accuracy': accuracy,
               'epsilon': None if non_private else epsilon, 'delta': 1e-5,
               'steps': steps, 'noise_multiplier': privacy['noise_multiplier'],
               'wall_time_sec': 12.5, 'non_private': non_private,
               'status': 'complete'}
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
  return workdir
