"""SIM and SIM_LAIN: shapes, masking, retrieval, auxiliary loss, LAIN-off equivalence, upstream parity, learning."""
import functools

import pytest
import torch
from model_checks import (
    LAIN_OFF,
    LAIN_SWITCHES,
    assert_finite_on_empty_histories,
    assert_lain_off_is_backbone,
    assert_output_shape,
    assert_padding_invariant,
    assert_short_mask_shift_difference,
    assert_window_respected,
    build_model,
    labels_of,
    long_attention,
    model_inputs,
    predict,
    training_loss,
    truncate,
)

from lainctr.data.loader import SequenceBatch, SequenceBatchLoader

SWITCHES = LAIN_SWITCHES + [{"lain_gsu_query": True},
            {"gsu_mode": "hard", "gsu_loss": False}, {"use_short_branch": False, "topk": 5}]
HARD = {"gsu_mode": "hard", "gsu_loss": False}


def search(model):
    """The SIM long branch (GSU + ESU)."""
    return model.branches["long"]


def gsu_scores(model, batch, condition=None):
    return search(model).gsu_scores(model.branch_inputs(batch)[1], condition)





# ----------------------------------------------------------------------------- shapes and masking
@pytest.mark.parametrize("name,extra", [("SIM", {}), ("SIM", {"topk": 5}), ("SIM", HARD), ("SIM", {"topk": 500}),
                                        ("SIM", {"gsu_pool": "sum", "use_short_branch": False}),
                                        ("SIM", {"num_heads": 2})]
                         + [("SIM_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)


@pytest.mark.parametrize("name,extra", [("SIM", {}), ("SIM", HARD), ("SIM_LAIN", {})])
def test_behaviour_beyond_max_len_has_no_effect(name, extra, feature_map, model_kwargs, tiny_dataset):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_window_respected(model, tiny_dataset)


@pytest.mark.parametrize("extra", [{"topk": 8}, dict(HARD, topk=8)])
def test_topk_never_returns_padding_while_real_behaviours_remain(extra, feature_map, model_kwargs, tiny_batch):
    model = build_model("SIM", feature_map, model_kwargs, **extra)
    target, history, mask = model_inputs(model, tiny_batch)
    scores = gsu_scores(model, tiny_batch)
    for sign in (1.0, -1.0):   # all-negative real scores: LongCTR's zero-scored padding would win
        scores_signed = sign * (scores.abs() + 1) if search(model).gsu_mode == "soft" else scores
        index, _, selected = search(model).retrieve(scores_signed, history, mask)
        assert torch.all(torch.gather(mask, 1, index)[selected])             # selected slots are real
        if search(model).gsu_mode == "soft":
            assert torch.equal(selected.sum(1), mask.sum(1).clamp(max=8))    # min(k, L) real behaviours
    if search(model).gsu_mode == "hard":   # hard search: the matches only, most recent first
        categories = tiny_batch.item_dict["cate_id"].view(mask.shape[0], -1)
        matches = (categories[:, :-1] == categories[:, -1:]) & mask
        assert torch.equal(selected.sum(1), matches.sum(1).clamp(max=8))
        for row in range(mask.shape[0]):
            expected = torch.nonzero(matches[row]).view(-1).flip(0)[:8]
            assert torch.equal(index[row][selected[row]], expected)


@pytest.mark.parametrize("extra", [{}, HARD])
def test_history_no_longer_than_topk_skips_the_selection(extra, feature_map, model_kwargs, tiny_batch):
    """With T <= topk everything is retrieved in place; the prediction equals the top-k path, which the same
    rows take once left padding makes them wider than topk."""
    width = tiny_batch.mask.shape[1]
    model = build_model("SIM", feature_map, model_kwargs, **extra, topk=width)
    mask = tiny_batch.mask > 0
    scores = torch.randint(0, 2, mask.shape).float()          # hard search: 1 = same category
    history = torch.randn(*mask.shape, 3)
    index, retrieved, selected = search(model).retrieve(scores, history, mask)
    assert torch.equal(index[0], torch.arange(width)) and torch.equal(retrieved, history)
    assert torch.equal(selected, mask & (scores >= 1) if extra else mask)
    assert_padding_invariant(model, tiny_batch, extra=9)    # 9 more columns: the top-k path


def test_empty_history_rows_are_finite(feature_map, model_kwargs, tiny_batch):
    batch = truncate(tiny_batch, [0, 1, 2])
    for name, extra in (("SIM", {}), ("SIM", HARD), ("SIM_LAIN", {}), ("SIM_LAIN", HARD)):
        model = build_model(name, feature_map, model_kwargs, **extra)
        assert_finite_on_empty_histories(model, batch)


def test_deterministic_eval_and_attention_record(feature_map, model_kwargs, tiny_batch):
    model = build_model("SIM_LAIN", feature_map, model_kwargs, topk=8)
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    weights, support = long_attention(model, tiny_batch)
    assert weights.shape == support.shape == (tiny_batch.mask.shape[0], 8)
    assert torch.all(weights[~support] == 0)
    assert torch.all(weights.sum(1) < 1)   # the prompts take part of the softmax mass but are not recorded


# ----------------------------------------------------------------------------- auxiliary (GSU) loss
def test_auxiliary_loss_trains_soft_search(feature_map, model_kwargs, tiny_batch):
    model = build_model("SIM", feature_map, model_kwargs, gsu_loss_weight=0.5)
    out, loss = training_loss(model, tiny_batch)
    bce = torch.nn.functional.binary_cross_entropy(out.y_pred, labels_of(tiny_batch))
    assert out.auxiliary_loss is not None and out.auxiliary_loss > 0
    torch.testing.assert_close(loss, bce + out.auxiliary_loss)
    loss.backward()
    assert search(model).W_b.weight.grad.abs().sum() > 0 and search(model).W_a.linear.weight.grad.abs().sum() > 0
    model.eval()
    assert model(tiny_batch, labels_of(tiny_batch)).auxiliary_loss is None    # training only

    no_aux = build_model("SIM", feature_map, model_kwargs, gsu_loss=False)   # the top-k is not differentiable:
    out, loss = training_loss(no_aux, tiny_batch)                       # without the loss soft search is frozen
    loss.backward()
    assert out.auxiliary_loss is None and search(no_aux).W_b.weight.grad is None


def test_gsu_pool_mean_is_length_normalised(feature_map, model_kwargs, tiny_batch):
    model = build_model("SIM", feature_map, model_kwargs)
    target, history, mask = model_inputs(model, tiny_batch)
    scores = gsu_scores(model, tiny_batch)
    mean = search(model).gsu_pooled(scores, history, mask)
    search(model).gsu_pool = "sum"
    total = search(model).gsu_pooled(scores, history, mask)
    torch.testing.assert_close(mean * mask.sum(1, keepdim=True).float(), total)


def test_invalid_configurations_are_rejected(feature_map, model_kwargs):
    for extra in ({"gsu_mode": "hard"}, {"gsu_mode": "fuzzy"}, {"gsu_pool": "max"}, {"topk": 0},
                  {"gsu_mode": "hard", "gsu_loss": False, "hard_search_feature": "hour"}, {"lain_gsu_query": True}):
        with pytest.raises(ValueError):
            build_model("SIM", feature_map, model_kwargs, **extra)
    with pytest.raises(ValueError):
        build_model("SIM_LAIN", feature_map, model_kwargs, lain_gsu_query=True, use_qk_conditioning=False)
    with pytest.raises(TypeError):
        build_model("SIM_LAIN", feature_map, model_kwargs, use_promtps=False)


# ----------------------------------------------------------------------------- LAIN
@pytest.mark.parametrize("extra", [{}, HARD])
def test_lain_all_off_is_sim(extra, feature_map, model_kwargs, tiny_batch):
    backbone = build_model("SIM", feature_map, model_kwargs, topk=8, **extra)
    variant = build_model("SIM_LAIN", feature_map, model_kwargs, topk=8, **extra, **LAIN_OFF)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


def test_lain_retrieval_sees_real_behaviours_only(feature_map, model_kwargs, tiny_batch):
    """Prompts join after the top-k: SIM_LAIN retrieves what SIM retrieves (same weights); with
    lain_gsu_query the query shift starts at zero and, once trained, changes the ranking."""
    backbone = build_model("SIM", feature_map, model_kwargs, topk=8)
    for extra in ({}, {"lain_gsu_query": True}):
        variant = build_model("SIM_LAIN", feature_map, model_kwargs, topk=8, **extra)
        variant.load_state_dict(backbone.state_dict(), strict=False)
        target, history, mask = model_inputs(backbone, tiny_batch)
        conditions = variant.length_conditions(mask, tiny_batch.history_length)
        expected = search(backbone).retrieve(gsu_scores(backbone, tiny_batch), history, mask)
        got = search(variant).retrieve(gsu_scores(variant, tiny_batch, conditions["long"]), history, mask)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[2], expected[2])
    with torch.no_grad():
        torch.nn.init.normal_(search(variant).W_a.length_linear.weight, std=1.0)
    shifted = gsu_scores(variant, tiny_batch, conditions["long"])
    assert not torch.equal(search(variant).retrieve(shifted, history, mask)[0], expected[0])


def test_fresh_lain_without_prompts_and_temperature_starts_as_sim(feature_map, model_kwargs, tiny_batch):
    backbone = build_model("SIM", feature_map, model_kwargs)
    variant = build_model("SIM_LAIN", feature_map, model_kwargs, use_prompts=False, use_temperature=False,
                    lain_gsu_query=True)
    variant.load_state_dict(backbone.state_dict(), strict=False)
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch))


