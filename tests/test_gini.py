"""Attention Gini (spec section 7): hand-computed values, support masking, per-bucket means, capture."""
import itertools
import math
from collections import namedtuple

import numpy as np
import pytest
import torch

from lainctr.analysis import attention_gini_by_bucket, extra_evaluation_columns, gini, gini_by_bucket
from lainctr.models import BranchOutput, ModelOutput
from lainctr.trainer import Trainer
from lainctr.training_options import TrainerOptions


def test_uniform_attention_is_zero():
    n = 7
    assert gini(np.full((1, n), 1.0 / n), np.ones((1, n), bool))[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4, 10])
def test_one_hot_is_n_minus_one_over_n(n):
    weights = np.zeros((1, n))
    weights[0, n // 2] = 1.0
    assert gini(weights, np.ones((1, n), bool))[0] == pytest.approx((n - 1) / n)


def test_worked_example():
    # a = (0.1, 0.2, 0.3, 0.4), n = 4: coefficients 2i - n - 1 = (-3, -1, 1, 3)
    # numerator = -0.3 - 0.2 + 0.3 + 1.2 = 1.0; denominator = n * sum a = 4 -> G = 0.25
    weights = np.array([[0.3, 0.1, 0.4, 0.2]])
    assert gini(weights, np.ones_like(weights, bool))[0] == pytest.approx(0.25)
    # scale-free: the prompts' share of the softmax need not be renormalised away
    assert gini(3 * weights, np.ones_like(weights, bool))[0] == pytest.approx(0.25)


def test_only_support_positions_count():
    weights = np.array([[0.4, 9.9, 0.1, 0.3, 0.2, 5.0]])       # 9.9 and 5.0 are padding / prompts
    support = np.array([[True, False, True, True, True, False]])
    assert gini(weights, support)[0] == pytest.approx(0.25)
    # a second row with a different support size: (0, 1) over n = 2 -> 1/2
    batch = gini(np.array([[0.4, 9.9, 0.1, 0.3, 0.2, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]),
                 np.array([[True, False, True, True, True, False], [False] * 4 + [True, True]]))
    np.testing.assert_allclose(batch, [0.25, 0.5])


def test_rows_with_fewer_than_two_support_positions_are_nan():
    weights = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    support = np.array([[True, False, False], [False, False, False], [True, True, True]])
    values = gini(weights, support)
    assert np.isnan(values).all()  # one position, no position, zero weight


def test_torch_input_and_shape_check():
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    support = torch.ones(2, 4, dtype=torch.bool)
    np.testing.assert_allclose(gini(weights, support), [0.0, 0.75])
    with pytest.raises(ValueError):
        gini(np.ones((2, 3)), np.ones((2, 4), bool))


def test_gini_by_bucket_means_and_variances():
    values = np.array([0.1, 0.3, np.nan, 0.5])
    lengths = np.array([10, 50, 150, 300])
    out = gini_by_bucket(values, lengths, [100, 200])
    assert out["gini@0-100"] == pytest.approx(0.2)
    assert math.isnan(out["gini@100-200"]) and out["gini_rows@100-200"] == 0   # its only row is NaN
    assert out["gini@200-inf"] == pytest.approx(0.5)
    assert out["gini"] == pytest.approx(0.3)
    assert out["gini_bucket_var"] == pytest.approx(np.var([0.2, 0.5]))        # spec A14: variance of bucket means
    assert out["gini_row_var"] == pytest.approx(np.var([0.1, 0.3, 0.5]))


# ----- capture over a loader -------------------------------------------------------------------
class FakeBatch(namedtuple("FakeBatch", "batch_dict history_length weights support")):
    def to(self, device, non_blocking=False):
        return self


class FakeFeatureMap:
    labels, group_id, dataset_id = ["label"], "user_index", "fake"


class FakeModel(torch.nn.Module):
    """A model whose long branch reports the batch's weights and support (or no attention)."""

    def __init__(self, records: bool = True):
        super().__init__()
        self.records, self.feature_map, self.model_id = records, FakeFeatureMap(), "fake"
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def invalidate_inference_caches(self):
        pass

    def forward(self, batch):
        branch = BranchOutput(torch.zeros(len(batch.history_length), 1),
                              *((batch.weights, batch.support) if self.records else (None, None)))
        return ModelOutput(torch.zeros(len(batch.history_length), 1), None, {"long": branch})


def trainer_of(model) -> Trainer:
    return Trainer(model, TrainerOptions(verbose=0))


def fake_loader():
    one_hot = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    yield FakeBatch({"label": torch.tensor([1, 0]), "user_index": torch.tensor([0, 1])}, torch.tensor([20, 250]),
                    one_hot, torch.ones(2, 4, dtype=torch.bool))
    yield FakeBatch({"label": torch.tensor([1, 1]), "user_index": torch.tensor([1, 2])}, torch.tensor([120, 30]),
                    torch.tensor([[0.5, 0.5, 9.0, 9.0], [0.3, 0.1, 0.4, 0.2]]),
                    torch.tensor([[True, True, False, False], [True, True, True, True]]))


def test_attention_gini_by_bucket_with_fake_model():
    out = attention_gini_by_bucket(trainer_of(FakeModel()), list(fake_loader()), [100, 200])
    assert out["gini@0-100"] == pytest.approx((0.75 + 0.25) / 2)   # one-hot over 4 and the worked example
    assert out["gini@100-200"] == pytest.approx(0.0)
    assert out["gini@200-inf"] == pytest.approx(0.0)


def test_models_without_attention_records_give_empty_dict():
    assert attention_gini_by_bucket(trainer_of(FakeModel(records=False)), list(fake_loader()), [100, 200]) == {}
    columns = extra_evaluation_columns(trainer_of(FakeModel(records=False)).predict_arrays(fake_loader(), "long"),
                                       "test", [100, 200])
    assert not any("gini" in c for c in columns)
    assert columns["test_sample_share@0-100"] == pytest.approx(0.5)


def test_extra_evaluation_columns_names():
    columns = extra_evaluation_columns(trainer_of(FakeModel()).predict_arrays(fake_loader(), "long"), "valid",
                                       [100, 200])
    assert set(columns) == {f"valid_{k}@{b}" for k in ("sample_share", "user_share", "gini")
                            for b in ("0-100", "100-200", "200-inf")} | {"valid_gini", "valid_gini_bucket_var",
                                                                          "valid_gini_row_var"}
    # users 0 (max length 20), 1 (max 250), 2 (30): two of three users are short
    assert columns["valid_user_share@0-100"] == pytest.approx(2 / 3)


def test_capture_on_untrained_din(tiny_dataset, feature_map, model_kwargs):
    """DIN records its long-branch attention: Ginis are defined and within [0, 1)."""
    from lainctr.data.loader import SequenceBatchLoader
    from lainctr.registry import get_model

    model = get_model("DIN")(feature_map, **model_kwargs)
    trainer = Trainer(model, model.trainer_options)
    loader = SequenceBatchLoader(tiny_dataset, "valid", batch_size=128, max_len=60)
    out = attention_gini_by_bucket(trainer, list(itertools.islice(iter(loader), 2)), [100, 200])
    assert out and 0.0 <= out["gini"] < 1.0
    assert out["gini_rows@0-100"] > 0
    columns = extra_evaluation_columns(trainer.predict_arrays(list(itertools.islice(iter(loader), 2)), "long"), "test",
                                       [100, 200])
    assert sum(columns[f"test_sample_share@{b}"] for b in ("0-100", "100-200", "200-inf")) == pytest.approx(1.0)
    assert 0.0 <= columns["test_gini"] < 1.0
