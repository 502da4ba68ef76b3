"""Every real-dataset expid runs end to end once its data is in place (fixtures in the published formats,
converted by the project's preprocessor), and a missing dataset says what to download."""
import math

import pytest
from fixtures_formats import write_longctr, write_longctr_ebnerd

import run_expid
from data_preprocess import longctr_parquet
from lainctr import config
from lainctr.experiment import run_experiment
from lainctr.models import model_keys
from lainctr.registry import available_models, get_model

DATASETS = {"kuaivideo": ("KuaiVideo_x2", write_longctr), "microvideo": ("MicroVideo1.7M_x2", write_longctr),
            "ebnerd": ("Ebnerd_small_x1", write_longctr_ebnerd)}
# small sizes: the fixtures hold a handful of samples; everything else stays as configured
SMALL = {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "dnn_hidden_units": [16], "attention_dim": 16,
         "max_len": 8, "short_seq_len": 4, "verbose": 0}


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for dataset_id, (folder, writer) in DATASETS.items():
        raw = writer(str(root / "download" / folder))
        longctr_parquet.main(["--input", raw, "--output", str(root / folder), "--dataset_id", dataset_id, "--no_progress"])
    return root


def real_expids():
    return [e for e in config.list_expids() if config.load_config(e)["dataset_id"] in DATASETS]


@pytest.mark.parametrize("expid", real_expids())
def test_real_expid_runs(expid, real_root, tmp_path):
    overrides = dict(SMALL, model_root=str(tmp_path))
    keys = model_keys(get_model(config.load_config(expid)["model"]))
    overrides = {k: v for k, v in overrides.items() if k in keys or k in config.RUN_KEYS or k in config.TRAINER_KEYS}
    if "topk" in keys:
        overrides["topk"] = 3
    row = run_experiment(expid, data_root=str(real_root), overrides=overrides, results_file=str(tmp_path / "r.csv"))
    assert math.isfinite(row["test_logloss"]) and row["dataset_id"] == config.load_config(expid)["dataset_id"]


def test_every_model_has_every_real_dataset():
    expids = set(config.list_expids())
    for model in available_models():
        for dataset in DATASETS:
            assert f"{model}_{dataset}" in expids, f"{model} has no {dataset} expid"


def test_missing_real_data_prints_download_and_command(tmp_path, capsys):
    assert run_expid.main(["--expid", "DIN_LAIN_kuaivideo", "--data_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "huggingface.co/datasets/reczoo/KuaiVideo_x2" in err
    assert "python -m data_preprocess.longctr_parquet" in err and str(tmp_path) in err
    assert not any(tmp_path.iterdir())   # nothing half-written
