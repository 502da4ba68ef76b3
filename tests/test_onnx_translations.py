"""The ONNX translations of lainctr.onnx_translations compute what PyTorch computes (ONNX Runtime on the CPU)."""
import numpy as np
import onnxruntime
import torch

from lainctr.onnx_translations import translations


class Ops(torch.nn.Module):
    """Every translated op once: QR, frexp, stable sorts with ties (both directions, uint8 keys), integer floor
    division of Unix times and of negative numbers, float64 scalars, repeat_interleave by a symbolic count."""

    def forward(self, matrix, flags, values, times, count):
        q, r = torch.linalg.qr(matrix)
        signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0)    # the zoo's sign fix (OMIE)
        mantissa, exponent = torch.frexp(values)
        flag_order = torch.sort(flags, dim=1, stable=True)
        value_order = torch.sort(values, dim=0, descending=True, stable=True)
        return (q * signs.unsqueeze(1), r * signs.unsqueeze(-1), mantissa, exponent, *flag_order, *value_order,
                torch.div(times, 3600, rounding_mode="floor"), torch.div(-times, 7, rounding_mode="floor"),
                torch.ceil(torch.full_like(times, 5).double() * 0.2 - 1e-9), matrix.repeat_interleave(count.shape[0], dim=1))


def test_translations_match_pytorch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(5, 8, 4, generator=generator)
    flags = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.uint8)
    values = torch.cat([torch.tensor([0.0, 1.0, 3.0, 8.0, 0.3, -5.0, 1e300, 1e-300, 2.0 ** -1022, 3.0, 3.0],
                                     dtype=torch.float64), torch.randn(50, generator=generator).double() * 1e5])
    times = torch.randint(1_600_000_000, 1_700_000_000, (50,), generator=generator)
    inputs = (matrix, flags, values, times, torch.zeros(3))
    program = torch.export.export(Ops(), inputs, dynamic_shapes=({0: torch.export.Dim("b")}, None, None, None,
                                                                 {0: torch.export.Dim("n")}))
    onnx_program = torch.onnx.export(program, inputs, dynamo=True, optimize=False,
                                     custom_translation_table=translations())
    onnx_program.save(str(tmp_path / "ops.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "ops.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})
    expected = Ops()(*inputs)
    for index, (want, have) in enumerate(zip(expected, got)):
        assert have.dtype == want.numpy().dtype, index
        if index < 2:       # Q and R: Gram-Schmidt against Householder, float32
            np.testing.assert_allclose(have, want.numpy(), atol=2e-6, rtol=0)
        else:               # everything else exactly (stable tie order, exact exponents and integer quotients)
            np.testing.assert_array_equal(have, want.numpy(), err_msg=str(index))