# ----------------------------------------------------------------------------- upstream LongCTR parity
def upstream_sim(feature_map, ours, tmp_path, **extra):
    """LongCTR's SIM with our model's weights (its auxiliary head keeps its own weights)."""
    module = pytest.importorskip("model_zoo.LongCTR.SIM.SIM")
    upstream = module.SIM(feature_map, gpu=-1, dnn_hidden_units=[32], attention_dim=64, num_heads=1,
                          short_seq_len=10, embedding_dim=8, optimizer="adam", loss="binary_crossentropy",
                          model_root=str(tmp_path), verbose=0, metrics=["AUC"], **extra)
    names = (("branches.long.attention.", "long_attention."), ("branches.short.attention.", "short_attention."),
             ("branches.long.", ""), (".linear.", "."))
    state = {functools.reduce(lambda key, pair: key.replace(*pair), names, k): v for k, v in ours.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith("gsu_head.")}
    state["dnn.mlp.0.weight"] = long_short_to_short_long(state["dnn.mlp.0.weight"], ours.token_dim)
    missing, unexpected = upstream.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("dnn_aux.") for k in missing)
    upstream.eval()
    return upstream


def long_short_to_short_long(weight: torch.Tensor, token_dim: int) -> torch.Tensor:
    """Our head's first layer reads [..., target, long, short]; LongCTR's SIM reads [..., target, short, long]."""
    head, long, short = weight.split([weight.shape[1] - 2 * token_dim, token_dim, token_dim], dim=1)
    return torch.cat([head, short, long], dim=1)


