"""ONNX translations of the aten ops the zoo's models use that ``torch.onnx.export`` (torch 2.13, onnxscript 0.7.2)
cannot translate, or translates wrongly: its ``custom_translation_table``.

No translation:

* ``aten.sort.stable`` (SparseCTR's gap chunking, DiffuMIN's top-p, DIEN's left alignment): ``TopK`` over the whole
  axis. ONNX ``TopK`` breaks ties by the lower index, which is exactly a stable sort, in either direction.
* ``aten.linalg_qr`` (DiffuMIN's orthonormal channels): modified Gram-Schmidt over the (static) columns. It returns a
  QR factorisation with R's diagonal >= 0, where LAPACK's Householder QR may flip the sign of a column of Q and the
  matching row of R; the zoo's only caller makes R_ii > 0 itself, so it computes the same channels (float32
  rounding differs: ~1e-7).
* ``aten.frexp`` (SparseCTR's recency buckets): the binary exponent by a search over powers of two, exact for zero
  and finite normal inputs (every comparison and every scaling by a power of two is exact there).

Wrong translations:

* ``aten.scalar_tensor`` (every Python number in an op): onnxscript makes a float32 constant and casts it, so a
  float64 scalar loses its digits (DiffuMIN's ``ceil(n * 0.2 - 1e-9)`` then keeps one behaviour too many); here it is
  one constant of the requested dtype.
* ``aten.div`` with ``rounding_mode`` on integers: onnxscript divides float32 casts, which moves Unix times (~1.7e9 s,
  float32 steps of 128 s) by up to a minute (SparseCTR's hour and recency terms); here integers divide as integers.
* ``aten.repeat_interleave.self_int`` with a symbolic count (DIN's scorer): onnxscript puts the count on the wrong
  axis of its Expand; here it is unsqueeze, expand, reshape.

The functions run while the exporter builds the graph (onnxscript's tracing: ``op.X`` adds a node); their inputs are
graph values, their ``int``/``bool``/``str``/``float`` parameters the op's attributes.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

EXPONENT_STEPS = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)   # a binary search over float64's exponent range
LARGEST_EXPONENT = {11: 1023, 1: 127, 16: 127, 10: 15}      # double, float, bfloat16, float16: the steps that fit
BOOL, INT32, INT64 = 9, 6, 7                                # ONNX data type codes
TOPK_TYPES = (1, 10, 11, 6, 7)                              # float, float16, double, int32, int64


def _op():
    from onnxscript import opset18  # noqa: PLC0415 (the export's dependencies load only when exporting)
    return opset18


def _constant(value, like):
    """A scalar constant of ``like``'s dtype (converted from the Python number directly: no float32 detour)."""
    return _op().Constant(value=_tensor(value, like.dtype))


def _tensor(value, dtype=None):
    import onnx_ir as ir  # noqa: PLC0415
    return ir.tensor(value, dtype=None if dtype is None else ir.DataType(dtype))


def sort_stable(self, stable: Optional[bool] = None, dim: int = -1, descending: bool = False):
    """``torch.sort(self, dim, descending, stable=True)``: (values, int64 indices)."""
    op = _op()
    rank = len(self.shape)
    axis = dim % rank
    keys = self if self.dtype in TOPK_TYPES else op.Cast(self, to=INT64)
    values, indices = op.TopK(keys, op.Shape(self, start=axis, end=axis + 1), axis=axis, largest=descending,
                              sorted=True)
    return (values if keys is self else op.Cast(values, to=self.dtype)), indices


def linalg_qr(A, mode: str = "reduced"):
    """Reduced QR of (..., m, n), n <= m static: Q (..., m, n) orthonormal columns, R (..., n, n) upper triangular,
    diagonal >= 0."""
    if mode != "reduced":
        raise NotImplementedError(f"linalg_qr mode '{mode}': the ONNX export translates mode 'reduced' only")
    op = _op()
    width = A.shape[-1]
    if not isinstance(width, int):
        raise NotImplementedError("linalg_qr: the ONNX export needs a static number of columns")
    rows_axis = op.Constant(value=_tensor([-2]))
    columns = [op.Gather(A, op.Constant(value=_tensor([j])), axis=-1) for j in range(width)]      # (..., m, 1)
    zero = op.Mul(op.ReduceSum(columns[0], rows_axis, keepdims=1), _constant(0.0, A))               # (..., 1, 1)
    q_columns: list = []
    r = [[zero] * width for _ in range(width)]
    for j in range(width):
        v = columns[j]
        for i, q in enumerate(q_columns):
            r[i][j] = op.ReduceSum(op.Mul(q, v), rows_axis, keepdims=1)                              # (..., 1, 1)
            v = op.Sub(v, op.Mul(r[i][j], q))
        r[j][j] = op.Sqrt(op.ReduceSum(op.Mul(v, v), rows_axis, keepdims=1))
        q_columns.append(op.Div(v, r[j][j]))
    rows = [op.Concat(*row, axis=-1) for row in r]                                                   # (..., 1, n)
    return op.Concat(*q_columns, axis=-1), op.Concat(*rows, axis=-2)


