"""A freshly built LAIN model starts as its backbone: built from the same seed, its backbone parameters are the
backbone's (paired initialisation: a paired difference measures LAIN, not another random start), and with
prompts and temperature off, the zero-initialised length shifts of query/key conditioning leave every
prediction unchanged (also after ``reset_parameters``, which re-initialises every module when the model is
built)."""
import pytest
import torch
from model_checks import build_model, predict

QK_ONLY = {"use_prompts": False, "use_temperature": False, "use_qk_conditioning": True}


@pytest.mark.parametrize("backbone_name", ["DIN", "DIEN", "SIM", "SDIM", "TWIN", "SparseCTR", "DiffuMIN"])
def test_fresh_qk_conditioning_is_the_backbone(backbone_name, feature_map, model_kwargs, tiny_batch):
    backbone = build_model(backbone_name, feature_map, model_kwargs)
    variant = build_model(f"{backbone_name}_LAIN", feature_map, model_kwargs, **QK_ONLY)
    missing, unexpected = variant.load_state_dict(backbone.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(key.startswith("length_conditioner.") or "shift" in key or "length_linear" in key
                           for key in missing), missing
    shifts = [p for name, p in variant.named_parameters() if "shift" in name or "length_linear" in name]
    assert shifts and all(bool((p == 0).all()) for p in shifts)
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backbone_name", ["DIN", "DIEN", "SIM", "SDIM", "TWIN", "SparseCTR", "DiffuMIN"])
def test_backbone_parameters_are_paired(backbone_name, feature_map, model_kwargs):
    """Same seed: every parameter and buffer of X equals the one of the same name in X_LAIN (all of LAIN on)."""
    from lainctr.registry import get_model
    torch.manual_seed(0)
    backbone = get_model(backbone_name)(feature_map, **model_kwargs).state_dict()
    torch.manual_seed(0)
    variant = get_model(f"{backbone_name}_LAIN")(feature_map, **model_kwargs).state_dict()
    assert set(backbone) < set(variant)
    assert all(torch.equal(value, variant[name]) for name, value in backbone.items())
