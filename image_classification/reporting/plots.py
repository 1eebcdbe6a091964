"""Matplotlib figures shared by sweeps and reports.

matplotlib is imported lazily, inside each function, and only through its
object-oriented API with the Agg canvas: no pyplot global state, no display, and
no change to the backend of a process (a notebook) that already uses matplotlib.
"""
import math
import os
from typing import Any, Optional, Sequence

# One series of a line plot: (label, xs, ys). Points whose x or y is missing or
# not finite are dropped.
Series = tuple[str, Sequence[Any], Sequence[Any]]

NOT_DP_NOTE = 'computed on private data without noise: not DP'


def _new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0,
                height: float = 4.0):
  """Returns (figure, axes list) drawn on an Agg canvas."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width * ncols, height * nrows))
  FigureCanvasAgg(fig)
  axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
  return fig, axes


def _save(fig, path: str, **margins: float) -> str:
  # Fixed margins: tight_layout would cost as much as drawing the figure.
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.subplots_adjust(**{'left': 0.12, 'right': 0.97, 'bottom': 0.13,
                         'top': 0.9, **margins})
  fig.savefig(path, dpi=100)
  return path


def is_number(value: Any) -> bool:
  """True for finite ints and floats (numpy scalars included), False for bools."""
  if isinstance(value, bool) or value is None:
    return False
  try:
    return math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def _clean(xs: Sequence[Any], ys: Sequence[Any]) -> tuple[list, list]:
  pairs = sorted((float(x), float(y)) for x, y in zip(xs, ys)
                 if is_number(x) and is_number(y))
  return [p[0] for p in pairs], [p[1] for p in pairs]


def _use_log_x(xs: Sequence[float]) -> bool:
  xs = [x for x in xs if x > 0]
  return len(xs) >= 2 and min(xs) > 0 and max(xs) / min(xs) >= 8


def plot_lines(series: Sequence[Series], path: str, *, xlabel: str,
               ylabel: str, title: str = '',
               hlines: Sequence[tuple[str, float]] = (),
               logx: Optional[bool] = None) -> str:
  """Plots lines with markers, one per series, and saves a PNG at ``path``.

  Args:
    series: (label, xs, ys) per line; points are sorted by x.
    path: output file.
    xlabel: x-axis label.
    ylabel: y-axis label.
    title: figure title.
    hlines: (label, y) horizontal dashed reference lines (e.g. non-private runs).
    logx: log-scale x; None chooses it when x spans a factor of 8 or more.

  Returns:
    ``path``.
  """
  fig, (ax,) = _new_figure()
  all_x = []
  for label, xs, ys in series:
    xs, ys = _clean(xs, ys)
    if not xs:
      continue
    all_x.extend(xs)
    ax.plot(xs, ys, marker='o', label=label or None)
  for label, y in hlines:
    if is_number(y):
      ax.axhline(float(y), linestyle='--', color='gray', label=label)
  if not all_x and not hlines:
    ax.text(0.5, 0.5, 'no finished runs yet', ha='center', va='center',
            transform=ax.transAxes, color='gray')
  if logx is None:
    logx = _use_log_x(all_x)
  if logx:
    from matplotlib import ticker  # pylint: disable=g-import-not-at-top
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x:g}'))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(True, alpha=0.3)
  if ax.get_legend_handles_labels()[1]:
    ax.legend(fontsize='small')
  return _save(fig, path)


def plot_bars(labels: Sequence[str], values: Sequence[Any], path: str, *,
              xlabel: str, title: str = '') -> str:
  """Horizontal bars, one per label (a sweep with no numeric field)."""
  pairs = [(str(l), float(v)) for l, v in zip(labels, values) if is_number(v)]
  fig, (ax,) = _new_figure(width=8.0, height=max(2.5, 1.0 + 0.35 * len(pairs)))
  ax.barh(range(len(pairs)), [v for _, v in pairs])
  ax.set_yticks(range(len(pairs)))
  ax.set_yticklabels([l for l, _ in pairs], fontsize='small')
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  if title:
    ax.set_title(title)
  ax.grid(True, axis='x', alpha=0.3)
  longest = max([len(l) for l, _ in pairs] or [0])
  return _save(fig, path, left=min(0.7, 0.05 + 0.0085 * longest), bottom=0.2)


def plot_accuracy_vs_epsilon(runs: Sequence[dict[str, Any]], path: str,
                             title: str = 'Test accuracy vs epsilon') -> str:
  """Scatter of test accuracy against the spent epsilon, one point per run.

  Args:
    runs: dicts with 'label', 'epsilon', 'test_accuracy' (a fraction) and
      optionally 'non_private' and 'group' (runs of one group are joined by a
      line, sorted by epsilon).
    path: output PNG.
    title: figure title.

  Returns:
    ``path``. Non-private runs have no epsilon; they are drawn as dashed
    horizontal lines labelled non-private.
  """
  groups: dict[str, list[tuple[float, float]]] = {}
  hlines = []
  for run in runs:
    acc = run.get('test_accuracy')
    if not is_number(acc):
      continue
    if run.get('non_private'):
      hlines.append((f"{run.get('label', '')} (non-private)", 100 * float(acc)))
      continue
    eps = run.get('epsilon')
    if not is_number(eps):
      continue
    group = str(run.get('group', ''))
    groups.setdefault(group, []).append((float(eps), 100 * float(acc)))
  series = [(g, [p[0] for p in pts], [p[1] for p in pts])
            for g, pts in groups.items()]
  return plot_lines(series, path, xlabel='epsilon (spent)',
                    ylabel='test accuracy (%)', title=title, hlines=hlines)


def plot_run_curves(rows: Sequence[dict[str, Any]], path: str,
                    title: str = '') -> str:
  """Per-run curves over steps: test accuracy, epsilon and train loss.

  Args:
    rows: metrics.jsonl rows, each with 'step' and any of 'test_accuracy'
      (fraction), 'epsilon', 'train_loss'.
    path: output PNG.
    title: figure title (the run's name).

  Returns:
    ``path``. The train loss is labelled as computed on private data without
    noise, i.e. not covered by the DP guarantee.
  """
  panels = [('test_accuracy', 'test accuracy (%)', 100.0),
            ('epsilon', 'epsilon (spent)', 1.0),
            ('train_loss', f'train loss\n({NOT_DP_NOTE})', 1.0)]
  fig, axes = _new_figure(ncols=len(panels), width=4.5, height=3.5)
  for ax, (key, ylabel, scale) in zip(axes, panels):
    xs, ys = _clean([r.get('step') for r in rows],
                    [r.get(key) if is_number(r.get(key)) else None
                     for r in rows])
    if xs:
      ax.plot(xs, [scale * y for y in ys], marker='o' if len(xs) < 30 else None)
    else:
      ax.text(0.5, 0.5, f'no {key} logged', ha='center', va='center',
              transform=ax.transAxes, color='gray')
    ax.set_xlabel('step')
    ax.set_ylabel(ylabel, fontsize='small')
    ax.grid(True, alpha=0.3)
  if title:
    fig.suptitle(title)
  return _save(fig, path, left=0.06, right=0.99, bottom=0.15, top=0.87,
               wspace=0.35)
