"""--report: aggregate run or sweep folders into one report.

  python launch.py --report=DIR1,DIR2 --workdir=OUT

Nothing of JAX is imported here (reporting reads run files only).
"""
import sys

from absl import flags

from image_classification.reporting import report

REPORT = flags.DEFINE_list(
    'report', None, 'Comma-separated run or sweep folders to aggregate into '
    '--workdir/report.md and plots.')

MISSING_WORKDIR = ('--workdir is required: the folder --report writes report.md and '
                   'its plots to, e.g. --workdir=/tmp/report')


def run(workdir: str) -> None:
  """Writes WORKDIR/report.md and its plots; problems are warnings on stderr."""
  result = report.make_report(REPORT.value, workdir)
  print(f"wrote {result['report']}")
  for problem in result.get('problems', []):
    print(f'warning: {problem}', file=sys.stderr)
