"""TWIN and TWIN_LAIN: shapes, masking, retrieval, item cache, LAIN wiring, upstream parity, learning."""
import copy

import pytest
import torch
from model_checks import (
    LAIN_OFF,
    LAIN_SWITCHES,
    assert_gradients_repeat,
    assert_lain_off_is_backbone,
    assert_output_shape,
    assert_padding_invariant,
    assert_window_respected,
    build_model,
    left_pad,
    long_attention,
    predict,
)

from lainctr.data.loader import SequenceBatch
from lainctr.layers.lain import NO_LMA, BranchCondition, LMASettings
from lainctr.layers.twin_attention import ConsistentTopKAttention, CrossFeatureBias
from lainctr.trainer import Trainer

SWITCHES = LAIN_SWITCHES + [{"use_cross_bias": True, "num_heads": 2}]
TOPK = dict(topk=8)   # tests run at max_len 60: a top-k well below most history lengths


def build_twin(name, feature_map, model_kwargs, **extra):
    return build_model(name, feature_map, model_kwargs, **{**TOPK, **extra})


def perturb_lain(model):
    """Give the zero-initialised LAIN parts (W_e of the QK conditioning) visible values."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "length_linear" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def empty_rows(batch: SequenceBatch, rows) -> SequenceBatch:
    """The same batch with the histories of ``rows`` emptied (L = 0)."""
    batch_size, width = batch.mask.shape
    mask, item_index = batch.mask.clone(), batch.item_index.clone()
    mask[rows] = 0
    item_index[rows, :-1] = 0
    item_dict = {}
    for k, v in batch.item_dict.items():
        v = v.view(batch_size, width + 1).clone()
        v[rows, :-1] = 0
        item_dict[k] = v.view(-1)
    history_length = batch.history_length.clone()
    history_length[rows] = 0
    return batch._replace(mask=mask, item_index=item_index, item_dict=item_dict, history_length=history_length)


# ----- model-level checks --------------------------------------------------------------------------
@pytest.mark.parametrize("name,extra", [("TWIN", {}), ("TWIN", {"num_heads": 2, "topk": 50}),
                                        ("TWIN", {"use_cross_bias": True, "num_heads": 2}),
                                        ("TWIN", {"use_cross_bias": True, "cross_features": ["recency"],
                                                  "use_short_branch": False})]
                         + [("TWIN_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_twin(name, feature_map, model_kwargs, **extra)
    perturb_lain(model)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)


@pytest.mark.parametrize("name", ["TWIN", "TWIN_LAIN"])
def test_behaviour_beyond_max_len_has_no_effect(name, feature_map, model_kwargs, tiny_dataset):
    model = build_twin(name, feature_map, model_kwargs, use_cross_bias=True, topk=50)
    assert_window_respected(model, tiny_dataset)


@pytest.mark.parametrize("extra", [{}, {"use_cross_bias": True, "num_heads": 2}])
def test_lain_all_off_is_twin(extra, feature_map, model_kwargs, tiny_batch):
    backbone = build_twin("TWIN", feature_map, model_kwargs, **extra)
    variant = build_twin("TWIN_LAIN", feature_map, model_kwargs, **LAIN_OFF, **extra)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


def test_deterministic_eval_and_attention_record(feature_map, model_kwargs, tiny_batch):
    model = build_twin("TWIN_LAIN", feature_map, model_kwargs, num_heads=2)
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    weights, support = long_attention(model, tiny_batch)
    assert weights.shape == support.shape == (tiny_batch.mask.shape[0], 2 * 8)   # heads side by side, no prompts
    assert torch.all(weights[~support] == 0)
    assert torch.all(support.sum(-1) == 2 * tiny_batch.mask.sum(-1).clamp(max=8))


@pytest.mark.parametrize("name", ["TWIN", "TWIN_LAIN"])
def test_empty_history_rows_are_finite(name, feature_map, model_kwargs, tiny_batch):
    model = build_twin(name, feature_map, model_kwargs, use_cross_bias=True, num_heads=2)
    perturb_lain(model)
    batch = empty_rows(tiny_batch, [0, 5, 9])
    model.train()
    out = model(batch).y_pred
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unknown_key_and_bad_category_feature(feature_map, model_kwargs):
    with pytest.raises(TypeError):
        build_twin("TWIN_LAIN", feature_map, model_kwargs, top_k=5)
    with pytest.raises(ValueError, match="same_category"):
        build_twin("TWIN", feature_map, model_kwargs, use_cross_bias=True, category_feature="genre")
    with pytest.raises(ValueError, match="divisible"):
        build_twin("TWIN", feature_map, model_kwargs, attention_dim=10, num_heads=3)


# ----- retrieval -----------------------------------------------------------------------------------
def identity_attention(dim: int, topk: int, **kwargs) -> ConsistentTopKAttention:
    attention = ConsistentTopKAttention(dim, dim, 1, topk, lma=NO_LMA, **kwargs)
    with torch.no_grad():
        for w in (attention.W_q.linear.weight, attention.W_h.linear.weight, attention.W_v.weight, attention.W_o.weight):
            w.copy_(torch.eye(dim))
    return attention


def test_cross_bias_gradients_repeat():
    """Every behaviour gathers its feature value's scalar: repeated rows, yet repeatable gradients."""
    torch.manual_seed(0)
    bias = CrossFeatureBias(num_heads=4, max_len=1000, embedding_dim=8)
    target, history = torch.randint(0, 5, (512,)), torch.randint(0, 5, (512, 1000))
    weights = torch.randn(512, 4, 1000)
    assert_gradients_repeat(lambda: (bias(1000, target, history) * weights).sum(), list(bias.parameters()))


