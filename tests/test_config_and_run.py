"""Expid lookup and key checks; run_expid.py end to end: results row, determinism, clear errors."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import run_expid
from lainctr import config, metrics
from lainctr.analysis.predictions import read_predictions
from lainctr.cpu_kernels import kernel_fingerprint
from lainctr.experiment import DatasetStaleError, ensure_dataset, run_experiment
from lainctr.models import model_keys


def test_every_expid_loads_with_known_keys():
    from lainctr.registry import get_model
    expids = config.list_expids()
    assert {"DIN_synthetic", "DIN_LAIN_synthetic", "DIN_synthetic_tiny"} <= set(expids)
    for expid in expids:
        params = config.load_config(expid)
        config.split_params(params, model_keys(get_model(params["model"])))
        assert params["expid"] == expid and "dataset_id" in params


def test_expid_block_wins_over_base():
    params = config.load_config("DIN_synthetic_tiny")
    assert params["max_len"] == 100 and params["epochs"] == 3     # Base says 200 / 10
    assert params["length_buckets"] == [100, 200]


def write_configs(tmp_path, block):
    (tmp_path / "model_config.yaml").write_text(textwrap.dedent(block))
    return str(tmp_path)


def test_misspelled_key_is_an_error(tmp_path, data_root):
    config_dir = write_configs(tmp_path, """
        DIN_typo:
          model: DIN
          dataset_id: synthetic_tiny
          attention_hiden_units: [8]
    """)
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['attention_hiden_units'\].*attention_hidden_units"):
        run_experiment("DIN_typo", config_dir=config_dir, data_root=str(data_root))


def test_unknown_expid_and_dataset(tmp_path, capsys):
    with pytest.raises(config.ConfigError, match="unknown expid 'DIN_nope'"):
        config.load_config("DIN_nope")
    config_dir = write_configs(tmp_path, """
        DIN_other:
          model: DIN
          dataset_id: nowhere
    """)
    assert run_expid.main(["--expid", "DIN_other", "--config", config_dir]) == 2
    assert "unknown dataset_id 'nowhere'" in capsys.readouterr().err


def test_missing_real_dataset_says_what_to_download(tmp_path, capsys):
    (tmp_path / "dataset_config.yaml").write_text(textwrap.dedent("""
        realdata:
          data_dir: RealData_x1
          download: "Get RealData_x1 from https://example.org/realdata"
          preprocess: python -m data_preprocess.realdata --input DOWNLOAD --output DATA/RealData_x1
    """))
    write_configs(tmp_path, """
        DIN_realdata:
          model: DIN
          dataset_id: realdata
    """)
    code = run_expid.main(["--expid", "DIN_realdata", "--config", str(tmp_path), "--data_root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "RealData_x1" in err and "https://example.org/realdata" in err and "python -m data_preprocess.realdata" in err
    (tmp_path / "data" / "RealData_x1").mkdir(parents=True)              # there, but without dataset_info.json
    (tmp_path / "data" / "RealData_x1" / "train.h5").write_bytes(b"")
    assert run_expid.main(["--expid", "DIN_realdata", "--config", str(tmp_path), "--data_root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "an incomplete dataset folder (dataset_info.json missing" in err and "python -m data_preprocess.realdata" in err


def test_a_generated_dataset_of_other_settings_is_refused_not_used(tmp_path):
    """A synthetic folder generated with other builder_args (or by an older generator without a setting) is an
    error naming the dataset_info.json, each differing setting and how to regenerate; the folder is untouched."""
    tiny = {"data_dir": "tiny", "builder": "synthetic", "builder_args": {"preset": "tiny", "seed": 2026}}
    folder = ensure_dataset("tiny", tiny, str(tmp_path))
    assert ensure_dataset("tiny", tiny, str(tmp_path)) == folder
    info_file = os.path.join(folder, "dataset_info.json")
    before = open(info_file).read()
    reseeded = dict(tiny, builder_args={"preset": "tiny", "seed": 7})
    with pytest.raises(DatasetStaleError, match=r"dataset_info.json: dataset 'tiny' .*seed: 2026 -> 7\). Remove the folder"):
        ensure_dataset("tiny", reseeded, str(tmp_path))
    shifted = dict(tiny, builder_args={"preset": "tiny", "seed": 2026, "length_shift": {"anchor_share": 0.7}})
    with pytest.raises(DatasetStaleError, match=r'length_shift.anchor_match: "\(absent\)" -> "category"'):
        ensure_dataset("tiny", shifted, str(tmp_path))
    assert open(info_file).read() == before


def test_run_expid_on_a_stale_generated_dataset_exits_with_the_message(tmp_path, capsys):
    ensure_dataset("tiny", {"data_dir": "tiny", "builder": "synthetic", "builder_args": {"preset": "tiny"}},
                   str(tmp_path / "data"))
    (tmp_path / "dataset_config.yaml").write_text(
        "tiny: {data_dir: tiny, builder: synthetic, builder_args: {preset: tiny, seed: 5}}\n")
    write_configs(tmp_path, "DIN_tiny: {model: DIN, dataset_id: tiny, max_len: 20, epochs: 1}\n")
    code = run_expid.main(["--expid", "DIN_tiny", "--config", str(tmp_path), "--data_root", str(tmp_path / "data")])
    assert code == 2 and "seed: 2026 -> 5" in capsys.readouterr().err


def test_run_expid_appends_rows_and_same_seed_same_metrics(tmp_path, data_root):
    results = tmp_path / "results.csv"
    (tmp_path / "cfg").mkdir()
    config_dir = write_configs(tmp_path / "cfg", """
        DIN_LAIN_synthetic_tiny_fast:
          model: DIN_LAIN
          dataset_id: synthetic_tiny
          embedding_dim: 8
          dnn_hidden_units: [32]
          max_len: 50
          epochs: 1
          verbose: 0
    """)
    args = ["--expid", "DIN_LAIN_synthetic_tiny_fast", "--config", config_dir, "--data_root", str(data_root),
            "--results", str(results), "--seed", "7"]
    assert run_expid.main(args) == 0
    assert run_expid.main(args) == 0
    with open(results) as fd:
        rows = list(csv.DictReader(fd))
    assert len(rows) == 2
    metric_columns = [c for c in rows[0] if c.startswith(("valid_", "test_"))]
    assert {"test_AUC", "test_gAUC", "test_logloss", "test_AUC@0-100", "test_gAUC@200-inf",
            "test_samples@100-200", "valid_logloss@100-200"} <= set(metric_columns)
    assert all(rows[0][c] == rows[1][c] for c in metric_columns)
    assert rows[0]["seed"] == "7" and rows[0]["model"] == "DIN_LAIN" and rows[0]["backbone"] == "DIN"
    assert '"fuxictr"' in rows[0]["versions"] and '"max_len": 50' in rows[0]["params"]
    head = subprocess.run(["git", "-C", os.path.dirname(run_expid.__file__), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert json.loads(rows[0]["versions"])["commit"].split("+")[0] == head  # the code that made the row
    assert json.loads(rows[0]["versions"])["torch_threads"] == torch.get_num_threads()
    assert json.loads(rows[0]["versions"])["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert json.loads(rows[0]["versions"])["cpu_kernels"] == kernel_fingerprint()
    assert run_expid.main(args + ["--ablation", "wo_prompts"]) == 0
    with open(results) as fd:
        ablation = list(csv.DictReader(fd))[-1]
    assert ablation["tag"] == "ablation:wo_prompts" and "wo_prompts" in ablation["checkpoint"]
    assert ablation["checkpoint"] != rows[0]["checkpoint"] and os.path.exists(rows[0]["checkpoint"])


def test_runs_of_one_expid_and_seed_keep_their_own_files(data_root, tmp_path):
    """A re-tuned config under the same expid and seed: two runs, two run directories; each row's
    checkpoint, log and best validation AUC are its own (they used to share <expid>_seed<N>.*)."""
    results = str(tmp_path / "r.csv")
    rows = [run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=results,
                           overrides={"epochs": 1, "max_len": 20, "learning_rate": lr, "model_root": str(tmp_path),
                                      "verbose": 1})
            for lr in (0.01, 0.001)]
    assert rows[0]["run_dir"] != rows[1]["run_dir"] and rows[0]["checkpoint"] != rows[1]["checkpoint"]
    for row, lr in zip(rows, ("0.01", "0.001")):
        assert os.path.dirname(row["checkpoint"]) == row["run_dir"] and os.path.exists(row["checkpoint"])
        log = open(os.path.join(row["run_dir"], "train.log")).read()
        assert f'"learning_rate": {lr}' in log
        history = json.load(open(row["history_file"]))
        assert history[-1]["valid_AUC"] == pytest.approx(row["valid_AUC"])   # its own best, reloaded
        # its kept test predictions are exactly what its test metrics were computed from
        assert os.path.dirname(row["predictions_file"]) == row["run_dir"]
        kept = read_predictions(row["predictions_file"])
        y, p = kept["label"].astype(np.float64), kept["score"].astype(np.float64)
        assert metrics.auc(y, p) == row["test_AUC"] and metrics.logloss(y, p) == row["test_logloss"]
        assert metrics.gauc(y, p, kept["user_index"]) == row["test_gAUC"]
        assert int((kept["history_length"] < 100).sum()) == row["test_samples@0-100"]


def test_a_run_never_evaluates_a_checkpoint_it_did_not_write(data_root, tmp_path):
    """epochs < 1 is refused; eval_steps beyond the run's steps writes no checkpoint: the run fails (and appends
    no row) instead of evaluating another run's file."""
    from lainctr.trainer import TrainingError
    from lainctr.training_options import OptionError
    results = tmp_path / "r.csv"
    base = {"max_len": 20, "model_root": str(tmp_path), "verbose": 0}
    run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(results),
                   overrides=dict(base, epochs=1))
    for epochs in (0, -1):
        with pytest.raises(OptionError, match=f"epochs: {epochs} "):
            run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(results),
                           overrides=dict(base, epochs=epochs))
    with pytest.raises(TrainingError, match="no checkpoint was written: eval_steps=100000"):
        run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=str(results),
                       overrides=dict(base, epochs=1, eval_steps=100000))
    assert len(list(csv.DictReader(open(results)))) == 1


