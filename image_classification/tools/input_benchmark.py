"""How fast the input pipeline alone decodes and crops training images.

  python launch.py --config=configs/x.py --workdir=DIR --benchmark_input [--benchmark_workers=1,2]
  python -m image_classification.tools.input_benchmark --config=configs/x.py --workdir=DIR [...]

``run_input_benchmark(config, workdir, workers_list)`` reads the training split of
``config.data`` (an image folder or tfds ImageNet, left on disk) and, on the same
images with the same crops, times

  * the input pipeline (input/input_pipeline.py) with each worker count of
    ``workers_list`` (0: the loading thread itself), and
  * a plain single-process PIL loop: open, decode, random resized crop, bicubic
    resize, flip, in that order, written without the pipeline's code.

Each measurement reads ``num_images`` examples (a fixed public draw, not the
training's batches) as ``get`` calls of ``batch_size`` rows, as a host reads its share
of a step; the crops are training's (an Inception-style random resized crop to
``config.data.image_size``) plus a horizontal flip, drawn from (seed, step, record)
alone. The figures are medians over ``repetitions``: images per second (wall time)
and CPU seconds per image (this process and its workers, from /proc: on a shared
machine it moves much less than wall time, and it says how many cores a rate needs).
The workers start before the timing (their start-up is reported apart). The
pipeline's output is compared with the PIL loop's, so both did the same work.

It writes WORKDIR/input_benchmark.json:
{"rows": [{"workers": 1, "images_per_sec": ...}, ...], "pil_loop_images_per_sec": ...,
 ...} with the load average before and after (timings on a shared machine are noisy).

Privacy: the examples read are private training data, but nothing of them is
written: only rates, counts and the machine's description. The indices come from a
fixed public seed, not from the run's secret batch selection.
"""
import json
import os
import platform
import statistics
import time
from typing import Sequence

import ml_collections
import numpy as np

from image_classification.data import base
from image_classification.data import datasets
from image_classification.input import input_pipeline
from image_classification.data.readers import local_files
from image_classification.input import on_disk
from image_classification.data.readers import tfds_source
from image_classification.tools import command_line

RESULT_FILE = 'input_benchmark.json'
_INDEX_SEED = 0xBE7C  # which examples the benchmark reads: public


def parse_workers(values: Sequence[str]) -> list[int]:
  """--benchmark_workers as counts; a bad entry raises base.DataError naming it."""
  text = ','.join(str(v) for v in values or [])
  hint = ('give a comma-separated list of worker counts >= 0 (0: the loading thread '
          'alone), e.g. 1,2')
  if not values or any(str(v).strip() == '' for v in values):
    raise base.DataError(f'--benchmark_workers={text!r}: {hint}')
  counts = []
  for v in values:
    try:
      n = int(str(v).strip())
    except ValueError:
      raise base.DataError(
          f'--benchmark_workers={text!r}: {v!r} is not an integer; {hint}') from None
    if n < 0:
      raise base.DataError(f'--benchmark_workers={text!r}: {n} is negative; {hint}')
    if n in counts:
      raise base.DataError(f'--benchmark_workers={text!r}: {n} is given twice; {hint}')
    counts.append(n)
  return counts


def training_source(data_config: ml_collections.ConfigDict, seed: int = 0):
  """The training split of ``data_config`` on disk, read with training's random
  resized crop plus a flip (what the benchmark times)."""
  name = data_config.name
  path = data_config.path or ''
  spec = datasets.DATASETS.get(name)
  folder = name == 'image_folder'
  if not (folder or (spec is not None and spec.random_access and not path)):
    on_disk_names = ['image_folder'] + list(datasets.names(lambda s: s.random_access))
    raise base.DataError(
        f'config.data.name={name!r}: the input benchmark measures datasets read from '
        f'disk ({", ".join(on_disk_names)}); the others are held in memory and read '
        'by indexing arrays')
  image_size = data_config.image_size or 0
  if image_size <= 0:
    raise base.DataError(
        f'config.data.image_size={image_size}: the input benchmark crops and resizes '
        'to a square; set it (e.g. --config.data.image_size=224)')
  if folder:
    source = local_files.load_image_folder_on_disk(path, image_size).train
  else:
    source = tfds_source.load_random_access(
        name, True, data_config.tfds_data_dir or '', image_size=image_size)
  return source.with_crop(on_disk.HostCrop(image_size, random_resized_crop=True,
                                           random_flip=True, seed=seed))