def test_topk_never_returns_padding_while_real_behaviours_remain():
    torch.manual_seed(0)
    dim, width = 4, 12
    target = torch.randn(3, dim)
    sequence = -5 * target.unsqueeze(1) + 0.1 * torch.randn(3, width, dim)   # real scores all negative
    mask = torch.zeros(3, width, dtype=torch.bool)
    mask[0, -6:], mask[1, -2:], mask[2, :] = True, True, True
    sequence = sequence * mask.unsqueeze(-1)                                  # padding tokens = 0 -> score 0
    out = identity_attention(dim, topk=4)(target, sequence, mask)
    for row, real in enumerate((6, 2, 12)):
        chosen = out.index[row, 0][out.selected[row, 0]]
        assert len(chosen) == min(4, real) and torch.all(mask[row, chosen])
    assert torch.all(out.weights[1, 0, 2:] == 0)                             # padding slots get no weight


def test_esu_softmax_uses_exactly_the_retrieval_scores():
    torch.manual_seed(0)
    attention = ConsistentTopKAttention(6, 8, 2, topk=5, lma=NO_LMA)
    target, sequence = torch.randn(4, 6), torch.randn(4, 20, 6)
    mask = torch.ones(4, 20, dtype=torch.bool)
    out = attention(target, sequence, mask)
    query = attention._heads(attention.W_q(target.unsqueeze(1))).squeeze(2)
    scores = attention.behaviour_scores(query, sequence, None, None)
    top = scores.topk(5, dim=-1)
    torch.testing.assert_close(out.weights, torch.softmax(top.values, -1))
    assert torch.equal(out.index.sort(-1).values, top.indices.sort(-1).values)


@pytest.mark.parametrize("with_cache", [False, True])
def test_history_no_longer_than_topk_skips_the_selection(with_cache):
    """T <= k retrieves everything without top-k or gathers; it must equal the selection path, which the
    same rows take once left padding makes them wider than k."""
    torch.manual_seed(0)
    attention = ConsistentTopKAttention(6, 8, 2, topk=8, lma=NO_LMA)
    items = torch.randn(30, 6)
    rows = torch.randint(1, 30, (4, 8))
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, :5] = mask[2, :8] = False                                        # a short row and an empty row
    rows = rows * mask
    target = torch.randn(4, 6)
    if with_cache:
        attention.build_item_cache(items)
    padded_rows = torch.cat([torch.zeros(4, 3, dtype=torch.long), rows], 1)
    padded_mask = torch.cat([torch.zeros(4, 3, dtype=torch.bool), mask], 1)
    with torch.no_grad():
        short = attention(target, None if with_cache else items[rows], mask, item_rows=rows if with_cache else None)
        wide = attention(target, None if with_cache else items[padded_rows], padded_mask,
                         item_rows=padded_rows if with_cache else None)
    assert short.index.shape[-1] == 8 and torch.equal(short.index[0, 0], torch.arange(8))
    torch.testing.assert_close(short.pooled, wide.pooled, atol=1e-6, rtol=1e-6)
    assert torch.equal(short.selected, mask.unsqueeze(1).expand(-1, 2, -1))


