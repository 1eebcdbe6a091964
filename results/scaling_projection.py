"""Projected wall time of a config on 1, 8 and 64 GPUs (results/scaling.md).

  python results/scaling_projection.py [--config=configs/imagenet_nf_resnet_50_eps8.py]
      [--views_per_sec_per_gpu=2800] [--gpus=1,8,64] [--gpus_per_host=8]

Everything about the run comes from the config, through the same check a dry run
makes (no data is read: ImageNet's size comes from the catalogue): the steps, the
expected batch size, augmult, the parameter count, and the padded batch the trainer
builds for a given number of devices (Poisson batches are padded to a static size, a
multiple of devices x micro-batch; padded slots are computed and, today, decoded).
The rest are stated assumptions, not measurements of this script:

- per-GPU rate of the DP step in augmented views per second (default: the H200 figure
  for NF-ResNet-50, 2,800 views/s; results/scaling.md says where it comes from);
- all-reduce of the float32 clipped sum (parameter-sized), once per step, as a ring:
  2 (n - 1) / n x bytes / bus bandwidth, with typical NCCL bus bandwidths (NVLink
  inside a host; InfiniBand NDR 400 Gb/s per GPU, or one 100 Gb/s link per host,
  between hosts);
- the noise: no communication (every device draws the same noise from the shared key
  after the sum), only its generation, as is the optimizer's update;
- input: decoded and cropped images per second per host = padded slots per second on
  that host's GPUs.
"""
import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from image_classification.audit import hook  # pylint: disable=g-import-not-at-top,wrong-import-position

# Bus bandwidths (GB/s per GPU, NCCL's "busbw" for large all-reduces): assumptions.
NVLINK_GBPS = 350.0          # 8 x H100/H200 SXM (NVLink 4, 450 GB/s a direction)
INFINIBAND_NDR_GBPS = 40.0   # 8 x 400 Gb/s NICs per host, one per GPU
SLOW_NETWORK_GBPS = 11.0     # one 100 Gb/s (12.5 GB/s) link per host: the ring's bottleneck


def _config(path: str):
  spec = importlib.util.spec_from_file_location('projected_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def all_reduce_seconds(num_bytes: float, gpus: int, gpus_per_host: int,
                       slow_network: bool = False) -> float:
  """Ring all-reduce time of ``num_bytes`` over ``gpus`` (an estimate)."""
  if gpus == 1:
    return 0.0
  hosts = -(-gpus // gpus_per_host)
  busbw = NVLINK_GBPS if hosts == 1 else (SLOW_NETWORK_GBPS if slow_network
                                          else INFINIBAND_NDR_GBPS)
  return 2 * (gpus - 1) / gpus * num_bytes / (busbw * 1e9)


def project(config_path: str, rate: float, gpu_counts, gpus_per_host: int):
  config = _config(config_path)
  experiment = hook.check(config)
  plan = experiment.plan
  selection = plan.batch_selection(0)
  augmult = config.data.augmult
  micro = max(config.training.micro_batch_size, 1)
  num_bytes = 4 * experiment.num_params  # float32 clipped sum
  print(f'{config_path}: {plan.steps} steps, expected batch {plan.expected_batch_size} '
        f'x augmult {augmult}, micro-batch {micro} per device, '
        f'{experiment.num_params:,} parameters ({num_bytes / 1e6:.1f} MB float32), '
        f'N={experiment.dataset_size:,}; {rate:,.0f} views/s per GPU\n')
  print('| GPUs (hosts) | padded batch | DP step (s) | all-reduce NVLink / IB NDR / '
        '100 Gb/s (ms) | input per host (img/s) | wall time (IB NDR) |')
  print('|---|---|---|---|---|---|')
  for gpus in gpu_counts:
    capacity = selection.capacity(gpus * micro)
    step = capacity * augmult / (gpus * rate)
    fast = all_reduce_seconds(num_bytes, gpus, gpus_per_host)
    slow = all_reduce_seconds(num_bytes, gpus, gpus_per_host, slow_network=True)
    hosts = -(-gpus // gpus_per_host)
    per_host = capacity / step / hosts
    total = plan.steps * (step + fast)
    links = ('-' if gpus == 1 else f'{fast * 1e3:.1f}' if hosts == 1
             else f'- / {fast * 1e3:.1f} / {slow * 1e3:.1f}')
    print(f'| {gpus} ({hosts}) | {capacity:,} | {step:.3f} | {links} | {per_host:,.0f} | '
          f'{total / 3600:,.1f} h = {total / 86400:.2f} days |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/imagenet_nf_resnet_50_eps8.py')
  parser.add_argument('--views_per_sec_per_gpu', type=float, default=2800.0)
  parser.add_argument('--gpus', default='1,8,64')
  parser.add_argument('--gpus_per_host', type=int, default=8)
  args = parser.parse_args()
  project(args.config, args.views_per_sec_per_gpu,
          [int(g) for g in args.gpus.split(',')], args.gpus_per_host)


if __name__ == '__main__':
  main()