def _pil_decoder(source):
  """index -> (decoded RGB PIL image, the record's stable id, which keys its crop), the
  plain way (no pipeline code)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(source, on_disk.ImageFolderSource):
    def decode(index):
      with Image.open(source.file(index)) as picture:
        return picture.convert('RGB'), source.record_id(index)
  else:
    def decode(index):
      record = source.records[index]
      return (Image.fromarray(np.asarray(record['image'])).convert('RGB'),
              tfds_source.record_id(record))
  return decode


def pil_loop(source, requests) -> np.ndarray:
  """The plain single-process loop: decode, random resized crop, resize, flip."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  decode = _pil_decoder(source)
  crop = source.crop
  out = []
  for step, indices in requests:
    for index in indices:
      picture, record = decode(int(index))
      rng = np.random.default_rng([crop.seed, on_disk.CROP_STREAM, step,
                                   on_disk.record_number(record)])
      top, left, height, width = on_disk.random_resized_crop_box(
          picture.height, picture.width, rng)
      picture = picture.resize((crop.image_size, crop.image_size),
                               Image.Resampling.BICUBIC,
                               box=(left, top, left + width, top + height))
      if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      out.append(np.asarray(picture, np.uint8))
  return np.stack(out)


def _cpu_seconds() -> tuple[float, float] | None:
  """CPU time (user + system) of this process and of its live children (the
  workers), in seconds; None where /proc is missing. Unlike wall time it hardly
  depends on what else the machine runs, so it gives the cores a rate needs."""
  try:
    children = 0.0
    ticks = os.sysconf('SC_CLK_TCK')
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir('/proc')):
      try:
        with open(f'/proc/{pid}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == me:  # fields[1]: ppid; [11], [12]: utime, stime
        children += (int(fields[11]) + int(fields[12])) / ticks
    return time.process_time(), children
  except (OSError, ValueError):
    return None


def _load() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def run_input_benchmark(config: ml_collections.ConfigDict, workdir: str,
                        workers_list: Sequence[int], num_images: int = 512,
                        batch_size: int = 128, repetitions: int = 3,
                        verbose: bool = True) -> dict:
  """Times the pipeline for each worker count and the plain PIL loop; writes and
  returns WORKDIR/input_benchmark.json's content."""
  workers_list = [input_pipeline.resolve_num_workers(int(w)) if int(w) == -1 else int(w)
                  for w in workers_list]
  if not workers_list or min(workers_list) < 0:
    raise base.DataError(f'workers {workers_list}: give counts >= 0')
  if num_images < 1 or batch_size < 1 or repetitions < 1:
    raise base.DataError(f'num_images={num_images}, batch_size={batch_size}, '
                         f'repetitions={repetitions}: each must be >= 1')
  source = training_source(config.data, config.seed)
  n = min(num_images, source.num_examples)
  indices = np.random.default_rng(_INDEX_SEED).choice(source.num_examples, n,
                                                      replace=False)
  requests = [(step, indices[start:start + batch_size]) for step, start in
              enumerate(range(0, n, batch_size), start=1)]
  load_before = _load()

  def say(text):
    if verbose:
      print(text, flush=True)

  pipelines, startup = {}, {}
  try:
    for workers in workers_list:  # started (and idle) before any timing
      began = time.perf_counter()
      pipelines[workers] = input_pipeline.ParallelSource(source, workers)
      pipelines[workers].get(indices[:max(1, workers)], step=0)
      startup[workers] = time.perf_counter() - began
    expected = pil_loop(source, requests[:1])
    rates = {key: [] for key in ['pil'] + workers_list}
    cpu = {key: [] for key in ['pil'] + workers_list}  # (this process, workers) / image

    def timed(key, work):
      cpu_before, began = _cpu_seconds(), time.perf_counter()
      work()
      rates[key].append(n / (time.perf_counter() - began))
      cpu_after = _cpu_seconds()
      if cpu_before is not None and cpu_after is not None:
        cpu[key].append([(a - b) / n for a, b in zip(cpu_after, cpu_before)])

    for rep in range(repetitions):
      timed('pil', lambda: pil_loop(source, requests))
      for workers, pipeline in pipelines.items():
        def read_all(workers=workers, pipeline=pipeline, check=rep == 0):
          for number, (step, batch) in enumerate(requests):
            images, _ = pipeline.get(batch, step=step)
            if check and number == 0 and not np.array_equal(images, expected):
              raise RuntimeError(f'the pipeline with {workers} workers decoded other '
                                 'images than the PIL loop')
        timed(workers, read_all)
      say(f'repetition {rep + 1}/{repetitions}: PIL loop {rates["pil"][-1]:.1f} img/s, '
          + ', '.join(f'{w} workers {rates[w][-1]:.1f}' for w in workers_list))
  finally:
    for pipeline in pipelines.values():
      pipeline.close()
  def cpu_per_image(key, part=None):
    """Median CPU seconds per image: of this process (part 0), of the workers (part
    1), or of both."""
    if not cpu[key]:
      return None
    return statistics.median(sum(c) if part is None else c[part] for c in cpu[key])

  result = {
      'rows': [{'workers': w, 'images_per_sec': statistics.median(rates[w]),
                'all_images_per_sec': rates[w], 'startup_sec': startup[w],
                'cpu_sec_per_image': cpu_per_image(w),
                'parent_cpu_sec_per_image': cpu_per_image(w, 0),
                'workers_cpu_sec_per_image': cpu_per_image(w, 1)}
               for w in workers_list],
      'pil_loop_images_per_sec': statistics.median(rates['pil']),
      'pil_loop_all_images_per_sec': rates['pil'],
      'pil_loop_cpu_sec_per_image': cpu_per_image('pil'),
      'dataset': config.data.name, 'image_size': int(source.crop.image_size),
      'num_images': int(n), 'batch_size': int(batch_size),
      'repetitions': int(repetitions),
      'work': 'decode, random resized crop, bicubic resize, horizontal flip',
      'cpu_count': os.cpu_count(), 'default_num_workers':
          input_pipeline.default_num_workers(),
      'machine': platform.machine(), 'processor': platform.processor(),
      'load_average_before': load_before, 'load_average_after': _load(),
      'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
  }
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULT_FILE)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  base_rate = result['pil_loop_images_per_sec']

  def cpu_text(value, parent=None):
    if value is None:
      return ''
    return (f', {value * 1e3:.2f} ms CPU per image'
            + (f' ({parent * 1e3:.2f} in this process)' if parent is not None else ''))

  say(f'PIL loop: {base_rate:.1f} images/s'
      + cpu_text(result['pil_loop_cpu_sec_per_image']))
  for row in result['rows']:
    say(f'{row["workers"]} workers: {row["images_per_sec"]:.1f} images/s '
        f'({row["images_per_sec"] / base_rate:.2f}x the PIL loop'
        + cpu_text(row['cpu_sec_per_image'], row['parent_cpu_sec_per_image'])
        + f'; started in {row["startup_sec"]:.1f} s)')
  say(f'load average before {load_before}, after {result["load_average_after"]}; '
      f'wrote {path}')
  return result


def run_from_flags(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The command: --benchmark_workers as counts, then ``run_input_benchmark``."""
  return run_input_benchmark(config, workdir,
                             parse_workers(command_line.WORKERS.value))


if __name__ == '__main__':
  command_line.tool_main('input_benchmark', run_from_flags)
