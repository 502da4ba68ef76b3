"""DIEN throughput: ours (left-aligned rows, nn.GRU + AUGRU loop over the recurrent part) vs upstream LongCTR DIEN.

    .venv/bin/python benchmarks/dien_speed.py --max_len 50 200 1000 --batch_size 256 --threads 2

Builds the synthetic ``demo`` dataset in a temporary folder and times the same batches of its
longest-history train samples (most rows are then full at every max_len: the worst case for the GRUs)
for: a training step (forward, BCE + auxiliary loss, backward, Adam step) and an inference forward
(eval mode, no autograd), as samples/s. Ours = the ``DIEN_synthetic`` / ``DIEN_LAIN_synthetic`` settings
(din_attention [64] ReLU, softmax, auxiliary loss, short branch) and "DIEN lean" (no auxiliary loss, no short
branch: upstream's structure); upstream = ``model_zoo.LongCTR.DIEN.DIEN`` with the same embedding, attention
and DNN sizes. Upstream is slow at long lengths, so it is timed on fewer batches there
(``--upstream_batches``).
"""
from __future__ import annotations

import os

# Short OpenMP spinning and reusing malloc (lainctr/runtime.py), before torch loads. Set
# OMP_WAIT_POLICY / GOMP_SPINCOUNT yourself to measure other settings.
from lainctr.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Callable, List  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fuxictr.features import FeatureMap  # noqa: E402

from lainctr.data import synthetic  # noqa: E402
from lainctr.data.dataset import load_dataset  # noqa: E402
from lainctr.data.loader import SequenceBatch, SequenceBatchLoader  # noqa: E402
from lainctr.registry import get_model  # noqa: E402
from lainctr.trainer import Trainer  # noqa: E402

COMMON = dict(embedding_dim=16, dnn_hidden_units=[256, 128], net_dropout=0.1, batch_norm=False,
              optimizer="adam", loss="binary_crossentropy", verbose=0)
OURS = dict(attention_type="din_attention", attention_hidden_units=[64], attention_hidden_activations="ReLU",
            use_attention_softmax=True, use_auxiliary_loss=True, use_short_branch=True, short_seq_len=50)


def timed(step: Callable[[SequenceBatch], None], batches: List[SequenceBatch], warmup: bool) -> float:
    """Samples per second of ``step``: batch size / median seconds per batch (after an untimed warm-up
    batch if asked; the median resists the spikes of a shared machine)."""
    if warmup:
        step(batches[0])
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        step(batch)
        seconds.append(time.perf_counter() - start)
    return len(batches[0].mask) / statistics.median(seconds)


def ours_train_step(model) -> Callable:
    trainer = Trainer(model, model.trainer_options)

    def step(batch) -> None:
        model.train()
        trainer.train_step(batch, 0, 1)
    return step


def train_step(model, to_input: Callable = lambda b: b) -> Callable:
    """A training step of an upstream (FuxiCTR) model."""
    def step(batch) -> None:
        model.train()
        out = model(to_input(batch))
        loss = model.compute_loss(out, model.get_labels(to_input(batch)))
        loss.backward()
        model.optimizer.step()
        model.optimizer.zero_grad()
    return step


def inference_step(model, to_input: Callable = lambda b: b) -> Callable:
    def step(batch) -> None:
        model.eval()
        with torch.no_grad():
            model(to_input(batch))
    return step


def upstream_input(batch: SequenceBatch):
    return dict(batch.batch_dict), dict(batch.item_dict), batch.mask


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_len", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=5, help="timed batches of ours per setting")
    parser.add_argument("--upstream_batches", type=int, nargs=2, default=[3, 1], metavar=("SHORT", "LONG"),
                        help="timed upstream batches at max_len < 1000 / >= 1000")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no_upstream", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from model_zoo.LongCTR.DIEN.DIEN import DIEN as UpstreamDIEN
    except ImportError:
        UpstreamDIEN = None
    if args.no_upstream:
        UpstreamDIEN = None
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = synthetic.build(os.path.join(tmp, "synthetic"), "demo", show_progress=False)
        dataset = load_dataset(data_dir)
        feature_map = FeatureMap("synthetic", data_dir)
        feature_map.load(os.path.join(data_dir, "feature_map.json"), {"embedding_dim": 16, "group_id": "user_index"})
        seq_len = dataset.splits["train"]["seq_len"]
        rows = np.argsort(-seq_len, kind="stable")[:args.batches * args.batch_size]
        print(f"DIEN speed: batch {args.batch_size}, {args.threads} threads "
              f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}), "
              f"torch {torch.__version__}, "
              f"longest-history train samples (seq_len {seq_len[rows].min()}..{seq_len[rows].max()})")
        variants = {"DIEN": dict(model="DIEN"), "DIEN lean": dict(model="DIEN", use_auxiliary_loss=False,
                                                                   use_short_branch=False),
                    "DIEN_LAIN": dict(model="DIEN_LAIN")}
        columns = [f"{v} {m}" for v in [*variants, "upstream"] for m in ("train", "infer")]
        header = f"{'max_len':>7} {'T':>5} {'mean L':>6} | " + " ".join(f"{c:>15}" for c in columns) + \
            f" | {'train x':>7} {'infer x':>7}"
        print("DIEN lean = ours without the auxiliary loss and the short branch (upstream's structure); "
              "x = DIEN / upstream")
        print(header + "\n" + "-" * len(header))
        for max_len in args.max_len:
            loader = SequenceBatchLoader(dataset, "train", args.batch_size, max_len)
            batches = [loader.make_batch(rows[i:i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]
            rates = []
            for variant in variants.values():
                torch.manual_seed(0)
                settings = {**COMMON, **OURS, **variant}
                model = get_model(settings.pop("model"))(feature_map, model_root=tmp, max_len=max_len, **settings)
                rates += [timed(ours_train_step(model), batches, True), timed(inference_step(model), batches, True)]
            rates += [float("nan"), float("nan")]
            if UpstreamDIEN is not None:
                upstream = UpstreamDIEN(feature_map, model_root=tmp, metrics=["AUC"], attention_type="din_attention",
                                        attention_hidden_units=[64], attention_activation="ReLU",
                                        use_attention_softmax=True, **COMMON)
                few = batches[:args.upstream_batches[max_len >= 1000]]
                first = max_len == args.max_len[0]
                rates[-2:] = [timed(train_step(upstream, upstream_input), few, first),
                              timed(inference_step(upstream, upstream_input), few, first)]
            mask = batches[0].mask
            print(f"{max_len:>7} {mask.shape[1]:>5} {mask.sum(1).mean().item():>6.0f} | "
                  + " ".join(f"{r:>15,.1f}" for r in rates)
                  + f" | {rates[0] / rates[-2]:>7.1f} {rates[1] / rates[-1]:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
