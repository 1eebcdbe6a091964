"""Whether two runs wrote the same run files: what a refactoring must leave unchanged.

  python results/compare_run_files.py WORKDIR_BEFORE WORKDIR_AFTER

Compares metrics.jsonl row by row (less images_per_sec, a timing), privacy.json,
privacy.md, audit.json (when present), summary.json (its keys in order and its values,
less the wall-clock timings) and every file of export/ byte for byte. Exit status 0
when all are identical. Used on seeded runs (privacy.insecure_seeded_noise=True),
whose noise and batches follow config.seed, e.g. for issue 26:

  git worktree add /tmp/before OLD_COMMIT
  (cd /tmp/before && python launch.py --config=configs/quickstart.py --workdir=/tmp/b \
     --config.privacy.insecure_seeded_noise=True)
  python launch.py --config=configs/quickstart.py --workdir=/tmp/a \
     --config.privacy.insecure_seeded_noise=True
  python results/compare_run_files.py /tmp/b /tmp/a
"""
import hashlib
import json
import os
import sys

TIMINGS = {'images_per_sec'}
SUMMARY_TIMINGS = {'wall_time_sec', 'wall_time_sec_last_segment', 'startup_sec'}


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in f if line.strip()]


def _json(name):
  def read(workdir):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)
  return read


def _text(name):
  def read(workdir):
    with open(os.path.join(workdir, name)) as f:
      return f.read()
  return read


def _summary(workdir):
  summary = _json('summary.json')(workdir)
  return [(k, v) for k, v in summary.items() if k not in SUMMARY_TIMINGS]


def _export(workdir):
  folder = os.path.join(workdir, 'export')
  digests = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      digests[name] = hashlib.sha256(f.read()).hexdigest()
  return digests


CHECKS = (('metrics.jsonl rows (less images_per_sec)', _metrics),
          ('privacy.json', _json('privacy.json')), ('privacy.md', _text('privacy.md')),
          ('audit.json', _json('audit.json')),
          ('summary.json (less wall-clock timings)', _summary),
          ('export/ bytes', _export))


def main(before: str, after: str) -> int:
  same = True
  for name, read in CHECKS:
    equal = read(before) == read(after)
    same &= equal
    print(f'{name}: {"identical" if equal else "DIFFERENT"}')
  return 0 if same else 1


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  sys.exit(main(sys.argv[1], sys.argv[2]))