def frexp(self):
    """(mantissa, int32 exponent) with self = mantissa * 2^exponent, |mantissa| in [0.5, 1) (0 for 0)."""
    op = _op()
    steps = [step for step in EXPONENT_STEPS if step <= LARGEST_EXPONENT[int(self.dtype)]]
    magnitude, exponent = op.Abs(self), op.Cast(op.Mul(op.Abs(self), _constant(0.0, self)), to=INT32)
    for step in steps:                                          # down into [1, 2): exact divisions by 2^step
        large = op.GreaterOrEqual(magnitude, _constant(2.0 ** step, self))
        magnitude = op.Where(large, op.Mul(magnitude, _constant(2.0 ** -step, self)), magnitude)
        exponent = op.Add(exponent, op.Mul(op.Cast(large, to=INT32), op.Constant(value=_tensor(step, INT32))))
    for step in steps:                                          # up from below into [0.5, 1)
        small = op.And(op.Less(magnitude, _constant(2.0 ** -step, self)), op.Greater(magnitude, _constant(0.0, self)))
        magnitude = op.Where(small, op.Mul(magnitude, _constant(2.0 ** step, self)), magnitude)
        exponent = op.Sub(exponent, op.Mul(op.Cast(small, to=INT32), op.Constant(value=_tensor(step, INT32))))
    above_one = op.GreaterOrEqual(magnitude, _constant(1.0, self))                             # [1, 2) -> [0.5, 1)
    magnitude = op.Where(above_one, op.Mul(magnitude, _constant(0.5, self)), magnitude)
    exponent = op.Add(exponent, op.Cast(above_one, to=INT32))
    zero = op.Equal(self, _constant(0.0, self))
    mantissa = op.Where(zero, self, op.Mul(magnitude, op.Sign(self)))
    return mantissa, op.Where(zero, op.Constant(value=_tensor(0, INT32)), exponent)


def scalar_tensor(s: float, dtype: int = 1, layout: str = "", device: str = "", pin_memory: bool = False):
    """``aten.scalar_tensor(s, dtype)`` as one constant of that dtype (``dtype``: an ONNX data type code)."""
    return _op().Constant(value=_tensor(s, dtype))


def divide_rounded(self, other, rounding_mode: Optional[str] = None):
    """``torch.div(self, other, rounding_mode=...)``: exact for integers (ONNX Div truncates; floor moves a quotient
    with a non-zero remainder and operands of opposite signs down by one); floats as onnxscript translates them."""
    from onnxscript.function_libs.torch_lib.ops.core import aten_div_mode  # noqa: PLC0415
    if not self.dtype.is_integer() or rounding_mode is None:
        return aten_div_mode(self, other, rounding_mode=rounding_mode)
    op = _op()
    other = op.CastLike(other, self)
    quotient = op.Div(self, other)
    if rounding_mode == "trunc":
        return quotient
    below = op.And(op.Equal(op.Less(self, _constant(0, self)), op.Greater(other, _constant(0, self))),
                   op.Cast(op.Mod(self, other), to=BOOL))
    return op.Sub(quotient, op.Cast(below, to=self.dtype))


def repeat_interleave(self, repeats, dim: Optional[int] = None, output_size: Optional[int] = None):
    """``self.repeat_interleave(repeats, dim)`` for an int or symbolic count."""
    op = _op()
    if dim is None:
        self, dim = op.Reshape(self, op.Constant(value=_tensor([-1]))), 0
        rank = 1
    else:
        rank = len(self.shape)
    dim = dim % rank
    count = op.Reshape(op.Cast(repeats, to=INT64), op.Constant(value=_tensor([1])))
    ones = lambda n: [op.Constant(value=_tensor([1] * n))] if n else []  # noqa: E731
    expanded = op.Expand(op.Unsqueeze(self, op.Constant(value=_tensor([dim + 1]))),
                         op.Concat(*ones(dim + 1), count, *ones(rank - dim - 1), axis=0))
    shape = op.Shape(self)
    parts = ([op.Slice(shape, op.Constant(value=_tensor([0])), op.Constant(value=_tensor([dim])))] if dim else []) + \
        [op.Constant(value=_tensor([-1]))] + \
        ([op.Slice(shape, op.Constant(value=_tensor([dim + 1])), op.Constant(value=_tensor([rank])))]
         if dim + 1 < rank else [])
    return op.Reshape(expanded, op.Concat(*parts, axis=0))


def translations() -> Dict[Callable, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export``."""
    aten = torch.ops.aten
    return {aten.sort.stable: sort_stable, aten.linalg_qr.default: linalg_qr, aten.frexp.Tensor: frexp,
            aten.scalar_tensor.default: scalar_tensor, aten.div.Tensor_mode: divide_rounded,
            aten.div.Scalar_mode: divide_rounded, aten.repeat_interleave.self_int: repeat_interleave}
