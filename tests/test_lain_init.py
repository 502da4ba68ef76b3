"""A freshly built LAIN model starts as its backbone: with prompts and temperature off, the zero-initialised
length shifts of query/key conditioning leave every prediction unchanged (also after FuxiCTR's
``reset_parameters``, which re-initialises every module when the model is built)."""
import pytest
import torch

from model_checks import build_model, predict

QK_ONLY = {"use_prompts": False, "use_temperature": False, "use_qk_conditioning": True}


@pytest.mark.parametrize("backbone_name", ["DIN", "DIEN", "SIM", "SDIM", "TWIN"])
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
