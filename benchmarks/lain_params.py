"""LAIN's parameter overhead at the real datasets' settings (the ``<Model>_{kuaivideo,microvideo,ebnerd}`` expids).

    .venv/bin/python benchmarks/lain_params.py

Non-embedding parameters do not depend on the data's contents, only on its schema, so the models are built on
small files in each release's format (``tests/fixtures_formats.py``) converted by the project's preprocessor.
Prints, per dataset and LAIN size preset (``lean``, ``paper``), every backbone's non-embedding parameters, its
``_LAIN`` variant's extra parameters and their share, and where the extra parameters sit.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from fixtures_formats import write_longctr, write_longctr_ebnerd  # noqa: E402

from data_preprocess import longctr_parquet  # noqa: E402
from lainctr import config  # noqa: E402
from lainctr.experiment import build_model, load_feature_map  # noqa: E402
from lainctr.lain_presets import LAIN_PRESETS  # noqa: E402
from lainctr.models import lain_parameter_count, lain_parameters  # noqa: E402

DATASETS = {"kuaivideo": ("KuaiVideo_x2", write_longctr), "microvideo": ("MicroVideo1.7M_x2", write_longctr),
            "ebnerd": ("Ebnerd_small_x1", write_longctr_ebnerd)}
BACKBONES = ["DIN", "DIEN", "SIM", "SDIM", "TWIN"]


def build(expid: str, data_dir: str, model_root: str, **overrides):
    params = config.load_config(expid)
    params.update(model_root=model_root, verbose=0, **overrides)
    return build_model(params, load_feature_map(str(params["dataset_id"]), data_dir, params))[0]


def lain_breakdown(model) -> Counter:
    """LAIN's parameters by module kind (length encoder, prompts, e_len projection, shifts, temperatures)."""
    lain_ids = {id(p) for p in lain_parameters(model)}
    parts = Counter()
    for name, p in model.named_parameters():
        if id(p) in lain_ids:
            kind = ("length encoder" if ".length_encoder." in name else "prompts" if ".prompt_generators." in name
                    else "e_len projection" if ".length_projection." in name
                    else "temperature" if ".temperature." in name else "query/key shifts")
            parts[kind] += p.numel()
    return parts


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print("| dataset | model | preset | non-embedding params | LAIN extra | share | where |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset_id, (folder, writer) in DATASETS.items():
            raw = writer(os.path.join(tmp, "download", folder))
            with contextlib.redirect_stdout(io.StringIO()):                       # the converter's summary
                longctr_parquet.main(["--input", raw, "--output", os.path.join(tmp, folder), "--dataset_id", dataset_id,
                                      "--no_progress"])
            for backbone in BACKBONES:
                base = build(f"{backbone}_{dataset_id}", os.path.join(tmp, folder), tmp)
                dense = base.count_parameters(False)
                for preset in LAIN_PRESETS:
                    lain = build(f"{backbone}_LAIN_{dataset_id}", os.path.join(tmp, folder), tmp, lain_preset=preset)
                    extra = lain_parameter_count(lain)
                    assert lain.count_parameters(False) == dense + extra, "LAIN must only add parameters"
                    where = ", ".join(f"{k} {v:,}" for k, v in lain_breakdown(lain).most_common())
                    print(f"| {dataset_id} | {backbone} | {preset} | {dense:,} | +{extra:,} | {100 * extra / dense:.2f} % "
                          f"| {where} |")


if __name__ == "__main__":
    main()
