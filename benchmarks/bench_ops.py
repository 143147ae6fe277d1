"""Time forward+backward of the ops against a NumPy baseline and PyTorch on FCN-like shapes.

The same benchmark as ``fcn-scratch bench`` (see fcn_scratch/commands/bench.py), e.g.

    python benchmarks/bench_ops.py --threads 2 --repeat 7
"""

import sys

from fcn_scratch.commands import bench

if __name__ == "__main__":
    sys.exit(bench.main(sys.argv[1:]))