def upstream_predict(upstream, batch: SequenceBatch) -> torch.Tensor:
    with torch.no_grad():
        return upstream((dict(batch.batch_dict), dict(batch.item_dict), batch.mask.clone()))["y_pred"]


@pytest.mark.parametrize("topk", [50, 5])
def test_parity_with_longctr_on_unpadded_batch(topk, feature_map, model_kwargs, tiny_dataset, tmp_path):
    """No padding: short masks agree and top-k cannot pick padding, so LongCTR and we compute the same."""
    batch = next(iter(SequenceBatchLoader(tiny_dataset, "valid", batch_size=64, max_len=12)))
    assert bool(batch.mask.all())
    ours = build_model("SIM", feature_map, model_kwargs, topk=topk)
    upstream = upstream_sim(feature_map, ours, tmp_path, topk=topk)
    torch.testing.assert_close(upstream_predict(upstream, batch), predict(ours, batch), atol=1e-5, rtol=1e-5)
    # the GSU pool: LongCTR's unnormalised sum equals ours with gsu_pool: sum
    target, history, mask = model_inputs(ours, batch)
    search(ours).gsu_pool = "sum"
    expected = torch.bmm((upstream.W_a(target).unsqueeze(1) @ upstream.W_b(history).transpose(1, 2)) * mask.unsqueeze(1),
                         history).squeeze(1)
    torch.testing.assert_close(search(ours).gsu_pooled(gsu_scores(ours, batch), history, mask), expected)


