"""Low-label ablation benchmark (same as `ssl-seg ablate`): methods x label fractions x seeds x backbones.

    python benchmarks/low_label.py --data phantom:cardiac --profile standard --out runs/low_label_cardiac
    python benchmarks/low_label.py ... --shard 0/2   # and --shard 1/2 elsewhere; re-launch skips finished runs
"""

import sys

from ssl_seg.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
