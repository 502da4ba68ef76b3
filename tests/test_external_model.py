"""A model defined outside the zoo (a folder named in $LAINCTR_MODEL_DIRS) trains through run_expid.py and gets
LAIN on every branch it declares as accepting it, without touching library code; the contract's checks."""
import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from model_checks import assert_lain_off_is_backbone, build_model

from lainctr import registry
from lainctr.layers import NO_LMA, MultiHeadTargetAttention
from lainctr.models import BranchOutput, InterestBranch, SequenceCTRModel, lain_parameter_count

ZOO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ONE_BRANCH = '''
from lainctr.layers import MultiHeadTargetAttention, prepend_prompts
from lainctr.models import BranchOutput, InterestBranch, SequenceCTRModel


class AttentionBranch(InterestBranch):
    def __init__(self, token_dim, *, lma):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        self.attention = MultiHeadTargetAttention(token_dim, 16, 1, lma=lma)

    def forward(self, inputs, condition):
        sequence, mask = prepend_prompts(inputs.history, inputs.mask, condition)
        interest, weights = self.attention(inputs.target, sequence, mask, condition)
        return BranchOutput(interest, weights.mean(1)[:, -inputs.mask.shape[1]:], inputs.mask)


class OneBranch(SequenceCTRModel):
    def __init__(self, feature_map, model_id="OneBranch", **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.add_branch("interest", AttentionBranch(self.token_dim, lma=self.lma_settings("interest")))
'''
ONE_BRANCH_LAIN = '''
from lainctr.models import lain_variant
from lainctr.registry import get_model

OneBranch_LAIN = lain_variant(get_model("OneBranch"), "OneBranch_LAIN")
'''
EXPIDS = '''
OneBranch_tiny: {model: OneBranch, dataset_id: synthetic_tiny, max_len: 50, epochs: 1, embedding_dim: 8,
                 dnn_hidden_units: [32], model_root: MODEL_ROOT}
OneBranch_LAIN_tiny: {model: OneBranch_LAIN, dataset_id: synthetic_tiny, max_len: 50, epochs: 1, embedding_dim: 8,
                      dnn_hidden_units: [32], model_root: MODEL_ROOT}
'''


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    root = tmp_path / "my_models"
    for name, code in (("OneBranch", ONE_BRANCH), ("OneBranch_LAIN", ONE_BRANCH_LAIN)):
        (root / name / "config").mkdir(parents=True)
        (root / name / f"{name}.py").write_text(textwrap.dedent(code))
    (root / "OneBranch" / "config" / "model_config.yaml").write_text(
        textwrap.dedent(EXPIDS).replace("MODEL_ROOT", str(tmp_path / "checkpoints")))
    monkeypatch.setenv("LAINCTR_MODEL_DIRS", str(root))
    yield str(root)
    for name in ("OneBranch", "OneBranch_LAIN"):
        sys.modules.pop(f"lainctr_zoo_{name}", None)


def test_external_model_gets_lain_on_its_branch(model_dir, feature_map, model_kwargs, tiny_batch):
    assert {"OneBranch", "OneBranch_LAIN", "DIN"} <= set(registry.available_models())
    variant = build_model("OneBranch_LAIN", feature_map, model_kwargs)
    assert variant.length_conditioner.branches == ["interest"]
    attention = variant.branches["interest"].attention
    assert attention.temperature is not None and attention.W_q.length_linear is not None
    assert lain_parameter_count(variant) > 0
    off = build_model("OneBranch_LAIN", feature_map, model_kwargs, use_prompts=False, use_qk_conditioning=False,
                      use_temperature=False)
    assert_lain_off_is_backbone(build_model("OneBranch", feature_map, model_kwargs), off, tiny_batch)


def test_external_model_trains_through_run_expid(model_dir, data_root, tmp_path):
    results = tmp_path / "results.csv"
    for expid in ("OneBranch_tiny", "OneBranch_LAIN_tiny"):
        done = subprocess.run([sys.executable, os.path.join(ZOO, "run_expid.py"), "--expid", expid,
                               "--data_root", str(data_root), "--results", str(results)],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ZOO), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(results)))
    assert [r["model"] for r in rows] == ["OneBranch", "OneBranch_LAIN"]
    assert float(rows[0]["test_AUC"]) > 0.6 and int(rows[0]["num_params_lain"]) == 0
    assert float(rows[1]["test_AUC"]) > 0.6 and int(rows[1]["num_params_lain"]) > 0


class PlainBranch(InterestBranch):
    """Declares LMA but builds its attention without the model's settings."""

    def __init__(self, token_dim: int, accepts_lma: bool = True):
        super().__init__(token_dim, accepts_prompts=False, accepts_lma=accepts_lma)
        self.attention = MultiHeadTargetAttention(token_dim, 16, 1, lma=NO_LMA)

    def forward(self, inputs, condition):
        interest, _ = self.attention(inputs.target, inputs.history, inputs.mask, condition)
        return BranchOutput(interest)


def test_contract_errors(feature_map):
    class Forgets(SequenceCTRModel):
        def __init__(self, feature_map, **kwargs):
            super().__init__(feature_map, **kwargs)
            self.add_branch("long", PlainBranch(self.token_dim))

    class NoBranch(SequenceCTRModel):
        pass

    from lainctr.layers import LAINConfig
    with pytest.raises(TypeError, match=r"branch 'long'.*lma=model.lma_settings\('long'\)"):
        Forgets(feature_map, lain=LAINConfig())
    Forgets(feature_map)                                    # a backbone: NO_LMA is what it should have
    with pytest.raises(TypeError, match="adds no branch"):
        NoBranch(feature_map)
    with pytest.raises(TypeError, match="not an InterestBranch"):
        Forgets(feature_map).add_branch("other", torch.nn.Linear(2, 2))