def test_difference_short_mask_shift(feature_map, model_kwargs, tiny_batch, tmp_path):
    """LongCTR's short window uses its neighbour's mask: rows with L = 1 (its short branch sees no item at
    all), 5 and 9 differ; given the window's own mask, LongCTR's attention computes ours."""
    ours = build_model("SIM", feature_map, model_kwargs)
    upstream = upstream_sim(feature_map, ours, tmp_path)
    batch = truncate(truncate(truncate(tiny_batch, [0], 1), [1], 5), [2], 9)
    assert_short_mask_shift_difference(ours, upstream, batch)
    assert not torch.allclose(upstream_predict(upstream, batch), predict(ours, batch), atol=1e-4)


def test_difference_topk_over_padding(feature_map, model_kwargs, tiny_batch, tmp_path):
    """LongCTR's top-k over scores * mask: when real behaviours score negative, zero-scored padding wins."""
    ours = build_model("SIM", feature_map, model_kwargs, topk=8)
    upstream = upstream_sim(feature_map, ours, tmp_path, topk=8)
    with torch.no_grad():
        search(ours).W_b.weight.copy_(-search(ours).W_a.linear.weight)
        upstream.W_b.weight.copy_(-upstream.W_a.weight)
    # every behaviour of a short row becomes the target item: r_i = -|W_a q|^2 < 0
    width = tiny_batch.mask.shape[1]
    row = int(torch.argmin(tiny_batch.mask.sum(1)))
    item_dict = {k: v.clone().view(-1, width + 1) for k, v in tiny_batch.item_dict.items()}
    for values in item_dict.values():
        values[row, :-1] = torch.where(tiny_batch.mask[row] > 0, values[row, -1], values[row, :-1])
    batch = tiny_batch._replace(item_dict={k: v.view(-1) for k, v in item_dict.items()})
    target, history, mask = model_inputs(ours, batch)
    real = int(mask[row].sum())
    assert 0 < real < width - 8
    with torch.no_grad():   # LongCTR's GSU, as in its forward
        upstream_scores = (upstream.W_a(target).unsqueeze(1) @ upstream.W_b(history).transpose(1, 2)).squeeze(1)
        upstream_index = (upstream_scores * mask).topk(8, dim=1)[1]
        upstream_esu = upstream.long_attention(target, torch.gather(history, 1, upstream_index.unsqueeze(-1).expand(
            -1, -1, history.shape[-1])), torch.gather(mask.float(), 1, upstream_index))
        scores = gsu_scores(ours, batch)
        index, retrieved, selected = search(ours).retrieve(scores, history, mask)
        esu, _ = search(ours).attention(target, retrieved, selected)
    torch.testing.assert_close(scores, upstream_scores)
    assert torch.all(scores[row][mask[row]] < 0)
    assert int(mask[row][upstream_index[row]].sum()) == 0                      # LongCTR: padding only
    assert int(selected[row].sum()) == min(8, real)                            # ours: real behaviours
    assert upstream_esu[row].abs().max() < 1e-6 < esu[row].abs().max()         # its ESU pools zero vectors


# ----------------------------------------------------------------------------- learning
