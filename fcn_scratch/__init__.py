"""fcn-scratch: Fully Convolutional Networks for semantic segmentation, from scratch.

The paper's networks built on NumPy (CPU, with Numba kernels) and CuPy (GPU, with CUDA C
kernels), every index of im2col, max pooling, unpooling and transposed convolution in
plain sight and checked against reference loops and PyTorch. A training step reads as in
PyTorch: wrap images in a ``Tensor``, call a model, take ``functional.cross_entropy`` of its
logits against labels (255 = ignore) and call ``backward()``; inside ``no_grad()`` (for
evaluation) the ops keep no graph. ``load_model(path)`` gives back the model of any
checkpoint (trained, or converted from PyTorch weights).

Layers, bottom up: kernels (reference / cpu / cuda) -> ops (forward/backward pairs)
-> autograd (Tensor) -> functional -> nn -> models -> data, train.
"""

from fcn_scratch import functional
from fcn_scratch.autograd import Tensor, is_grad_enabled, no_grad
from fcn_scratch.gradcheck import GradcheckResult, gradcheck

__version__ = "0.1.0"


def load_model(path: str):
    """The model in a checkpoint of ours (trained, or made by ``fcn-scratch convert``), with
    its weights, in eval mode, on the CPU. Raises CheckpointError for an unusable file."""
    from fcn_scratch.train.checkpoint import load_checkpoint

    return load_checkpoint(path).build_model()


__all__ = [
    "GradcheckResult",
    "Tensor",
    "__version__",
    "functional",
    "gradcheck",
    "is_grad_enabled",
    "load_model",
    "no_grad",
]
