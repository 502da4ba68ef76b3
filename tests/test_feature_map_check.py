"""feature_encoder strings are parsed against an allowlist, never evaluated."""
import json
import os
import shutil

import pytest

from lainctr.data.dataset import load_dataset
from lainctr.data.feature_map_check import FeatureEncoderError, check_feature_specs, encoder_problem


@pytest.mark.parametrize("expression", ["layers.MaskedAveragePooling()", "nn.Identity()",
                                        "nn.Linear(64, 64, bias=False)", "torch.nn.Dropout(p=0.1)",
                                        "nn.LeakyReLU(-0.5)", "layers.MaskedSumPooling()"])
def test_allowed_encoders(expression):
    assert encoder_problem(expression) is None


@pytest.mark.parametrize("expression,problem", [
    ("__import__('os').system('touch X')", "not a class of torch.nn"),
    ("nn.Linear(__import__('os').system('x'), 2)", "arguments must be numbers"),
    ("nn.Linear(64, 64, **{'bias': False})", "arguments must be numbers"),
    ("nn.Linear(64, 64, bias='x')", "arguments must be numbers"),
    ("nn.functional.relu(1)", "not a class of torch.nn"),
    ("nn.init.normal_(1)", "not a class of torch.nn"),
    ("os.system('x')", "not a class of torch.nn"),
    ("nn.Identity", "not a call"),
    ("nn.Identity(); 1", "not a Python expression"),
    (3, "a int, not a string"),
])
def test_refused_encoders(expression, problem):
    assert problem in encoder_problem(expression)


def test_code_in_a_dataset_feature_map_is_refused_and_not_run(tiny_dir, tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    shutil.copytree(tiny_dir, folder)
    monkeypatch.chdir(tmp_path)
    path = folder / "feature_map.json"
    feature_map = json.loads(path.read_text())
    payload = "__import__('os').system('touch X')"
    feature_map["features"][-1]["cate_id"]["feature_encoder"] = payload
    path.write_text(json.dumps(feature_map))
    with pytest.raises(FeatureEncoderError) as error:
        load_dataset(str(folder))
    assert str(error.value).startswith(f"{path}: feature 'cate_id': feature_encoder {payload!r} is not allowed")
    assert not os.path.exists(tmp_path / "X")


def test_expid_feature_specs_are_checked():
    check_feature_specs([{"name": ["item_id", "cate_id"], "feature_encoder": ["nn.Identity()", "nn.ReLU()"]}], "x")
    check_feature_specs(None, "x")
    with pytest.raises(FeatureEncoderError,
                       match=r"^expid E: feature_specs: feature 'hour': "
                             r"feature_encoder \"eval\('1'\)\" is not allowed"):
        check_feature_specs([{"name": "hour", "feature_encoder": "eval('1')"}], "expid E: feature_specs")
