"""Export a trained run as a self-contained artefact: ``python -m lainctr.export --run_dir RUN_DIR --out model.onnx``.

The artefact computes :class:`lainctr.serving.ServingModel`: padded history rows, mask, length (times and context
features where the model reads them) -> click probabilities, with the weights, the item table and the inference
caches (LAIN's per-length tables, TWIN's item projections) baked in. Batch size and history width are dynamic
(DIEN's width is fixed at max_len: the export of its fused GRU unrolls the steps); the width's range (its lower
end set by the model's thresholds, e.g. top-k and the short window, its upper end by LAIN's tables: max_len) is in
the sidecar. A history narrower than the minimum is left-padded (item row 0, mask
False): padding never changes a score.

``--format onnx`` (default): ``torch.onnx.export`` with torch 2.13's default exporter (``dynamo=True``: it
captures the model with ``torch.export`` and translates it with onnxscript; :mod:`lainctr.onnx_translations` fills
its gaps), opset 18, run by ONNX Runtime. Every model of the zoo exports to ONNX. Each export is checked: ONNX Runtime
scores a batch of the run's test split and must agree with PyTorch (the max difference is in the sidecar).
``--format pt2``: the ``torch.export`` program (``torch.export.load(path).module()(*inputs)``), for a model ONNX
cannot express.

Beside the artefact, ``<out>.json`` names the inputs (name, dtype, shape, meaning, feature), the output and the
dimension ranges. Both files are written to temporary names and renamed.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Any, Dict, List, Optional, Tuple

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from . import config as config_lib  # noqa: E402
from . import trained  # noqa: E402
from .atomic import write_atomically  # noqa: E402
from .data.dataset import SequenceDataset  # noqa: E402
from .data.loader import SequenceBatch, SequenceBatchLoader  # noqa: E402
from .errors import CommandLineParser, InputFileError, exit_code  # noqa: E402
from .models.base import SequenceCTRModel  # noqa: E402
from .serving import HISTORY_INPUTS, ServingModel, example_inputs, input_specs  # noqa: E402

FORMATS = ("onnx", "pt2")
OPSET = 18
EXAMPLE_ROWS = 16
VERIFY_TOLERANCE = 1e-5   # |ONNX Runtime - PyTorch| on probabilities: float32 reorderings give ~1e-7 (see the tests)


class ExportError(RuntimeError):
    """The model could not be exported in the asked format; the message says what failed."""


def serving_model(model: SequenceCTRModel, dataset: SequenceDataset) -> ServingModel:
    """The model with every inference cache built (LAIN's tables up to max_len), wrapped for serving."""
    model.eval()
    conditioner = model.length_conditioner
    if conditioner is not None and conditioner.tabulable:
        with torch.no_grad():
            model.ensure_length_tables(model.max_len)
    context = [name for name in next(iter(dataset.splits.values())) if name in model.context_features]
    return ServingModel(model, dataset.item_table, context)


def widened(batch: SequenceBatch, width: int) -> SequenceBatch:
    """The batch's histories left-padded to ``width`` columns (item row 0 and its all-zero features, mask 0,
    time 0)."""
    rows, columns = batch.mask.shape
    extra = width - columns
    if extra <= 0:
        return batch
    pad = lambda t: torch.nn.functional.pad(t, (extra, 0))  # noqa: E731

    def pad_feature(values: torch.Tensor) -> torch.Tensor:   # (B * (T + 1), ...) -> (B * (width + 1), ...)
        per_sample = values.view(rows, columns + 1, -1)
        return torch.nn.functional.pad(per_sample, (0, 0, extra, 0)).view(-1, *values.shape[1:])

    return batch._replace(item_dict={k: pad_feature(v) for k, v in batch.item_dict.items()}, mask=pad(batch.mask),
                          item_index=pad(batch.item_index),
                          history_time=None if batch.history_time is None else pad(batch.history_time))


def example_batch(model: SequenceCTRModel, dataset: SequenceDataset, rows: int = EXAMPLE_ROWS) -> SequenceBatch:
    """The first ``rows`` samples of the test split (else the last split), histories widened to max_len: the example
    the export traces (its width is the range's upper end) and the check's batch."""
    split = "test" if "test" in dataset.splits else sorted(dataset.splits)[-1]
    loader = SequenceBatchLoader(dataset, split, rows, model.max_len, times=model.reads_time())
    return widened(loader.make_batch(np.arange(min(rows, loader.num_samples))), model.max_len)


def capture(serving: ServingModel, examples: Tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export`` of the serving model: batch dynamic, history width dynamic within what the model allows
    (``Dim.AUTO``: the export derives the range from the model's own shape conditions)."""
    batch = torch.export.Dim("batch")
    shapes = [{0: batch, 1: torch.export.Dim.AUTO} if name in HISTORY_INPUTS else {0: batch}
              for name in serving.input_names]
    with torch.no_grad():
        return torch.export.export(serving, examples, dynamic_shapes=(tuple(shapes),), strict=False)


def width_range(program: torch.export.ExportedProgram, serving: ServingModel) -> Dict[str, Optional[int]]:
    """{min, max} of the history width the program accepts (max None: unbounded)."""
    name = program.graph_signature.user_inputs[serving.input_names.index("history_items")]
    width = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name).meta["val"].shape[1]
    if isinstance(width, int) or width.node.expr.is_number:        # specialised (DIEN: its GRU unrolls the steps)
        return {"min": int(width), "max": int(width)}
    bounds = program.range_constraints[width.node.expr]
    return {"min": int(bounds.lower), "max": int(bounds.upper) if bounds.upper.is_Integer else None}


def to_onnx(program: torch.export.ExportedProgram, serving: ServingModel, examples: Tuple[torch.Tensor, ...]):
    """The ONNX model (``onnx_ir``) of the captured program, inputs the model does not read removed."""
    from .onnx_translations import translations  # noqa: PLC0415 (needs onnxscript)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)   # not its notes on torchvision ops it skips
    try:
        onnx_program = torch.onnx.export(program, examples, dynamo=True,
                                         input_names=serving.input_names, output_names=["score"], opset_version=OPSET,
                                         optimize=False, custom_translation_table=translations(), verbose=False)
    except Exception as error:  # the exporter raises its own error types, with the op that failed
        raise ExportError(f"ONNX cannot express this model ({str(error).strip().splitlines()[-1][:300]}); "
                          "export it with --format pt2") from error
    assert onnx_program is not None, "torch.onnx.export(dynamo=True) returns the program"
    prune_inputs(onnx_program.model)
    return onnx_program


def _batch_size_only(node) -> bool:
    """The node is ``Shape`` of a (batch,) value, from its first dimension."""
    start, end = node.attributes.get("start"), node.attributes.get("end")
    return node.op_type == "Shape" and (start is None or start.value == 0) and (end is None or end.value == 1)


def prune_inputs(model) -> None:
    """Remove the graph inputs the scores do not depend on (``onnx_ir`` model, in place).

    The exporter reads the batch size from one of the (batch,) inputs, whichever; where that is the only use of an
    input, the size is read from ``history_items`` instead, so a server feeds only what the model reads.
    """
    import onnx_ir as ir  # noqa: PLC0415
    from onnx_ir.passes.common import RemoveUnusedNodesPass  # noqa: PLC0415
    RemoveUnusedNodesPass()(model)
    history = next(v for v in model.graph.inputs if v.name == "history_items")
    for value in model.graph.inputs:
        uses = [use.node for use in value.uses()]
        if value is not history and uses and len(value.shape) == 1 and all(map(_batch_size_only, uses)):
            for node in uses:
                node.replace_input_with(0, history)
                node.attributes["start"], node.attributes["end"] = ir.AttrInt64("start", 0), ir.AttrInt64("end", 1)
    for value in [v for v in model.graph.inputs if not v.uses()]:
        model.graph.inputs.remove(value)


def onnx_scores(path: str, feeds: Dict[str, np.ndarray]) -> np.ndarray:
    """ONNX Runtime's scores of the artefact at ``path`` for the named inputs (those the graph has)."""
    import onnxruntime  # noqa: PLC0415
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3       # not its notes on constants it cannot fold while optimising the graph
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(["score"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


def check(path: str, serving: ServingModel, examples: Tuple[torch.Tensor, ...]) -> Dict[str, Any]:
    """ONNX Runtime against PyTorch on the example batch; raises beyond :data:`VERIFY_TOLERANCE`."""
    with torch.no_grad():
        expected = serving(*examples).numpy()
    got = onnx_scores(path, {n: t.numpy() for n, t in zip(serving.input_names, examples)})
    difference = float(np.abs(got - expected).max())
    if not difference <= VERIFY_TOLERANCE:
        raise ExportError(f"ONNX Runtime's scores differ from PyTorch's by {difference:.3g} (> {VERIFY_TOLERANCE}) "
                          f"on {len(expected)} test samples; export with --format pt2")
    return {"rows": len(expected), "max_abs_difference": difference}


def sidecar(run: trained.TrainedRun, fmt: str, serving: ServingModel, examples: Tuple[torch.Tensor, ...],
            names: List[str], width: Dict[str, Optional[int]], verified: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON that tells a server what to feed."""
    specs = [spec for spec in input_specs(serving.input_names, examples) if spec.name in names]
    inputs = [dict(spec._asdict(), shape=list(spec.shape),
                   feature=spec.name if spec.name in serving.context_names else None) for spec in specs]
    return {"format": fmt, "opset": OPSET if fmt == "onnx" else None, "expid": run.params.get("expid"),
            "model": run.params["model"], "dataset_id": run.params["dataset_id"], "run_dir": run.run_dir,
            "checkpoint": run.checkpoint, "max_len": int(run.params["max_len"]),
            "inputs": inputs, "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"],
                                           "meaning": "click probability"}],
            "dims": {"batch": {"min": 1, "max": None}, "history_width": width},
            "item_table": {"rows": int(getattr(serving, f"item_table_{serving.item_features[0]}").shape[0]),
                           "features": serving.item_features},
            "verified": verified, "versions": versions(fmt)}


def versions(fmt: str) -> Dict[str, str]:
    """The libraries that made (and, for ONNX, checked) the artefact."""
    found = {"torch": str(torch.__version__)}
    if fmt == "onnx":
        import onnx  # noqa: PLC0415
        import onnxruntime  # noqa: PLC0415
        import onnxscript  # noqa: PLC0415
        found.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__, onnxruntime=onnxruntime.__version__)
    return found


def export(run: trained.TrainedRun, out: str, fmt: str = "onnx", data_root: Optional[str] = None) -> Dict[str, Any]:
    """Export ``run`` to ``out`` (and ``out + '.json'``); returns the sidecar's content."""
    trainer, dataset = trained.load(run, data_root)
    serving = serving_model(trainer.model, dataset)
    examples = example_inputs(serving, example_batch(trainer.model, dataset))
    program = capture(serving, examples)
    width = width_range(program, serving)
    if fmt == "pt2":
        write_atomically(out, lambda tmp: torch.export.save(program, tmp))
        names, verified = list(serving.input_names), None
    else:
        onnx_program = to_onnx(program, serving, examples)
        names = [v.name for v in onnx_program.model.graph.inputs]
        verified = {}

        def write(tmp: str) -> None:
            try:
                onnx_program.save(tmp, external_data=False)
            except ValueError as error:   # protobuf's 2 GB limit
                raise ExportError(f"{out}: the model does not fit one ONNX file ({error}); use --format pt2") from error
            verified.update(check(tmp, serving, examples))
        write_atomically(out, write)
    content = sidecar(run, fmt, serving, examples, names, width, verified)

    def write_sidecar(tmp: str) -> None:
        with open(tmp, "w") as fd:
            json.dump(content, fd, indent=1)
    write_atomically(out + ".json", write_sidecar)
    return content


def main(argv=None) -> int:
    parser = CommandLineParser(prog="python -m lainctr.export", description=__doc__)
    trained.add_arguments(parser)
    parser.add_argument("--out", required=True, help="the artefact (model.onnx or model.pt2); <out>.json beside it")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: from --out's extension, else onnx")
    args = parser.parse_args(argv)
    fmt = args.format or ("pt2" if args.out.endswith(".pt2") else "onnx")
    if args.gpu != -1:
        parser.error("--gpu: the export runs on the CPU (the artefact is device-independent)")
    content = export(trained.from_arguments(args), args.out, fmt, args.data_root)
    width = content["dims"]["history_width"]
    print(f"{content['model']} exported to {args.out} ({fmt}; inputs: {', '.join(i['name'] for i in content['inputs'])}; "
          f"history width {width['min']}..{width['max'] or 'any'}" +
          (f"; ONNX Runtime vs PyTorch on {content['verified']['rows']} test samples: max |difference| "
           f"{content['verified']['max_abs_difference']:.2g}" if content["verified"] else "") + f"); inputs in {args.out}.json")
    return 0


def cli(argv=None) -> int:
    """``main`` with a user's mistake as one line ``error: ...`` and exit status 2."""
    return exit_code(main, argv, extra=(config_lib.ConfigError, ExportError, InputFileError))


if __name__ == "__main__":
    sys.exit(cli())
