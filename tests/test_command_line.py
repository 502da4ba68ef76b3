"""Every command has a --help that names its inputs and outputs, and answers a user's mistake with one line
``error: ...`` and exit status 2 (no traceback, no usage block). In-process: each command's entry function."""
import importlib.util
import os

import pytest

from data_preprocess import bars_x1_csv, ebnerd_raw, longctr_parquet
from lainctr import export, leaderboard, predict, tuner
from lainctr.errors import exit_code

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_expid():
    spec = importlib.util.spec_from_file_location("run_expid", os.path.join(ZOO, "run_expid.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def preprocessor(module):
    return lambda argv: exit_code(module.main, argv)   # what its __main__ runs


COMMANDS = {   # name: (entry function, the words its --help must show: what it reads and what it writes)
    "run_expid.py": (_run_expid(), ["--expid", "--config", "--data_root", "results"]),
    "lainctr.leaderboard": (leaderboard.main, ["--results", "--out", "leaderboard.md"]),
    "lainctr.leaderboard report": (lambda argv: leaderboard.main(["report", *argv]), ["--results", "plots"]),
    "lainctr.tuner": (tuner.main, ["grid", "ablation"]),
    "lainctr.tuner grid": (lambda argv: tuner.main(["grid", *argv]), ["--config", "--out", "grid_summary"]),
    "lainctr.tuner ablation": (lambda argv: tuner.main(["ablation", *argv]), ["--expid", "--results", "--out"]),
    "data_preprocess.longctr_parquet": (preprocessor(longctr_parquet), ["--input", "--output", "train.parquet",
                                                                        "dataset folder"]),
    "data_preprocess.ebnerd_raw": (preprocessor(ebnerd_raw), ["--input", "--output", "behaviors.parquet",
                                                              "dataset folder"]),
    "data_preprocess.bars_x1_csv": (preprocessor(bars_x1_csv), ["--input", "--output", "train.csv", "dataset folder"]),
    "lainctr.predict": (predict.cli, ["--run_dir", "--expid", "--checkpoint", "--split", "--input", "--out",
                                      "score"]),
    "lainctr.export": (export.cli, ["--run_dir", "--expid", "--checkpoint", "--out", ".json", "onnx", "pt2"]),
}

MISTAKES = [   # (command, argv, what the line says)
    ("run_expid.py", ["--expid", "NoSuchModel_x"], "unknown expid 'NoSuchModel_x'"),
    ("run_expid.py", ["--expid", "DIN_synthetic_tiny", "--gpu", "x"], "argument --gpu: invalid int value"),
    ("run_expid.py", ["--expid", "DIN_synthetic_tiny", "--config", "/no/such/dir"], "--config /no/such/dir"),
    ("run_expid.py", [], "the following arguments are required: --expid"),
    ("lainctr.leaderboard", ["--results", "/no/such.csv", "--out", "{tmp}"], "/no/such.csv does not exist"),
    ("lainctr.leaderboard", ["--split", "train"], "argument --split: invalid choice"),
    ("lainctr.tuner", [], "the following arguments are required"),
    ("lainctr.tuner grid", ["--config", "/no/such.yaml"], "--config /no/such.yaml: no such file"),
    ("lainctr.tuner ablation", ["--expid", "NoSuchModel_x", "--rebuild"], "unknown expid 'NoSuchModel_x'"),
    ("data_preprocess.longctr_parquet", ["--input", "/no/such", "--output", "{tmp}/o", "--dataset_id", "x"],
     "train.parquet: file not found in /no/such"),
    ("data_preprocess.ebnerd_raw", ["--input", "/no/such"], "the following arguments are required: --output"),
    ("data_preprocess.bars_x1_csv", ["--layout", "tiktok", "--input", "x", "--output", "y"],
     "argument --layout: invalid choice"),
    ("lainctr.predict", ["--expid", "NoSuchModel_x", "--out", "{tmp}/s.csv"], "unknown expid 'NoSuchModel_x'"),
    ("lainctr.predict", ["--run_dir", "{tmp}", "--out", "{tmp}/s.txt"], "--out {tmp}/s.txt: must end in"),
    ("lainctr.predict", ["--run_dir", "{tmp}", "--split", "test", "--input", "x.csv", "--out", "s.csv"],
     "not allowed with argument"),
    ("lainctr.predict", ["--out", "{tmp}/s.csv"], "name the trained model"),
    ("lainctr.export", ["--run_dir", "{tmp}", "--out", "{tmp}/m.onnx"], "{tmp}/params.json: missing"),
    ("lainctr.export", ["--run_dir", "{tmp}", "--out", "m.onnx", "--format", "tflite"],
     "argument --format: invalid choice"),
]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_inputs_and_outputs(name, capsys):
    entry, words = COMMANDS[name]
    with pytest.raises(SystemExit) as stopped:
        entry(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    missing = [w for w in words if w not in shown]
    assert not missing, f"{name} --help does not mention {missing}"


@pytest.mark.parametrize("name,argv,message", MISTAKES)
def test_a_mistake_is_one_error_line_and_status_2(name, argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = COMMANDS[name][0](argv)
    except SystemExit as stopped:     # argparse's own errors exit from inside
        code = stopped.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message.replace("{tmp}", str(tmp_path)) in err, err