# ----- LAIN inside the top-k attention ---------------------------------------------------------------
def lain_condition(batch_size: int, dim: int, length: float = 20.0, prompts: int = 3) -> BranchCondition:
    generator = torch.Generator().manual_seed(3)
    return BranchCondition(torch.full((batch_size,), length),
                           torch.randn(batch_size, prompts, dim, generator=generator) if prompts else None,
                           torch.randn(batch_size, 5, generator=generator))


def lain_attention(temperature: bool = True) -> ConsistentTopKAttention:
    torch.manual_seed(0)
    attention = ConsistentTopKAttention(6, 8, 2, topk=5, lma=LMASettings(length_dim=5, temperature=temperature))
    with torch.no_grad():
        attention.W_q.length_linear.weight.normal_()
        attention.W_h.length_linear.weight.normal_()
    return attention


def test_key_side_constant_leaves_attention_unchanged():
    """Spec s.9 check 5: a per-row constant added to every key (behaviours and prompts) changes no weight."""
    attention = lain_attention()
    target, sequence = torch.randn(4, 6), torch.randn(4, 20, 6)
    mask = torch.rand(4, 20) > 0.3
    condition = lain_condition(4, 6)
    out = attention(target, sequence, mask, condition)
    shift = torch.randn(4, 1, 6) * 3
    shifted = attention(target, sequence + shift, mask, condition._replace(prompts=condition.prompts + shift))
    torch.testing.assert_close(shifted.weights, out.weights, atol=1e-5, rtol=1e-5)
    assert torch.equal(shifted.index, out.index)
    no_key_side = copy.deepcopy(attention)                                   # drop W_he e_len from the keys
    torch.nn.init.zeros_(no_key_side.W_h.length_linear.weight)
    plain = no_key_side(target, sequence, mask, condition)
    torch.testing.assert_close(plain.weights, out.weights, atol=1e-5, rtol=1e-5)
    assert torch.equal(plain.index, out.index)


def test_temperature_flattens_the_softmax_but_not_the_ranking():
    target, sequence = torch.randn(4, 6), torch.randn(4, 20, 6)
    mask = torch.ones(4, 20, dtype=torch.bool)
    condition = lain_condition(4, 6, length=0.0)                              # tau ~ 1 + gamma: flattest
    sharp = lain_attention(temperature=False)(target, sequence, mask, condition)
    flat = lain_attention(temperature=True)(target, sequence, mask, condition)
    assert torch.equal(sharp.index, flat.index)
    assert torch.all(flat.weights.max(-1).values < sharp.weights.max(-1).values)


def test_prompts_are_appended_after_retrieval():
    attention = lain_attention()
    target, sequence = torch.randn(4, 6), torch.randn(4, 20, 6)
    mask = torch.ones(4, 20, dtype=torch.bool)
    mask[0] = False                                                          # an L = 0 row
    condition = lain_condition(4, 6)
    big = condition._replace(prompts=condition.prompts * 100)               # prompts outscoring everything
    out = attention(target, sequence, mask, big)
    without = attention(target, sequence, mask, condition._replace(prompts=None))
    assert out.weights.shape == (4, 2, 5 + 3)
    assert torch.equal(out.index, without.index) and torch.all(out.selected[1:])   # retrieval unchanged
    torch.testing.assert_close(out.weights[0].sum(-1), torch.ones(2))              # L = 0: prompts only
    assert torch.all(out.weights[0, :, :5] == 0)


# ----- cross-feature bias ----------------------------------------------------------------------------
def test_cross_features_and_bias_vary_per_behaviour():
    bias_layer = CrossFeatureBias(num_heads=2, max_len=60, embedding_dim=4)
    history_category = torch.tensor([[0, 3, 5, 3, 3, 7]])
    values = bias_layer.feature_values(torch.tensor([3]), history_category, 6, torch.device("cpu"))
    assert values["recency"].tolist() == [[2, 2, 2, 1, 1, 0]]               # log2 buckets of 5,4,3,2,1,0 newer
    assert values["same_category"].tolist() == [[0, 1, 0, 1, 1, 0]]
    bias = bias_layer(6, torch.tensor([3]), history_category)
    assert bias.shape == (1, 2, 6)
    assert bias[0, :, 3].ne(bias[0, :, 5]).all() and bias[0, :, 1].ne(bias[0, :, 2]).all()


