"""DIN and DIN_LAIN: shapes, masking, max_len, determinism, LAIN-off equivalence, learning."""
import pytest
import torch
from model_checks import (
    LAIN_OFF,
    LAIN_SWITCHES,
    assert_lain_off_is_backbone,
    assert_output_shape,
    assert_padding_invariant,
    assert_window_respected,
    build_model,
    long_attention,
    predict,
)

from lainctr.models import lain_parameter_count

SWITCHES = LAIN_SWITCHES


@pytest.mark.parametrize("name,extra", [("DIN", {}), ("DIN", {"din_use_softmax": False, "use_short_branch": False}),
                                        ("DIN", {"attention_hidden_activations": "Dice"})]
                         + [("DIN_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)


@pytest.mark.parametrize("name", ["DIN", "DIN_LAIN"])
def test_behaviour_beyond_max_len_has_no_effect(name, feature_map, model_kwargs, tiny_dataset):
    model = build_model(name, feature_map, model_kwargs)
    assert_window_respected(model, tiny_dataset)


def test_lain_all_off_is_din(feature_map, model_kwargs, tiny_batch):
    backbone = build_model("DIN", feature_map, model_kwargs)
    variant = build_model("DIN_LAIN", feature_map, model_kwargs, **LAIN_OFF)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


def test_fresh_lain_without_prompts_and_temperature_starts_as_din(feature_map, model_kwargs, tiny_batch):
    """QK conditioning is zero/identity-initialised: only prompts and temperature change a fresh model."""
    backbone = build_model("DIN", feature_map, model_kwargs)
    variant = build_model("DIN_LAIN", feature_map, model_kwargs, use_prompts=False, use_temperature=False)
    variant.load_state_dict(backbone.state_dict(), strict=False)
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch))


def test_deterministic_eval_and_attention_record(feature_map, model_kwargs, tiny_batch):
    model = build_model("DIN_LAIN", feature_map, model_kwargs)
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    weights, support = long_attention(model, tiny_batch)
    assert weights.shape == support.shape == tiny_batch.mask.shape
    assert torch.all(weights[~support] == 0)


def test_unknown_lain_switch_is_rejected(feature_map, model_kwargs):
    with pytest.raises(TypeError):
        build_model("DIN_LAIN", feature_map, model_kwargs, use_promtps=False)


def test_lain_parameter_count_is_the_difference_to_the_backbone(feature_map, model_kwargs):
    backbone = build_model("DIN", feature_map, model_kwargs)
    variant = build_model("DIN_LAIN", feature_map, model_kwargs)
    assert lain_parameter_count(backbone) == 0
    assert lain_parameter_count(variant) == variant.count_parameters() - backbone.count_parameters() > 0


@pytest.mark.parametrize("use_softmax", [False, True])
def test_parity_with_upstream_longctr_din(use_softmax, feature_map, model_kwargs, tiny_batch):
    """Same weights and inputs: our DIN without the short branch computes upstream LongCTR's DIN, with its
    sum pooling (din_use_softmax False) and with softmax (ours masks padding the same way)."""
    upstream_module = pytest.importorskip("model_zoo.LongCTR.DIN.DIN")
    ours = build_model("DIN", feature_map, model_kwargs, use_short_branch=False, din_use_softmax=use_softmax,
                       attention_hidden_units=[16, 8])
    upstream = upstream_module.DIN(feature_map, optimizer="adam", loss="binary_crossentropy", metrics=["AUC"],
                                   verbose=0, model_root=model_kwargs["model_root"], embedding_dim=8,
                                   dnn_hidden_units=[32], attention_hidden_units=[16, 8],
                                   attention_hidden_activations="ReLU", din_use_softmax=use_softmax)
    state = {k.replace("branches.long.attention.scorer.", "attention_layers.attention_layer."): v
             for k, v in ours.state_dict().items()}
    upstream.load_state_dict(state, strict=True)
    upstream.eval()
    with torch.no_grad():
        theirs = upstream((dict(tiny_batch.batch_dict), dict(tiny_batch.item_dict), tiny_batch.mask))["y_pred"]
    torch.testing.assert_close(predict(ours, tiny_batch), theirs, atol=1e-5, rtol=1e-5)
