"""Real-vs-synthetic ratio sweep benchmark (same as `ssl-seg sweep`): ratios x schedules x fractions x methods x seeds.

    python benchmarks/ratio_sweep.py --data phantom:cardiac --profile standard --train-gan --out runs/ratio_sweep
    python benchmarks/ratio_sweep.py ... --synthetic 0.05=syn/f0.05 --shard 0/2   # re-launch skips finished runs
"""

import sys

from ssl_seg.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