def test_cross_bias_drives_retrieval(feature_map, model_kwargs, tiny_batch):
    """A strong same-category bias makes the GSU pick same-category behaviours first (identical items at
    different recency also get different scores: the bias is per behaviour, not per row)."""
    model = build_twin("TWIN", feature_map, model_kwargs, use_cross_bias=True, cross_features=["same_category"])
    branch = model.branches["long"]
    with torch.no_grad():
        branch.cross_bias.embeddings["same_category"].weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        branch.cross_bias.compression.fill_(1.0)
        branch.cross_bias.beta.fill_(1000.0)
    batch_size, width = tiny_batch.mask.shape
    category = tiny_batch.item_dict["cate_id"].view(batch_size, width + 1)
    same = (category[:, :-1] == category[:, -1:]) & (tiny_batch.mask > 0)
    model.eval()
    with torch.no_grad():
        inputs = model.branch_inputs(tiny_batch)[1]
        out = branch.attention(inputs.target, inputs.history, inputs.mask, None, branch.behaviour_bias(inputs))
    picked_same = torch.gather(same, 1, out.index[:, 0]) & out.selected[:, 0]
    assert torch.equal(picked_same.sum(-1), same.sum(-1).clamp(max=8))


# ----- item-projection cache --------------------------------------------------------------------------
@pytest.mark.parametrize("name,extra", [("TWIN", {}), ("TWIN", {"use_cross_bias": True, "num_heads": 2}),
                                        ("TWIN_LAIN", {"num_heads": 2}), ("TWIN_LAIN", {"use_short_branch": False})])
def test_cached_and_uncached_predictions_are_identical(name, extra, feature_map, model_kwargs, tiny_dataset,
                                                       tiny_batch):
    model = build_twin(name, feature_map, model_kwargs, **extra)
    perturb_lain(model)
    uncached = predict(model, tiny_batch)
    padded = predict(model, left_pad(tiny_batch, 5))
    model.eval()
    model.prepare_inference(tiny_dataset.item_table)
    with torch.no_grad():
        assert model.branches["long"].uses_item_cache()
        cached = model(tiny_batch).y_pred
        cached_padded = model(left_pad(tiny_batch, 5)).y_pred
        window = model.short_seq_len - 1 if "short" in model.branches else 0
        assert model.branch_inputs(tiny_batch)[1].history.shape[1] == window    # long history not embedded
    torch.testing.assert_close(cached, uncached, atol=1e-6, rtol=0)
    torch.testing.assert_close(cached_padded, padded, atol=1e-6, rtol=0)


def test_cache_is_dropped_in_train_mode_and_stale_after_a_step(feature_map, model_kwargs, tiny_dataset, tiny_batch):
    model = build_twin("TWIN", feature_map, model_kwargs)
    branch = model.branches["long"]
    model.eval()
    model.prepare_inference(tiny_dataset.item_table)
    with torch.no_grad():
        assert branch.uses_item_cache()
    assert not branch.uses_item_cache()                                      # autograd on: never the cache
    model.train()
    assert branch.attention.item_cache is None
    trainer = Trainer(model, model.trainer_options)
    model.eval()
    model.prepare_inference(tiny_dataset.item_table)
    trainer.optimizer.zero_grad()                                            # a step taken in eval mode
    model(tiny_batch).y_pred.sum().backward()
    trainer.optimizer.step()
    assert branch.attention.item_cache is None                               # dropped by the step
    fresh = predict(model, tiny_batch)
    for assign in (False, True):                                             # weight loads: the cache is stale
        model.prepare_inference(tiny_dataset.item_table)
        model.load_state_dict(copy.deepcopy(model.state_dict()), assign=assign)   # assign: new tensors
        torch.testing.assert_close(predict(model, tiny_batch), fresh, atol=0, rtol=0)
        assert branch.attention.item_cache is None


