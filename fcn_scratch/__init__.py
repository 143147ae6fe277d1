"""fcn-scratch: Fully Convolutional Networks for semantic segmentation, from scratch.

    import fcn_scratch
    import os

# Numba's threading layer for the CPU kernels: see fcn_scratch/kernels/cpu.py for why.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from fcn_scratch import functional  # noqa: E402 as F

    x = fcn_scratch.Tensor(images)                      # (N, 3, H, W) float32
    loss = F.cross_entropy(model(x), labels)            # labels (N, H, W), 255 = ignore
    loss.backward()

Layers, bottom up: kernels (reference / cpu / cuda) -> ops (forward/backward pairs)
-> autograd (Tensor) -> functional -> nn -> models -> data, train.
"""

import os

# Numba's threading layer for the CPU kernels: see fcn_scratch/kernels/cpu.py for why.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from fcn_scratch import functional  # noqa: E402
from fcn_scratch.autograd import Tensor  # noqa: E402
from fcn_scratch.gradcheck import GradcheckResult, gradcheck  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Tensor", "functional", "gradcheck", "GradcheckResult", "__version__"]
