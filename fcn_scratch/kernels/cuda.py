"""CUDA kernels: the CUDA C in ``im2col.cu`` and ``pool.cu``, launched through CuPy.

Same functions, signatures and conventions as ``fcn_scratch.kernels.reference`` (read its
docstring first); arrays in and out are ``cupy.ndarray`` on one device. The sources are
compiled once, on first use, into one cached ``cupy.RawModule`` (CuPy also caches the
compiled binary on disk, so later processes skip the compiler).

Each function asks ``launch`` for its plan (kernel name, grid, block, outputs, scalar
arguments: pure Python, shared with the CPU emulation in the tests) and hands it to
``_run``, which makes the inputs contiguous, allocates the outputs and launches. Nothing
here copies to or from the host, and every kernel writes each output element from one
thread, so results are deterministic (bitwise equal to the reference, whose summation
order the kernels keep).
"""

from functools import cache

from fcn_scratch.device import import_cupy
from fcn_scratch.kernels import launch, reference

OPTIONS: tuple[str, ...] = ()
"""NVRTC options beyond the ones CuPy adds itself (the target architecture, -ftz=true,
--device-as-default-execution-space); tests/test_cuda_compile.py compiles with the same."""


def module_source() -> str:
    """The .cu sources as one translation unit (kernel names are unique across them)."""
    return "\n".join(path.read_text() for path in launch.SOURCES)


@cache
def _module():
    """The .cu sources compiled into one RawModule, once per process."""
    return import_cupy().RawModule(code=module_source(), options=OPTIONS)


def compile_all() -> None:
    """Compile the kernels now and load each one (float32 and float64); raise what NVRTC or
    the driver raises when they do not compile or load. Later launches reuse the module."""
    for op in launch.KERNELS:
        for dtype in launch.SUFFIXES:
            _module().get_function(launch.kernel_name(op, dtype))


def _run(plan: launch.Launch, *inputs) -> list:
    """Launch ``plan`` on ``inputs``; returns the new output arrays, in ``plan.outputs`` order."""
    cupy = import_cupy()
    with inputs[0].device:
        inputs = [cupy.ascontiguousarray(a, dtype=dt) for a, dt in zip(inputs, plan.inputs)]
        outputs = [cupy.empty(shape, dtype=dtype) for shape, dtype in plan.outputs]
        kernel = _module().get_function(plan.kernel)
        kernel(plan.grid, plan.block, (*inputs, *outputs, *plan.scalars))
    return outputs


def im2col(x, kernel_size, stride, padding, dilation, out_size):
    """Unfold sliding windows into columns.

    x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW)
    """
    window = (kernel_size, stride, padding, dilation)
    plan = launch.im2col(x.shape, x.dtype, window, out_size)
    (col,) = _run(plan, x)
    return col


def col2im(col, in_size, kernel_size, stride, padding, dilation, out_size):
    """Fold columns back into an image, summing overlapping taps: the adjoint of im2col.

    col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W), with (H, W) = in_size
    """
    window = (kernel_size, stride, padding, dilation)
    plan = launch.col2im(col.shape, col.dtype, in_size, window, out_size)
    (x,) = _run(plan, col)
    return x


def maxpool2d_forward(x, kernel_size, stride, padding, dilation, out_size):
    """Max over each window, recording where the maximum was.

    x: (N, C, H, W) -> y: (N, C, OH, OW), idx: (N, C, OH, OW) int64, flat into H*W
    """
    window = (kernel_size, stride, padding, dilation)
    plan = launch.maxpool2d_forward(x.shape, x.dtype, window, out_size)
    y, idx = _run(plan, x)
    return y, idx


def maxunpool2d_forward(x, idx, out_size):
    """Scatter-add each value to its recorded position in a zero plane.

    x: (N, C, OH, OW), idx: same shape, flat into H*W -> y: (N, C, H, W), (H, W) = out_size
    """
    (y,) = _run(launch.maxunpool2d_forward(x.shape, x.dtype, out_size), x, idx)
    return y


def maxunpool2d_backward(dy, idx):
    """Gather the gradient at each recorded position: the adjoint of the scatter-add.

    dy: (N, C, H, W), idx: (N, C, OH, OW) -> dx: (N, C, OH, OW)
    """
    (dx,) = _run(launch.maxunpool2d_backward(dy.shape, dy.dtype, idx.shape), dy, idx)
    return dx


def maxpool2d_backward(dy, idx, in_size):
    """Route each output gradient to the input that won its window.

    The gradient of max pooling is the same scatter-add as unpooling:
    dy: (N, C, OH, OW), idx: same shape -> dx: (N, C, H, W), (H, W) = in_size
    """
    return maxunpool2d_forward(dy, idx, in_size)


def relu_backward(dy, y):
    """ReLU's gradient from its output: dx = dy where y > 0, else 0 (any shape).

    One elementwise select, which CuPy compiles by itself: no kernel of ours needed.
    """
    return import_cupy().where(y > 0, dy, dy.dtype.type(0))


def adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or, ``decoupled``, AdamW) step of one parameter, in place: the reference's
    array formula, which runs on CuPy arrays as it is (NumPy's ufuncs hand them to CuPy)."""
    reference.adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)
