"""Throughput benchmark: our models and loader vs upstream FuxiCTR LongCTR, same data, same machine.

    .venv/bin/python benchmarks/benchmark.py                       # CPU, 2 threads, all models
    .venv/bin/python benchmarks/benchmark.py --gpu 0 --models TWIN TWIN_LAIN --max_len 1000 5000

For every model and max_len it prints the loader's samples/s (ours vs the LongCTR parquet loader on the same
samples), train-step and inference samples/s (ours vs the upstream LongCTR model with the same settings,
where upstream has the model), peak RSS (and peak GPU memory on CUDA), and for each ``_LAIN`` variant its
time and parameter ratio to the backbone. Each (model, max_len) runs in its own process, so peak memory is
that cell's; a LAIN variant's time ratio comes from a separate cell that alternates backbone and variant steps
on the same batches in one process. Times are medians over ``--repeats`` batches after one warm-up batch, and
every loader, ours and upstream cell runs in ``--processes`` processes (ours and upstream alternating) whose
median is shown: on the 2-core machine single processes came out up to 2x apart. Every ratio compares numbers
taken in the same run. Upstream columns are blank when ``model_zoo.LongCTR`` is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()  # every worker process runs this too, before it loads torch (ours and upstream alike)
from lainctr.lain_presets import LAIN_PRESETS  # noqa: E402 (no torch)

LOADER_BATCHES = 100  # timed batches of our loader per cell (upstream's take ~100x longer: 2-4 of them)
MODELS = ["DIN", "DIN_LAIN", "DIEN", "DIEN_LAIN", "SIM", "SIM_LAIN", "SDIM", "SDIM_LAIN", "TWIN", "TWIN_LAIN",
          "SparseCTR", "SparseCTR_LAIN", "DiffuMIN", "DiffuMIN_LAIN"]
# our config keys that mean the same thing upstream (model name -> extra upstream constructor kwargs)
SHARED_KEYS = ["embedding_dim", "dnn_hidden_units", "net_dropout", "batch_norm", "learning_rate", "short_seq_len",
               "attention_dim", "num_heads", "topk", "din_use_softmax", "attention_hidden_units", "num_hashes",
               "hash_bits", "l2_norm"]
UPSTREAM_EXTRA = {"SDIM": {"reuse_hash": True}, "SIM": {"gsu_type": "soft"},
                  "DIEN": {"attention_type": "din_attention", "attention_activation": "ReLU", "item_info_fields": 2}}


def build_data(folder: str, max_len: int) -> str:
    """Synthetic users whose histories all exceed ``max_len``: every batch is exactly max_len wide."""
    from lainctr.data import synthetic
    from lainctr.data.store import FeatureSpec, build_feature_map_json, write_dataset
    cfg = replace(synthetic.PRESETS["demo"], num_users=48, median_length=max_len + 400, length_sigma=0.02,
                  min_length=max_len + 50, max_length=max_len + 800, sample_fraction=min(0.1, 2000 / max_len))
    splits, sequences, table = synthetic.generate(cfg)
    feature_map = build_feature_map_json("bench", synthetic.LABEL,
                                         [FeatureSpec("hour", "categorical", "context", vocab_size=25)],
                                         [FeatureSpec("item_id", "categorical", "item", vocab_size=cfg.num_items),
                                          FeatureSpec("cate_id", "categorical", "item", vocab_size=cfg.num_categories + 1)])
    return write_dataset(folder, splits, sequences, table, feature_map, {"target_is_next_behaviour": True})


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fd:
        return next(int(line.split()[1]) for line in fd if line.startswith("VmHWM")) / 1024


def timed(fn, batches, device) -> float:
    """Median seconds of ``fn(batch)`` over the batches after the first (warm-up)."""
    return statistics.median(timed_each(fn, batches, device)[1:])


def timed_each(fn, batches, device) -> list:
    """Seconds of every ``fn(batch)`` call."""
    import torch
    times = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def build_ours(name: str, params: dict, feature_map, gpu: int):
    """One of our models, seeded, with the trainer that steps it."""
    import dataclasses

    import torch

    from lainctr.experiment import build_model
    from lainctr.trainer import Trainer
    torch.manual_seed(0)
    model, options = build_model(dict(params, model=name), feature_map)
    return Trainer(model, dataclasses.replace(options, gpu=gpu))


def step_functions(model, upstream: bool):
    """(train_step(batch), infer(batch)) of our model's trainer, or of an upstream model (which takes the
    plain LongCTR tuple)."""
    import torch

    if not upstream:
        trainer = model

        def train_step(batch):
            trainer.model.train()
            trainer.train_step(batch, 0, 1)

        def infer(batch):
            trainer.model.eval()
            with torch.no_grad():
                trainer.model(batch.to(trainer.device))
        return train_step, infer

    def train_upstream(batch):
        model.train()
        model.train_step((dict(batch[0]), dict(batch[1]), batch[2]))

    def infer_upstream(batch):
        model.eval()
        with torch.no_grad():
            model.forward((dict(batch[0]), dict(batch[1]), batch[2]))
    return train_upstream, infer_upstream


def interleaved_overhead(variant, backbone, batches, device, rounds: int) -> dict:
    """LAIN's time ratio to its backbone, both in this process: each round times one backbone step and one
    variant step on the same batch (order alternating), so load changes hit both alike; medians of the
    per-round ratios."""
    out = {}
    functions = {"backbone": step_functions(backbone, False), "variant": step_functions(variant, False)}
    for phase_index, phase in enumerate(("train", "infer")):
        ratios = []
        steps = {name: pair[phase_index] for name, pair in functions.items()}
        for round_index in range(rounds + 1):
            batch = batches[round_index % len(batches)]
            order = ("backbone", "variant") if round_index % 2 == 0 else ("variant", "backbone")
            seconds = {name: timed_each(steps[name], [batch], device)[0] for name in order}
            if round_index > 0:                                                   # round 0 warms up
                ratios.append(seconds["variant"] / seconds["backbone"])
        out[f"{phase}_ratio"] = statistics.median(ratios)
    return out


def worker(args) -> dict:
    """One cell: the loader, our model, the upstream model, or a LAIN variant against its backbone."""
    import torch
    from fuxictr.features import FeatureMap

    from lainctr.data.dataset import load_dataset
    from lainctr.data.loader import SequenceBatchLoader

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset = load_dataset(args.data, splits=("train",), validate=False)
    loader = SequenceBatchLoader(dataset, "train", args.batch_size, args.max_len)
    rows = [np.arange(i * args.batch_size, (i + 1) * args.batch_size) for i in range(args.repeats + 1)]
    if args.kind == "loader":
        # a batch takes milliseconds and single batches vary by 2x (page faults): time many, cycling the rows
        cycled = [np.arange(i * args.batch_size, (i + 1) * args.batch_size) % loader.num_samples
                  for i in range(LOADER_BATCHES + 1)]
        ours = timed(loader.make_batch, cycled, torch.device("cpu"))
        out = {"loader_ours": args.batch_size / ours}
        try:
            from model_zoo.LongCTR.longctr_dataloader import BatchCollator
        except ImportError:
            return out
        feature_map = FeatureMap("bench", args.data)
        feature_map.load(os.path.join(args.data, "feature_map.json"), {"embedding_dim": 16})
        collate = BatchCollator(feature_map, args.max_len, {k: i for i, k in enumerate(dataset.splits["train"])},
                                os.path.join(args.parquet, "user_info.parquet"),
                                os.path.join(args.parquet, "item_info.parquet"))
        table = np.column_stack(list(dataset.splits["train"].values()))
        try:
            out["loader_upstream"] = args.batch_size / timed(lambda r: collate(list(table[r])),
                                                              rows[:2 + min(args.repeats, 2)], torch.device("cpu"))
        except AttributeError as error:   # its keras_preprocessing pads with np.unicode_, gone in NumPy 2
            print(f"upstream LongCTR loader failed ({error}); its column stays blank", file=sys.stderr)
        return out
    from lainctr import config
    from lainctr.experiment import load_feature_map
    device = torch.device(f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu")
    params = config.load_config(f"{args.model}_synthetic")
    params.update(max_len=args.max_len, verbose=0, model_root=tempfile.mkdtemp())
    if args.lain_preset and args.model.endswith("_LAIN"):
        params["lain_preset"] = args.lain_preset
    feature_map = load_feature_map("bench", args.data, params)
    batches = [loader.make_batch(r) for r in rows]
    if args.kind == "overhead":
        backbone_params = config.load_config(f"{args.model[:-len('_LAIN')]}_synthetic")
        backbone_params.update(max_len=args.max_len, verbose=0, model_root=params["model_root"])
        return interleaved_overhead(build_ours(args.model, params, feature_map, args.gpu),
                                    build_ours(args.model[:-len("_LAIN")], backbone_params, feature_map, args.gpu),
                                    batches, device, args.overhead_rounds)
    if args.kind == "ours":
        from lainctr.models import lain_parameter_count
        model = build_ours(args.model, params, feature_map, args.gpu)
        inputs = batches
        out = {"params_non_embedding": model.model.count_parameters(False),
               "params_lain": lain_parameter_count(model.model)}
    else:
        import importlib
        module = importlib.import_module(f"model_zoo.LongCTR.{args.model}.{args.model}")
        kwargs = {k: params[k] for k in SHARED_KEYS if k in params}
        kwargs.update(UPSTREAM_EXTRA.get(args.model, {}))
        model = getattr(module, args.model)(feature_map, gpu=args.gpu, optimizer="adam", loss="binary_crossentropy",
                                            metrics=["AUC"], verbose=0, model_root=params["model_root"], **kwargs)
        model._batch_index, model._steps_per_epoch, model._max_gradient_norm = 0, 1, 10.0
        inputs = [(dict(b.batch_dict), dict(b.item_dict), b.mask) for b in batches]
        out = {}
    model.optimizer.zero_grad()
    train_step, infer = step_functions(model, upstream=args.kind != "ours")
    out["train"] = args.batch_size / timed(train_step, inputs, device)
    out["infer"] = args.batch_size / timed(infer, inputs, device)
    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def run_cell(args, kind: str, model: str, max_len: int, data: str, parquet: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--max_len", str(max_len), "--data", data,
           "--parquet", parquet, "--batch_size", str(args.batch_size), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--gpu", str(args.gpu), "--overhead_rounds", str(args.overhead_rounds)]
    cmd += ["--lain_preset", args.lain_preset] if args.lain_preset else []
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {args.timeout}s"}
    if done.returncode != 0:
        if "No module named 'model_zoo" in done.stderr:
            return {}
        return {"error": done.stderr.strip().splitlines()[-1][:120] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of_processes(cells: list) -> dict:
    """One cell's result from several processes: the median of every number (a process can come out up to 2x
    slower than the next on this machine, e.g. from where its memory lands); an error if every run failed."""
    good = [c for c in cells if c and "error" not in c]
    if not good:
        return cells[0]
    return {key: statistics.median(c[key] for c in good if key in c) for key in good[0]}


def run_model_cells(args, model: str, max_len: int, data: str, parquet: str, upstream: bool) -> tuple:
    """(ours, upstream) of one model, each the median over ``--processes`` processes, ours and upstream
    alternating so that slow phases of the machine hit both."""
    ours, theirs = [], []
    for _ in range(args.processes):
        ours.append(run_cell(args, "ours", model, max_len, data, parquet))
        if upstream:
            theirs.append(run_cell(args, "upstream", model, max_len, data, parquet))
    return median_of_processes(ours), (median_of_processes(theirs) if upstream else None)


def export_parquet(data_dir: str, out_dir: str) -> None:
    """user_info / item_info parquet files for the upstream collator (same sequences and items)."""
    from loader_benchmark import export_user_item_info  # imported here: the workers set OpenMP first

    from lainctr.data.dataset import load_dataset
    export_user_item_info(load_dataset(data_dir, splits=("train",), validate=False), out_dir)


def fmt(value, digits=0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else ""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--max_len", type=int, nargs="+", default=[50, 200, 1000, 5000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--overhead_rounds", type=int, default=20,
                        help="interleaved backbone/LAIN step pairs per LAIN overhead cell")
    parser.add_argument("--processes", type=int, default=3,
                        help="processes per ours/upstream cell; the table shows their medians")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--upstream_limit", nargs="*", default=["DIEN=1000"],
                        help="MODEL=MAX_LEN: skip slower upstream cells beyond this max_len")
    parser.add_argument("--no_upstream", action="store_true")
    parser.add_argument("--lain_preset", default=None, choices=sorted(LAIN_PRESETS),
                        help="LAIN size preset of the _LAIN models (default: their expids', lean)")
    parser.add_argument("--out", default=None, help="also write the tables (Markdown) and raw JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.kind, args.max_len = args.worker, args.max_len[0]
        print(json.dumps(worker(args)))
        return
    limits = {k: int(v) for k, v in (item.split("=") for item in args.upstream_limit)}
    results = {}
    lines = [f"batch {args.batch_size}, {args.threads} torch threads, device {'cuda:%d' % args.gpu if args.gpu >= 0 else 'cpu'}, "
             f"median of {args.repeats} batches after 1 warm-up, median of {args.processes} processes; samples/s", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for max_len in args.max_len:
            data = build_data(os.path.join(tmp, f"L{max_len}"), max_len)
            parquet = os.path.join(tmp, f"P{max_len}")
            os.makedirs(parquet)
            export_parquet(data, parquet)
            results[("loader", max_len)] = median_of_processes(
                [run_cell(args, "loader", "-", max_len, data, parquet) for _ in range(args.processes)])
            for model in args.models:
                upstream = not args.no_upstream and not model.endswith("_LAIN") and max_len <= limits.get(model, 10 ** 9)
                results[(model, max_len)], up = run_model_cells(args, model, max_len, data, parquet, upstream)
                if up is not None:
                    results[(model, max_len, "up")] = up
                if model.endswith("_LAIN") and model[:-5] in args.models:
                    results[(model, max_len, "overhead")] = run_cell(args, "overhead", model, max_len, data, parquet)
                print(f"done {model} @ {max_len}: {results[(model, max_len)]} {results.get((model, max_len, 'up'), '')}",
                      file=sys.stderr, flush=True)
    lines += ["| max_len | loader ours | loader upstream | ratio |", "|---|---|---|---|"]
    for max_len in args.max_len:
        cell = results[("loader", max_len)]
        lines.append(f"| {max_len} | {fmt(cell.get('loader_ours'))} | {fmt(cell.get('loader_upstream'))} | "
                     f"{ratio(cell.get('loader_ours'), cell.get('loader_upstream'))} |")
    lines += ["", "| model | max_len | train ours | train upstream | ratio | infer ours | infer upstream | ratio | "
              "peak RSS MB | peak GPU MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model in args.models:
        for max_len in args.max_len:
            ours, up = results[(model, max_len)], results.get((model, max_len, "up"), {})
            note = ours.get("error", "") or up.get("error", "")
            lines.append(f"| {model} | {max_len} | {fmt(ours.get('train'))} | {fmt(up.get('train'))} | "
                         f"{ratio(ours.get('train'), up.get('train'))} | {fmt(ours.get('infer'))} | {fmt(up.get('infer'))} | "
                         f"{ratio(ours.get('infer'), up.get('infer'))} | {fmt(ours.get('peak_rss_mb'))} | "
                         f"{fmt(ours.get('peak_gpu_mb'))} |" + (f" {note}" if note else ""))
    lines += ["", f"LAIN overhead (variant / backbone, preset {args.lain_preset or 'of the expids'}): time per train step and "
              f"per inference batch (median of {args.overhead_rounds} interleaved step pairs in one process), "
              "non-embedding parameters", "",
              "| model | max_len | train time | infer time | extra params |", "|---|---|---|---|---|"]
    for model in [m for m in args.models if m.endswith("_LAIN") and m[:-5] in args.models]:
        for max_len in args.max_len:
            lain, overhead = results[(model, max_len)], results[(model, max_len, "overhead")]
            if "train_ratio" in overhead and "params_lain" in lain:
                extra = lain["params_lain"] / max(lain["params_non_embedding"] - lain["params_lain"], 1)
                lines.append(f"| {model} | {max_len} | {overhead['train_ratio']:.3f} | {overhead['infer_ratio']:.3f} | "
                             f"+{100 * extra:.2f} % |")
            else:
                lines.append(f"| {model} | {max_len} | | | | {overhead.get('error', '') or lain.get('error', '')}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as fd:
            fd.write(report + "\n")
        with open(os.path.splitext(args.out)[0] + ".json", "w") as fd:
            json.dump({"|".join(map(str, k)): v for k, v in results.items()}, fd, indent=1)


if __name__ == "__main__":
    main()