@pytest.mark.parametrize("key,value,expected", [("learning_rate", "fast", "a number > 0"),
                                                ("learning_rate", "1e-3", "YAML reads 1e-3 as a string"),
                                                ("optimizer", "adamm", "one of"), ("early_stop_patience", 1.5, "integer"),
                                                ("loss", "__import__('os').system('touch PWNED')", "one of")])
def test_wrong_option_types_name_key_value_and_expectation(key, value, expected, data_root, tmp_path, capsys):
    config_dir = write_configs(tmp_path, f"""
        DIN_bad:
          model: DIN
          dataset_id: synthetic_tiny
          {key}: {value!r}
    """)
    assert run_expid.main(["--expid", "DIN_bad", "--config", config_dir, "--data_root", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {key}: {value!r}") and expected in err
    assert not os.path.exists("PWNED") and not os.path.exists(os.path.join(config.zoo_root(), "PWNED"))


def test_dataset_registered_in_datasets_local_yaml_runs(tmp_path, monkeypatch):
    """data_preprocess/README.md step 3: a dataset added in config/datasets_local.yaml (every
    config/datasets_*.yaml is read) runs with an expid of the user's own (it used to be 'unknown dataset_id')."""
    zoo = tmp_path / "zoo"
    (zoo / "config").mkdir(parents=True)
    for name in ("base_config.yaml", "dataset_config.yaml"):
        (zoo / "config" / name).write_text(open(os.path.join(config.zoo_root(), "config", name)).read())
    (zoo / "model_zoo").symlink_to(os.path.join(config.zoo_root(), "model_zoo"))
    (zoo / "config" / "datasets_local.yaml").write_text(
        "my_tiny: {builder: synthetic, builder_args: {preset: tiny, seed: 1}, length_buckets: [50]}\n")
    monkeypatch.setenv("LAINCTR_ZOO_ROOT", str(zoo))
    assert "my_tiny" in config.dataset_configs() and "synthetic" in config.dataset_configs()
    expids = write_configs(tmp_path, """
        DIN_my_tiny: {model: DIN, dataset_id: my_tiny, max_len: 20, epochs: 1, verbose: 0}
    """)
    row = run_experiment("DIN_my_tiny", config_dir=expids, data_root=str(tmp_path / "data"),
                         results_file=str(tmp_path / "r.csv"), overrides={"model_root": str(tmp_path)})
    assert row["dataset_id"] == "my_tiny" and "test_AUC@50-inf" in row
    (zoo / "config" / "datasets_more.yaml").write_text("my_tiny:\n  data_dir: elsewhere\n")
    with pytest.raises(config.ConfigError, match="'my_tiny' is defined in both"):
        config.dataset_configs()


def test_reading_configs_does_not_load_torch():
    """The config layer (expids, datasets, option checks) is usable without torch and FuxiCTR."""
    code = ("import sys; from lainctr import config; config.load_config('TWIN_LAIN_kuaivideo'); "
            "config.dataset_configs(); print('torch' in sys.modules, 'fuxictr' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=config.zoo_root())
    assert done.stdout.split() == ["False", "False"]


def test_end_of_run_table_and_readable_non_tty_log(data_root, tmp_path):
    """The run ends with a table of every split and bucket at INFO (next to the backbone's latest row for a
    LAIN expid), and a non-interactive log holds no progress-bar frames: a bounded number of lines per epoch."""
    results = str(tmp_path / "r.csv")
    common = {"epochs": 2, "max_len": 20, "model_root": str(tmp_path), "verbose": 1}
    run_experiment("DIN_synthetic_tiny", data_root=str(data_root), results_file=results, overrides=common)
    row = run_experiment("DIN_LAIN_synthetic_tiny", data_root=str(data_root), results_file=results, overrides=common)
    log = open(os.path.join(row["run_dir"], "train.log")).read()
    assert "\r" not in log and "it/s" not in log and len(log.splitlines()) < 20 * common["epochs"] + 20
    table = log[log.index("backbone: DIN_synthetic_tiny"):]
    for split in ("valid", "test"):
        for bucket in ("all", "0-100", "100-200", "200-inf"):
            assert any(line.split()[:2] == [split, bucket] for line in table.splitlines())
    assert "base AUC" in table and f"{row['test_AUC']:.4f}" in table


def test_user_expids_join_the_zoo_and_inherit_from_a_zoo_expid(tmp_path, data_root, capsys):
    """--config DIR adds expids (the zoo's stay available); base_expid takes a zoo expid's keys plus overrides;
    a setting the user's dataset cannot take is a one-line error naming the key and the dataset's columns."""
    config_dir = write_configs(tmp_path, """
        TWIN_LAIN_mine:
          base_expid: TWIN_LAIN_synthetic_tiny
          max_len: 20
          topk: 5
        SIM_hard_mine:
          base_expid: SIM_synthetic_tiny
          gsu_mode: hard
          gsu_loss: False
          hard_search_feature: genre
        Loop_a: {base_expid: Loop_b}
        Loop_b: {base_expid: Loop_a}
    """)
    assert {"TWIN_LAIN_mine", "DIN_synthetic_tiny"} <= set(config.list_expids(config_dir))
    zoo, mine = config.load_config("TWIN_LAIN_synthetic_tiny"), config.load_config("TWIN_LAIN_mine", config_dir)
    assert {k: v for k, v in mine.items() if k not in ("expid", "_config_file", "max_len", "topk")} == \
        {k: v for k, v in zoo.items() if k not in ("expid", "_config_file", "max_len", "topk")}
    assert (mine["max_len"], mine["topk"], zoo["topk"]) == (20, 5, 20)
    with pytest.raises(config.ConfigError, match="loops: Loop_a -> Loop_b -> Loop_a"):
        config.load_config("Loop_a", config_dir)
    assert run_expid.main(["--expid", "SIM_hard_mine", "--config", config_dir, "--data_root", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hard_search_feature 'genre'" in err and "item_id" in err and "cate_id" in err


def test_code_commit_is_dirty_for_code_changes_but_not_for_kept_results_under_docs(tmp_path, monkeypatch):
    """A study appends to its kept results under docs/ as it runs: that must not mark its later rows' commit
    '+dirty'; a change to any other tracked file must."""
    from lainctr.experiment import _code_commit
    repo = tmp_path / "zoo"
    (repo / "docs").mkdir(parents=True)
    (repo / "lainctr").mkdir()
    (repo / "docs" / "results.csv").write_text("a\n")
    (repo / "lainctr" / "model.py").write_text("x = 1\n")

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    monkeypatch.setenv("LAINCTR_ZOO_ROOT", str(repo))
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (repo / "docs" / "results.csv").write_text("a\nb\n")
    (repo / "notes.txt").write_text("untracked\n")
    assert _code_commit() == head
    (repo / "lainctr" / "model.py").write_text("x = 2\n")
    assert _code_commit() == head + "+dirty"


def test_rows_name_the_commit_of_the_code_the_process_imported(tmp_path):
    """A study's worker that imported the code, then saw a commit land, still runs the old code: its rows say so."""
    repo = tmp_path / "zoo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)
    (repo / "model.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "imported")
    script = textwrap.dedent(f"""
        import subprocess
        from lainctr import experiment
        with open({str(repo / "model.py")!r}, "w") as fd:
            fd.write("x = 2\\n")
        subprocess.run(["git", "-C", {str(repo)!r}, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                        "-am", "landed later"], check=True)
        print(experiment._versions()["commit"], experiment._code_commit())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "LAINCTR_ZOO_ROOT": str(repo)}, cwd=os.path.dirname(run_expid.__file__))
    in_row, now = done.stdout.split()
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%h", "--abbrev=12"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert (in_row, now) == (log[1], log[0])
