"""summary(model, input_shape): a per-layer table of output shapes, parameters and MACs.

The model runs once, in eval mode and without a graph (``no_grad``), on zeros of
``input_shape``; every leaf module (one without children) that is called adds a row.
MACs (multiply-accumulates) come from the layer's ``macs(x_shape, y_shape)`` method
(Conv2d, ConvTranspose2d, Linear); other layers count zero (pooling, ReLU, additions and
crops are cheap next to convolutions).
"""

from dataclasses import dataclass, field

import numpy as np

from fcn_scratch.autograd import Tensor, no_grad
from fcn_scratch.device import array_module
from fcn_scratch.nn.module import Module, observe_calls


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class Summary:
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0

    def table(self) -> str:
        head = ("layer", "type", "output shape", "params", "MACs")
        body = [
            (r.name, r.kind, str(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

        def fmt(line):
            return "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )

        rule = "-" * len(fmt(head))
        lines = [
            f"input {self.input_shape}",
            fmt(head),
            rule,
            *map(fmt, body),
            rule,
            f"total params {self.total_params:,} (trainable {self.trainable_params:,})",
            f"total MACs   {self.total_macs:,}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _shape(value) -> tuple[int, ...]:
    """Shape of a layer's output; for (y, indices) from a pooling layer, y's shape."""
    if isinstance(value, tuple):
        value = value[0]
    return tuple(int(d) for d in value.shape)


def summary(model: Module, input_shape: tuple[int, ...], print_table: bool = True) -> Summary:
    """Run ``model`` on zeros of ``input_shape`` ((C, H, W) means batch 1, or (N, C, H, W)).

    Returns a Summary (rows per called leaf layer, totals); prints its table unless told not to.
    Parameter totals count every parameter of the model, called or not.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"summary: input_shape must be (C, H, W) or (N, C, H, W), got {shape}")
    params = list(model.parameters())
    if params:
        xp, dtype = array_module(params[0].data), params[0].dtype
    else:
        xp, dtype = np, np.float32
    names = {id(m): name for name, m in model.named_modules()}
    result = Summary(input_shape=shape)

    def record(module: Module, args, output) -> None:
        if any(True for _ in module.children()):
            return
        own = sum(int(np.prod(p.shape)) for p in module.parameters())
        x_shape = _shape(args[0]) if args else ()
        y_shape = _shape(output)
        macs = module.macs(x_shape, y_shape) if hasattr(module, "macs") else 0
        name = names.get(id(module), "?")
        result.rows.append(LayerRow(name, type(module).__name__, y_shape, own, macs))

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with observe_calls(record), no_grad():
            model(Tensor(xp.zeros(shape, dtype=dtype)))
    finally:
        for m, mode in modes:
            m.training = mode
    result.total_params = model.num_parameters()
    result.trainable_params = model.num_parameters(trainable_only=True)
    result.total_macs = sum(r.macs for r in result.rows)
    if print_table:
        print(result.table())
    return result
