"""fcn-scratch: Fully Convolutional Networks for semantic segmentation, from scratch.

    import fcn_scratch
    from fcn_scratch import functional as F

    x = fcn_scratch.Tensor(images)                      # (N, 3, H, W) float32
    loss = F.cross_entropy(model(x), labels)            # labels (N, H, W), 255 = ignore
    loss.backward()

Layers, bottom up: kernels (reference / cpu / cuda) -> ops (forward/backward pairs)
-> autograd (Tensor) -> functional -> nn -> models -> data, train.
"""

from fcn_scratch import functional
from fcn_scratch.autograd import Tensor
from fcn_scratch.gradcheck import GradcheckResult, gradcheck

__version__ = "0.1.0"
__all__ = ["Tensor", "functional", "gradcheck", "GradcheckResult", "__version__"]
