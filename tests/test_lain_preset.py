"""``lain_preset``: ``paper`` builds the paper's sizes, ``lean`` is today's model, explicit keys win, and every zoo
``_LAIN`` expid states its preset (and sets no size of its own, so ``--lain_preset paper`` takes effect)."""
import dataclasses

import pytest
import torch

from lainctr import config as config_lib
from lainctr.lain_presets import LAIN_PRESETS
from lainctr.layers.lain import LAINConfig, lain_config
from lainctr.models import lain_parameters
from lainctr.registry import get_model


def test_paper_preset_has_the_stated_sizes(feature_map, model_kwargs):
    model = get_model("DIN_LAIN")(feature_map, lain_preset="paper", **model_kwargs)
    d, conditioner = model.token_dim, model.length_conditioner
    assert d == 16                                                   # embedding 8: d_p = d differs from lean's 32
    encoder, prompts = conditioner.length_encoder, conditioner.prompt_generators["shared"]
    assert encoder.frequencies.numel() == 64                         # d_f
    assert encoder.input_layer.out_features == 512 and encoder.mlp[1].out_features == 512   # d_h
    assert prompts.num_prompts == 4 and prompts.mlp[0].out_features == d                   # k, d_p = d
    assert conditioner.length_projection is None                     # e_len = h_len
    assert model.lma_settings("long").length_dim == d                # d_e = d
    d_f, d_h = 64, 512                                               # spec s.3.4: the SLE's parameter count
    assert sum(p.numel() for p in encoder.parameters()) == d_f + (2 * d_f + 1) * d_h + 2 * d_h + (d_h + 1) * d_h + (d_h + 1) * d


def test_explicit_keys_override_the_preset_and_unknown_presets_are_errors():
    config = lain_config("paper", fourier_dim=8, num_prompts=2)
    assert (config.fourier_dim, config.num_prompts, config.sle_hidden_dim) == (8, 2, 512)
    with pytest.raises(ValueError, match="lain_preset must be one of \\['lean', 'paper'\\], got 'huge'"):
        lain_config("huge")


def test_lean_preset_is_todays_model(feature_map, model_kwargs):
    defaults = {f.name: f.default for f in dataclasses.fields(LAINConfig)}
    assert all(defaults[key] == value for key, value in LAIN_PRESETS["lean"].items())
    assert lain_config("lean") == LAINConfig()
    torch.manual_seed(0)
    plain = get_model("TWIN_LAIN")(feature_map, **model_kwargs).state_dict()
    torch.manual_seed(0)
    lean = get_model("TWIN_LAIN")(feature_map, lain_preset="lean", **model_kwargs)
    assert plain.keys() == lean.state_dict().keys()
    assert all(torch.equal(value, lean.state_dict()[name]) for name, value in plain.items())
    torch.manual_seed(0)
    paper = get_model("TWIN_LAIN")(feature_map, lain_preset="paper", **model_kwargs)
    assert sum(p.numel() for p in lain_parameters(paper)) > sum(p.numel() for p in lain_parameters(lean))


def test_every_lain_expid_states_its_preset():
    lain_expids = [e for e in config_lib.list_expids() if str(config_lib.load_config(e)["model"]).endswith("_LAIN")]
    assert len(lain_expids) >= 7 * 5
    for expid in lain_expids:
        params = config_lib.load_config(expid)
        assert params.get("lain_preset") in LAIN_PRESETS, expid
        assert not set(LAIN_PRESETS["paper"]) & set(params), expid   # sizes come from the preset alone
