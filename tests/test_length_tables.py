"""Inference reads LAIN's length terms (length encoder, prompts, e_len, temperatures) from per-length tables.

They must give the predictions that computing the terms gives, and be rebuilt whenever a parameter changes
(optimizer step, weight load) or a batch is wider than the tables.
"""
import pytest
import torch
from model_checks import build_model, predict

from lainctr.data.loader import SequenceBatchLoader
from lainctr.layers import LengthTemperature
from lainctr.models import lain_parameters
from lainctr.trainer import Trainer

LAIN_MODELS = ["DIN_LAIN", "DIEN_LAIN", "SIM_LAIN", "SDIM_LAIN", "TWIN_LAIN", "SparseCTR_LAIN", "DiffuMIN_LAIN"]


def perturb_lain(model, seed: int = 1) -> None:
    """Move every LAIN parameter away from its init (the shifts start at zero and would hide errors)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lain_parameters(model):
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)


def computed(model, batch) -> torch.Tensor:
    """Predictions with every length term computed: eval mode with autograd on never reads the tables."""
    model.eval()
    with torch.enable_grad():
        return model(batch).y_pred.detach()


@pytest.mark.parametrize("name", LAIN_MODELS)
def test_tables_give_the_computed_predictions(name, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs)
    perturb_lain(model)
    tabulated = predict(model, tiny_batch)
    assert model.length_conditioner.table is not None
    temperatures = [m for m in model.modules() if isinstance(m, LengthTemperature)]
    assert temperatures and all(m.table is not None for m in temperatures)
    torch.testing.assert_close(tabulated, computed(model, tiny_batch), atol=1e-6, rtol=1e-5)


def test_training_never_reads_tables(feature_map, model_kwargs, tiny_batch):
    model = build_model("DIN_LAIN", feature_map, model_kwargs)
    predict(model, tiny_batch)
    model.train()
    assert model.length_conditioner.table is None
    conditions = model.length_conditions(tiny_batch.mask > 0, tiny_batch.history_length)
    assert conditions["long"].table_rows is None and conditions["long"].prompts.requires_grad


def test_tables_follow_optimizer_steps_and_weight_loads(feature_map, model_kwargs, tiny_batch):
    model = build_model("TWIN_LAIN", feature_map, model_kwargs)
    perturb_lain(model)
    predict(model, tiny_batch)                                   # builds the tables
    # an optimizer step in eval mode: the fused kernel bumps no version counter, the step hook must drop them
    trainer = Trainer(model, model.trainer_options)
    with torch.enable_grad():
        model(tiny_batch).y_pred.sum().backward()
    trainer.optimizer.step()
    assert model.length_conditioner.table is None
    torch.testing.assert_close(predict(model, tiny_batch), computed(model, tiny_batch), atol=1e-6, rtol=1e-5)
    # an in-place weight load
    other = build_model("TWIN_LAIN", feature_map, model_kwargs)
    perturb_lain(other, seed=2)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(predict(model, tiny_batch), predict(other, tiny_batch), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(predict(model, tiny_batch), computed(model, tiny_batch), atol=1e-6, rtol=1e-5)


def test_tables_grow_with_wider_batches(feature_map, model_kwargs, tiny_dataset, tiny_batch):
    """A model built for max_len 20, first fed 20-wide batches, then 60-wide ones: L up to 60 must be covered."""
    model = build_model("SIM_LAIN", feature_map, {**model_kwargs, "max_len": 20})
    perturb_lain(model)
    narrow = next(iter(SequenceBatchLoader(tiny_dataset, "valid", batch_size=64, max_len=20)))
    predict(model, narrow)
    assert model.length_conditioner.table_length() == 20
    assert int(tiny_batch.mask.sum(-1).max()) > 20
    tabulated = predict(model, tiny_batch)
    assert model.length_conditioner.table_length() >= tiny_batch.mask.shape[1]
    torch.testing.assert_close(tabulated, computed(model, tiny_batch), atol=1e-6, rtol=1e-5)


def test_raw_lengths_are_computed(feature_map, model_kwargs, tiny_batch):
    """``length_source: raw`` lengths are unbounded: no table, the terms are computed."""
    model = build_model("DIN_LAIN", feature_map, model_kwargs, length_source="raw")
    perturb_lain(model)
    tabulated = predict(model, tiny_batch)
    assert model.length_conditioner.table is None
    torch.testing.assert_close(tabulated, computed(model, tiny_batch), atol=0, rtol=0)
