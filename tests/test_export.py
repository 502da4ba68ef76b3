"""ONNX export: ONNX Runtime's scores equal PyTorch's eval-mode scores for every model of the zoo.

Tolerance: |difference| <= 1e-5 on the probabilities. ONNX Runtime computes the same float32 graph with other kernels
(fused MatMul/Gemm, its own Softmax, LayerNorm and reduction orders), so results differ by float32 rounding: the
largest difference measured on these models is ~1.2e-7 (a few ulps of values near 0.5). 1e-5 leaves ~100x room
for the rounding and still catches a wrong op, a baked table read at the wrong row, or a routing/top-k decision that
flips (each moves a score by far more).
"""
import json

import numpy as np
import pytest
import torch
from model_checks import build_model, truncate
from model_checks import predict as eval_scores

from lainctr import export, trained
from lainctr.data.loader import SequenceBatchLoader
from lainctr.models import lain_parameters
from lainctr.predict import predict

TOLERANCE = 1e-5
MODELS = ["DIN", "DIEN", "SIM", "SDIM", "TWIN", "SparseCTR", "DiffuMIN"]
SETTINGS = {"DIEN": dict(max_len=16),             # its export unrolls every GRU step: a short window keeps it quick
            "SIM": dict(topk=8), "TWIN": dict(topk=8, use_cross_bias=True, num_heads=2),
            "SparseCTR": dict(model_dim=24, num_heads=2, num_layers=2, num_chunks=4, local_window=8),
            "DiffuMIN": dict(sample_steps=2, diffusion_steps=50, denoiser_layers=1, short_layers=1, noise_bank_size=64)}
SERVE_ROWS, SERVE_MAX_LEN = 37, 40        # another batch size and history width than the export's (16 x max_len)


def built(name, feature_map, model_kwargs, dataset):
    """The model with visible embeddings and LAIN parameters moved off their (zero) initialisation, caches built."""
    model = build_model(name, feature_map, model_kwargs, **SETTINGS.get(name.replace("_LAIN", ""), {}))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lain_parameters(model):
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)
    model.eval()
    model.prepare_inference(dataset.item_table)
    return model


def serving_batch(dataset, model, width):
    """37 valid samples at max_len 40 (or ``width`` where it is narrower), with row 0 emptied (L = 0) and row 1 cut
    to its last behaviour (L = 1), padded to ``width`` columns (DIEN's artefact takes exactly max_len)."""
    loader = SequenceBatchLoader(dataset, "valid", SERVE_ROWS, min(SERVE_MAX_LEN, width), times=model.reads_time())
    batch = loader.make_batch(np.arange(100, 100 + SERVE_ROWS))
    batch = export.widened(truncate(truncate(batch, [0], keep=0), [1], keep=1), width)
    assert batch.mask[0].sum() == 0 and batch.mask[1].sum() == 1
    return batch


def baked(onnx_model, tensor: torch.Tensor) -> bool:
    """Whether the ONNX graph holds ``tensor`` as an initializer or constant."""
    wanted = tensor.detach().numpy()
    values = [v.const_value for v in onnx_model.graph.initializers.values()]
    return any(v is not None and tuple(v.shape) == wanted.shape and np.array_equal(v.numpy(), wanted) for v in values)


@pytest.mark.parametrize("name", MODELS + [f"{m}_LAIN" for m in MODELS])
def test_onnx_runtime_scores_equal_pytorch(name, feature_map, model_kwargs, tiny_dataset, tmp_path):
    model = built(name, feature_map, model_kwargs, tiny_dataset)
    serving = export.serving_model(model, tiny_dataset)
    examples = export.example_inputs(serving, export.example_batch(model, tiny_dataset))
    program = export.capture(serving, examples)
    width = export.width_range(program, serving)
    if name.startswith("DIEN"):       # its fused GRU's decomposition unrolls the steps: the width is fixed
        assert width == {"min": model.max_len, "max": model.max_len}
    else:
        assert width["min"] <= SERVE_MAX_LEN and (width["max"] is None or width["max"] >= model.max_len)
    onnx_program = export.to_onnx(program, serving, examples)
    if name.endswith("_LAIN"):        # LAIN's per-length table is in the graph (no length encoder runs)
        assert baked(onnx_program.model, model.length_conditioner.table)
    if name.startswith("TWIN"):       # TWIN scores behaviours from the cached item projections
        assert baked(onnx_program.model, model.branches["long"].attention.item_cache.keys)
    path = str(tmp_path / f"{name}.onnx")
    onnx_program.save(path, external_data=False)
    batch = serving_batch(tiny_dataset, model, width["min"] if name.startswith("DIEN") else SERVE_MAX_LEN)
    feeds = {n: t.numpy() for n, t in zip(serving.input_names, export.example_inputs(serving, batch))}
    scores = export.onnx_scores(path, feeds)
    expected = eval_scores(model, batch).view(-1).numpy()
    assert scores.shape == expected.shape == (SERVE_ROWS,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)
    one_row = export.onnx_scores(path, {n: v[2:3] for n, v in feeds.items()})              # a batch of one
    np.testing.assert_allclose(one_row, expected[2:3], rtol=0, atol=TOLERANCE)


def test_export_command_writes_the_artefact_and_its_sidecar(tiny_run, data_root, tmp_path):
    """``python -m lainctr.export --expid X``: the ONNX file and ``<out>.json``; ONNX Runtime fed as the sidecar says
    gives predict's scores; ``--format pt2`` gives the same scores through ``torch.export.load``."""
    row, expids = tiny_run
    out = tmp_path / "model.onnx"
    common = ["--expid", "DIN_LAIN_tiny_run", "--config", expids, "--data_root", str(data_root)]
    assert export.cli(common + ["--out", str(out)]) == 0
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert [i["name"] for i in sidecar["inputs"]] == ["history_items", "history_mask", "target_item", "hour"]
    assert sidecar["inputs"][0]["shape"] == ["batch", "history_width"] and sidecar["inputs"][3]["feature"] == "hour"
    assert sidecar["dims"]["history_width"]["max"] == 30 and sidecar["verified"]["max_abs_difference"] <= TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]   # no temporary left
    run = trained.read_run(row["run_dir"])
    expected = predict(run, "test", data_root=str(data_root))["score"].to_numpy()[:64]
    trainer, dataset = trained.load(run, str(data_root))
    serving = export.serving_model(trainer.model, dataset)
    batch = SequenceBatchLoader(dataset, "test", 64, 30).make_batch(np.arange(64))
    named = dict(zip(serving.input_names, export.example_inputs(serving, export.widened(batch, 30))))
    feeds = {spec["name"]: named[spec["name"]].numpy() for spec in sidecar["inputs"]}
    assert all(feeds[s["name"]].dtype == np.dtype(s["dtype"]) for s in sidecar["inputs"])
    np.testing.assert_allclose(export.onnx_scores(str(out), feeds), expected, rtol=0, atol=TOLERANCE)
    assert export.cli(common + ["--out", str(tmp_path / "model.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        scores = program(*(named[n] for n in serving.input_names)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)