# ----- upstream LongCTR parity -----------------------------------------------------------------------
def copy_upstream_weights(ours: ConsistentTopKAttention, upstream) -> None:
    with torch.no_grad():
        ours.W_q.linear.weight.copy_(upstream.W_q.weight)
        ours.W_h.linear.weight.copy_(upstream.W_h.weight)
        ours.W_v.weight.copy_(upstream.W_v.weight)
        ours.W_o.weight.copy_(upstream.W_o.weight)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_parity_with_upstream_topk_attention(num_heads):
    upstream_twin = pytest.importorskip("model_zoo.LongCTR.TWIN.TWIN")
    torch.manual_seed(0)
    dim, topk, width = 12, 6, 30
    upstream = upstream_twin.MultiHeadTopKAttention(dim, 0, 4, 16, topk, num_heads).eval()
    ours = ConsistentTopKAttention(dim, 16, num_heads, topk, lma=NO_LMA).eval()
    copy_upstream_weights(ours, upstream)
    target, sequence = torch.randn(5, dim), torch.randn(5, width, dim)
    lengths = torch.tensor([30, 6, 17, 9, 25])                               # every row >= topk real behaviours
    mask = torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)
    sequence = sequence * mask.unsqueeze(-1)                                 # pre-padded, padding tokens 0
    with torch.no_grad():
        expected = upstream(target, sequence, mask.float())
        got = ours(target, sequence, mask).pooled
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def upstream_batch(batch: SequenceBatch):
    return ({k: v for k, v in batch.batch_dict.items()}, dict(batch.item_dict), batch.mask.float())


def test_upstream_short_mask_is_shifted_by_one(feature_map, model_kwargs, tiny_batch):
    """Deliberate difference: upstream masks the short window with mask[:, -S:-1], so a 1-item user's only
    behaviour is masked out of the short branch; ours keeps it."""
    upstream_twin = pytest.importorskip("model_zoo.LongCTR.TWIN.TWIN")
    upstream = upstream_twin.TWIN(feature_map, optimizer="adam", loss="binary_crossentropy",
                                  model_root=model_kwargs["model_root"], embedding_dim=8, short_seq_len=10,
                                  topk=8, dnn_hidden_units=[32], verbose=0, metrics=["AUC"])
    seen = {}
    upstream.short_attention.register_forward_hook(lambda m, args, out: seen.update(mask=args[2].clone()))
    batch_size, width = tiny_batch.mask.shape
    one_item = empty_rows(tiny_batch, list(range(batch_size)))
    mask = one_item.mask.clone()
    mask[:, -1] = 1                                                          # exactly the latest behaviour
    item_dict = {k: one_item.item_dict[k].view(batch_size, -1).clone() for k in one_item.item_dict}
    for k in item_dict:
        item_dict[k][:, -2] = tiny_batch.item_dict[k].view(batch_size, -1)[:, -2]
    one_item = one_item._replace(mask=mask, item_dict={k: v.view(-1) for k, v in item_dict.items()})
    upstream.eval()
    with torch.no_grad():
        upstream(upstream_batch(one_item))
    assert seen["mask"].sum() == 0                                            # upstream: the item is masked
    ours = build_twin("TWIN", feature_map, model_kwargs)
    _, short_mask = ours.branches["short"].window_of(torch.zeros(batch_size, width, 8), one_item.mask > 0)
    assert torch.all(short_mask.sum(-1) == 1) and torch.all(short_mask[:, -1])


def test_upstream_cross_feature_bias_crashes_ours_works():
    """Deliberate difference: upstream Kc_cross_features > 0 fails on any sequence longer than 1 (and even
    fixed it adds one bias per row, constant over positions); ours is per behaviour (tested above)."""
    upstream_twin = pytest.importorskip("model_zoo.LongCTR.TWIN.TWIN")
    upstream = upstream_twin.MultiHeadTopKAttention(input_dim=12, Kc=1, embedding_dim=4, attention_dim=16, topk=4)
    with pytest.raises(RuntimeError):
        upstream(torch.randn(2, 12), torch.randn(2, 10, 12), torch.ones(2, 10))
    ours = ConsistentTopKAttention(12, 16, 1, topk=4, lma=NO_LMA)
    bias = CrossFeatureBias(1, max_len=10)(10, torch.tensor([1, 2]), torch.randint(0, 3, (2, 10)))
    out = ours(torch.randn(2, 12), torch.randn(2, 10, 12), torch.ones(2, 10, dtype=torch.bool), bias=bias)
    assert torch.isfinite(out.pooled).all()
