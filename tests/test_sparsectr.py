"""SparseCTR and SparseCTR_LAIN: chunking, the three branches against dense references, the temporal bias,
masking, causality, the candidate-only last layer, time fallback and the LAIN wiring (spec section 9)."""
import math

import numpy as np
import pytest
import torch
from model_checks import (
    assert_lain_off_is_backbone,
    assert_output_shape,
    assert_padding_invariant,
    assert_window_respected,
    build_model,
    predict,
    truncate,
)

from lainctr.layers.attention import masked_softmax
from lainctr.layers.evo_attention import EvoAttention, Memory, sparse_layout
from lainctr.layers.lain import NO_LMA, BranchCondition, LMASettings
from lainctr.layers.temporal_bias import TIME_TERMS, RelTemporalBias, time_features
from lainctr.layers.time_chunking import chunk_layout, equal_chunks, gap_chunks

SMALL = dict(model_dim=24, num_heads=4, num_layers=2, num_chunks=4, tail_tokens=2, local_window=8)
LAIN_OFF = dict(use_prompts=False, use_qk_conditioning=False, use_temperature=False)
SWITCHES = [{}, {"use_sle": False}, {"use_prompts": False}, {"use_qk_conditioning": False},
            {"use_temperature": False}, {"length_embedding_dim": 0}, {"use_short_branch": True},
            {"use_short_branch": True, "lain_on_short_branch": False}]
DAY = 86_400


def build(name, feature_map, model_kwargs, **extra):
    model = build_model(name, feature_map, model_kwargs, **{**SMALL, **extra})
    perturb_lain(model)
    return model


def perturb_lain(model):
    """Give the zero-initialised QK shifts visible values (a fresh LAIN model would hide their errors)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "length_linear" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def untimed(batch):
    return batch._replace(history_time=None, target_time=None)


# ----- chunking --------------------------------------------------------------------------------------
def reference_chunks(time, mask, num_chunks):
    """Per-sample Python reference of gap_chunks: cut before the P' - 1 largest gaps between real behaviours,
    ties to the more recent column."""
    out = np.full(mask.shape, -1)
    for row in range(mask.shape[0]):
        real = np.flatnonzero(mask[row])
        gaps = sorted(((time[row, c] - time[row, c - 1], c) for c in real[1:]), key=lambda g: (-g[0], -g[1]))
        cuts = [c for _, c in gaps[:max(min(num_chunks, len(real)) - 1, 0)]]
        for c in real:
            out[row, c] = sum(cut <= c for cut in cuts)
    return out


def random_histories(rows=40, width=12, seed=0):
    """Pre-padded rows with L = 0..width (0 and 1 included), gaps from a small set (many ties)."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[0, 1, 2, width], rng.integers(0, width + 1, rows - 4)])
    mask = np.arange(width)[None, :] >= width - lengths[:, None]
    gaps = rng.choice([0, 1, 2, 5, 5, 3600], size=(rows, width))
    time = np.where(mask, 1_700_000_000 + np.cumsum(gaps, axis=1), 0)
    return torch.from_numpy(time), torch.from_numpy(mask)


@pytest.mark.parametrize("num_chunks", [1, 3, 5, 20])
def test_gap_chunks_equal_the_per_sample_reference(num_chunks):
    time, mask = random_histories()
    kappa = gap_chunks(time, mask, num_chunks)
    np.testing.assert_array_equal(kappa.numpy(), reference_chunks(time.numpy(), mask.numpy(), num_chunks))
    length = mask.sum(-1)
    for row in range(len(mask)):
        real = kappa[row][mask[row]]
        assert len(torch.unique(real)) == min(num_chunks, int(length[row]))       # exactly P' non-empty chunks
        assert torch.all(real.diff() >= 0)
    layout = chunk_layout(kappa, num_chunks, tail_tokens=2)
    assert torch.equal((layout.count > 0).sum(-1), length.clamp(max=num_chunks))


def test_gap_chunks_by_hand_and_ties_to_the_recent_column():
    #                 padding | behaviours at t = 0, 10, 11, 50, 51, 91 (gaps 10, 1, 39, 1, 40)
    time = torch.tensor([[0, 0, 0, 10, 11, 50, 51, 91]])
    mask = torch.tensor([[False, False, True, True, True, True, True, True]])
    assert gap_chunks(time, mask, 3).tolist() == [[-1, -1, 0, 0, 0, 1, 1, 2]]
    tied = torch.tensor([[5, 6, 7, 8]])                                  # three equal gaps: the latest cut wins
    assert gap_chunks(tied, torch.ones(1, 4, dtype=torch.bool), 2).tolist() == [[0, 0, 0, 1]]


def test_equal_chunks_and_layout():
    mask = torch.tensor([[False, True, True, True, True, True, True], [False] * 6 + [True], [False] * 7])
    kappa = equal_chunks(mask, 3)
    assert kappa.tolist() == [[-1, 0, 0, 1, 1, 2, 2], [-1] * 6 + [0], [-1] * 7]
    layout = chunk_layout(kappa, 3, tail_tokens=2)
    assert layout.count.tolist() == [[2, 2, 2], [1, 0, 0], [0, 0, 0]]
    assert layout.end[0].tolist() == [2, 4, 6] and layout.end[1, 0] == 6
    assert layout.tail_columns[0].tolist() == [2, 1, 4, 3, 6, 5]
    assert layout.tail_valid[1].tolist() == [True, False, False, False, False, False]
    assert not layout.tail_valid[2].any()


# ----- temporal bias ---------------------------------------------------------------------------------
def test_temporal_bias_by_hand():
    bias = RelTemporalBias(num_heads=4)
    np.testing.assert_allclose(bias.slopes.detach()[0].numpy(), [1, 2 ** -2, 2 ** -4, 2 ** -6])
    monday = 1_700_438_400                      # 2023-11-20 00:00 UTC, a Monday
    saturday, sunday = monday + 5 * DAY, monday + 6 * DAY
    feats = lambda *t: time_features(torch.tensor([list(t)]))         # noqa: E731
    assert feats(monday, saturday, sunday).weekend.tolist() == [[False, True, True]]
    terms = lambda a, b: bias.pair_terms(feats(a), feats(b))[0, :, 0]     # noqa: E731  (recency, hour, weekend)
    assert terms(monday, monday).tolist() == [0, 0, 0]
    assert terms(monday, monday + DAY)[0] == 16                         # floor(log2 86400)
    assert terms(monday + 3600, monday)[1] == pytest.approx(terms(monday + 23 * 3600, monday)[1])
    assert terms(saturday, monday)[2] == 1 and terms(saturday, sunday)[2] == 0
    value = bias(feats(monday), feats(monday + DAY))
    torch.testing.assert_close(value[0, :, 0], -16 * bias.slopes[0].detach())
    with torch.no_grad():
        bias.slopes.zero_()
    assert torch.all(bias(feats(monday, saturday), feats(sunday, monday + 7)) == 0)


def test_utc_offset_moves_hours_and_weekdays():
    friday_late = 1_700_438_400 + 4 * DAY + 23 * 3600                  # Friday 23:00 UTC
    local = time_features(torch.tensor([friday_late]), utc_offset_hours=8)
    assert local.hour.tolist() == [7] and local.weekend.tolist() == [True]


# ----- EvoAttention against dense masked attention ----------------------------------------------------
def attention_case(seed=0, width=12, num_chunks=3, tail_tokens=2, window=3, prompts=0, lma=NO_LMA):
    torch.manual_seed(seed)
    time, mask = random_histories(rows=10, width=width, seed=seed)
    kappa = gap_chunks(time, mask, num_chunks)
    times = time_features(torch.cat([time, time[:, -1:]], dim=1))
    layout = sparse_layout(mask, chunk_layout(kappa, num_chunks, tail_tokens), times, window, TIME_TERMS)
    attention = EvoAttention(16, 4, window, ("recency", "hour", "weekend"), lma=lma)
    with torch.no_grad():
        attention.temporal_bias.slopes.normal_()
    x = torch.randn(len(mask), width + 1, 16)
    memory = Memory(torch.randn(len(mask), 1, 16), torch.randn(len(mask), prompts, 16) if prompts else None)
    return attention, x, memory, layout


def dense(attention, q, keys, values, visible, query_times, key_times, memory=None, tau=None):
    """Plain masked softmax attention over explicit keys: q (B, H, n, h), keys (B, H, K, h), visible (B, n, K);
    logits divided by tau (B,) if given."""
    logits = q @ keys.transpose(-1, -2) / math.sqrt(attention.head_dim)
    logits = logits + attention.temporal_bias(query_times.select(lambda t: t[:, :, None]),
                                              key_times.select(lambda t: t[:, None, :]))
    visible = visible.unsqueeze(1).expand(logits.shape)
    if memory is not None:
        memory_k, memory_v = memory
        logits = torch.cat([logits, q @ memory_k.transpose(-1, -2) / math.sqrt(attention.head_dim)], -1)
        visible = torch.cat([visible, visible.new_ones(*visible.shape[:-1], memory_k.shape[2])], -1)
        values = torch.cat([values, memory_v], dim=2)
    if tau is not None:
        logits = logits / tau.view(-1, 1, 1, 1)
    return masked_softmax(logits, visible) @ values


def projections(attention, x):
    q, k, v = attention.heads(attention.W_q(x)), attention.heads(attention.W_k(x)), attention.heads(attention.W_v(x))
    return q, k, v


@pytest.mark.parametrize("seed,lma,width,window", [(0, NO_LMA, 12, 3), (1, NO_LMA, 12, 3),
                                                   (2, LMASettings(temperature=True), 12, 3),
                                                   (3, NO_LMA, 70, 40)])       # query blocks of 16 < w
def test_local_branch_equals_dense_banded_attention(seed, lma, width, window):
    """All queries (blocked) and the candidate alone, against dense masked attention."""
    attention, x, memory, layout = attention_case(seed, width=width, window=window, lma=lma)
    q, k, v = projections(attention, x)
    u_k, u_v = attention.heads(attention.W_k(memory.profile)), attention.heads(attention.W_v(memory.profile))
    n = x.shape[1]
    i, j = torch.arange(n).view(-1, 1), torch.arange(n).view(1, -1)
    visible = layout.valid.unsqueeze(1) & (j <= i) & (j >= i - attention.window)
    condition = tau = None
    if lma.temperature:
        condition = BranchCondition(torch.arange(len(x)).float() * 30, None, None)
        tau = attention.temperature(condition.length)
        assert tau.min() < 1.5 < tau.max()
    want = dense(attention, q, k, v, visible, layout.times, layout.times, (u_k, u_v), tau)
    got, _ = attention.local_branch(q, k, v, False, layout, u_k, u_v, condition)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    last, _ = attention.local_branch(q[:, :, -1:], k, v, True, layout, u_k, u_v, condition)   # the candidate alone
    torch.testing.assert_close(last, want[:, :, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_global_and_transition_branches_equal_dense_attention(seed):
    attention, x, memory, layout = attention_case(seed, prompts=2)
    q, k, v = projections(attention, x)
    p_k, p_v = attention.heads(attention.W_k(memory.prompts)), attention.heads(attention.W_v(memory.prompts))
    n, chunks = x.shape[1], layout.chunks
    columns = torch.arange(n)
    # global: explicit summaries from a per-row loop
    rows, heads, width = x.shape[0], attention.num_heads, n - 1
    summary_k = torch.zeros(rows, heads, 3, attention.head_dim)
    summary_v = torch.zeros_like(summary_k)
    for row in range(rows):
        for p in range(3):
            members = chunks.index[row] == p
            if members.any():
                summary_k[row, :, p] = k[row, :, :width][:, members].mean(1)
                summary_v[row, :, p] = v[row, :, :width][:, members].mean(1)
    visible = (chunks.count > 0).unsqueeze(1) & (chunks.end.unsqueeze(1) <= columns.view(1, -1, 1))
    want = dense(attention, q, summary_k, summary_v, visible, layout.times, layout.summary_times, (p_k, p_v))
    got, _ = attention.global_branch(q, k, v, False, layout, p_k, p_v, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # transition: every column, visible iff it is one of its chunk's last m and not after the query
    is_tail = torch.zeros(rows, width, dtype=torch.bool)
    for row in range(rows):
        for p in range(3):
            members = torch.nonzero(chunks.index[row] == p).view(-1)
            is_tail[row, members[-2:]] = True
    visible = is_tail.unsqueeze(1) & (torch.arange(width).view(1, 1, -1) <= columns.view(1, -1, 1))
    behaviour_times = layout.times.select(lambda t: t[:, :width])
    want = dense(attention, q, k[:, :, :width], v[:, :, :width], visible, layout.times, behaviour_times, (p_k, p_v))
    got, _ = attention.transition_branch(q, k, v, False, layout, p_k, p_v, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_with_every_behaviour_its_own_chunk_global_is_causal_attention():
    """P >= L: global = transition = dense causal attention over the real behaviours (spec test 6)."""
    attention, x, memory, layout = attention_case(0, num_chunks=20, tail_tokens=1)
    q, k, v = projections(attention, x)
    n = x.shape[1]
    columns = torch.arange(n)
    visible = layout.valid[:, :-1].unsqueeze(1) & (torch.arange(n - 1).view(1, 1, -1) <= columns.view(1, -1, 1))
    want = dense(attention, q, k[:, :, :-1], v[:, :, :-1], visible, layout.times,
                 layout.times.select(lambda t: t[:, :-1]))
    for branch in (attention.global_branch, attention.transition_branch):
        got, _ = branch(q, k, v, False, layout, None, None, None)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ----- the model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,extra", [("SparseCTR", {}), ("SparseCTR", {"model_dim": 0, "num_layers": 1}),
                                        ("SparseCTR", {"time_terms": [], "use_type_embedding": False,
                                                       "final_norm": False}),
                                        ("SparseCTR", {"use_short_branch": True, "utc_offset_hours": 8})]
                         + [("SparseCTR_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    """Extra left padding with garbage times there (model_checks.left_pad), i.e. a wider batch: same y."""
    model = build(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)
    model.eval()
    with torch.no_grad():
        long = model(tiny_batch).branches["long"]
    assert long.interest.shape == (64, model.branches["long"].output_dim)


@pytest.mark.parametrize("name", ["SparseCTR", "SparseCTR_LAIN"])
def test_padded_columns_are_never_read(name, feature_map, model_kwargs, tiny_batch):
    """Garbage items (non-zero embeddings) and times at padded columns leave y unchanged."""
    batch_size, width = tiny_batch.mask.shape
    padded = torch.cat([tiny_batch.mask == 0, torch.zeros(batch_size, 1, dtype=torch.bool)], dim=1)
    garbage = tiny_batch._replace(
        item_dict={k: v.view(batch_size, width + 1).masked_fill(padded, 3).view(-1) for k, v in tiny_batch.item_dict.items()},
        history_time=tiny_batch.history_time.masked_fill(padded[:, :-1], 42))
    model = build(name, feature_map, model_kwargs)
    torch.testing.assert_close(predict(model, garbage), predict(model, tiny_batch), atol=1e-5, rtol=1e-5)


def test_position_time_source_and_fallback(feature_map, model_kwargs, tiny_batch):
    model = build("SparseCTR", feature_map, model_kwargs, time_source="position", time_terms=["recency"])
    assert not model.reads_time() and build("SparseCTR_LAIN", feature_map, model_kwargs).reads_time()
    assert not build_model("DIN", feature_map, model_kwargs).reads_time()    # its loaders skip the times
    assert_padding_invariant(model, untimed(tiny_batch))
    torch.testing.assert_close(predict(model, untimed(tiny_batch)), predict(model, tiny_batch), atol=0, rtol=0)
    with pytest.raises(ValueError, match="time_source: position"):
        predict(build("SparseCTR", feature_map, model_kwargs), untimed(tiny_batch))
    with pytest.raises(ValueError, match="no clock"):
        build("SparseCTR", feature_map, model_kwargs, time_source="position")


def test_constructor_rejects_bad_settings(feature_map, model_kwargs):
    with pytest.raises(ValueError, match="divisible"):
        build("SparseCTR", feature_map, model_kwargs, model_dim=18)
    with pytest.raises(TypeError):
        build("SparseCTR_LAIN", feature_map, model_kwargs, num_chunk=3)
    for key in ("num_chunks", "tail_tokens", "local_window"):
        with pytest.raises(ValueError, match=key):
            build("SparseCTR", feature_map, model_kwargs, **{key: 0})
    with pytest.raises(ValueError, match="time_terms"):
        build("SparseCTR", feature_map, model_kwargs, time_terms=["season"])


def test_behaviour_beyond_max_len_has_no_effect(feature_map, model_kwargs, tiny_dataset):
    assert_window_respected(build("SparseCTR", feature_map, model_kwargs), tiny_dataset, check_oldest=True)


def encoder_states(model, batch):
    """Every layer's states of every token (no candidate-only shortcut) and the branch's inputs."""
    branch = model.branches["long"]
    inputs = model.branch_inputs(batch)[1]
    return branch, inputs, branch.stack.states(branch.tokens(inputs), branch.memory(inputs, None), branch.layout(inputs))


def test_causality_and_candidate_isolation(feature_map, model_kwargs, tiny_batch):
    """Changing the token at column t (times fixed) leaves every layer's states before t unchanged; the
    candidate changes no behaviour state."""
    model = build("SparseCTR", feature_map, model_kwargs)
    model.eval()
    with torch.no_grad():
        branch, inputs, states = encoder_states(model, tiny_batch)
        tokens, memory, layout = branch.tokens(inputs), branch.memory(inputs, None), branch.layout(inputs)
        width = tokens.shape[1] - 1
        for column in (width - 20, width - 1, width):                   # width = the candidate
            changed = tokens.clone()
            changed[:, column] += torch.randn_like(changed[:, column])
            for before, after in zip(states, branch.stack.states(changed, memory, layout)):
                torch.testing.assert_close(after[:, :column], before[:, :column], atol=0, rtol=0)
                real = inputs.mask[:, column] if column < width else torch.ones(len(tokens), dtype=torch.bool)
                assert (after[real, column] - before[real, column]).abs().amax() > 1e-4


def test_candidate_only_last_layer_equals_the_full_pass(feature_map, model_kwargs, tiny_batch):
    model = build("SparseCTR_LAIN", feature_map, model_kwargs, use_prompts=False)
    model.eval()
    with torch.no_grad():
        branch, inputs, states = encoder_states(model, tiny_batch)
        state, record = branch.stack(branch.tokens(inputs), branch.memory(inputs, None), branch.layout(inputs), None)
    torch.testing.assert_close(state, states[-1][:, -1], atol=1e-6, rtol=1e-5)
    assert record.shape == inputs.mask.shape and torch.all(record[~inputs.mask] == 0)


@pytest.mark.parametrize("name", ["SparseCTR", "SparseCTR_LAIN"])
def test_degenerate_rows_are_finite(name, feature_map, model_kwargs, tiny_batch):
    """L = 0, L = 1, L < P, all timestamps equal: finite outputs and gradients."""
    batch = truncate(truncate(truncate(tiny_batch, [0, 1], keep=0), [2, 3], keep=1), [4, 5], keep=2)
    frozen = batch.history_time.clone()
    frozen[6:9] = torch.where(batch.mask[6:9] > 0, 1_700_000_000, 0)
    batch = batch._replace(history_time=frozen)
    model = build(name, feature_map, model_kwargs)
    model.train()
    out = model(batch).y_pred
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_zero_slopes_are_no_temporal_bias(feature_map, model_kwargs, tiny_batch):
    timed = build("SparseCTR", feature_map, model_kwargs)
    plain = build("SparseCTR", feature_map, model_kwargs, time_terms=[])
    with torch.no_grad():
        for name, p in timed.named_parameters():
            if name.endswith("slopes"):
                p.zero_()
    missing = plain.load_state_dict(timed.state_dict(), strict=False).unexpected_keys
    assert missing and all(k.endswith("slopes") for k in missing)
    torch.testing.assert_close(predict(plain, tiny_batch), predict(timed, tiny_batch), atol=0, rtol=0)
    assert not torch.equal(predict(build("SparseCTR", feature_map, model_kwargs), tiny_batch), predict(plain, tiny_batch))


# ----- LAIN ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [{}, {"use_short_branch": True}])
def test_lain_all_off_is_sparsectr(extra, feature_map, model_kwargs, tiny_batch):
    backbone = build("SparseCTR", feature_map, model_kwargs, **extra)
    variant = build("SparseCTR_LAIN", feature_map, model_kwargs, **LAIN_OFF, **extra)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


def test_prompts_reach_every_branch_and_stay_out_of_the_record(feature_map, model_kwargs, tiny_batch):
    model = build("SparseCTR_LAIN", feature_map, model_kwargs)
    attention = model.branches["long"].stack.blocks[0].attention
    empty = truncate(tiny_batch, [0], keep=0)
    condition = model.length_conditions(empty.mask > 0, empty.history_length)["long"]
    branch, inputs = model.branches["long"], model.branch_inputs(empty)[1]
    tokens, memory, layout = branch.tokens(inputs), branch.memory(inputs, condition), branch.layout(inputs)
    q, k, v = projections(attention, tokens)
    p_k, p_v = attention.heads(attention.W_k(memory.prompts)), attention.heads(attention.W_v(memory.prompts))
    for branch_fn in (attention.global_branch, attention.transition_branch):
        with_prompts, _ = branch_fn(q, k, v, False, layout, p_k, p_v, None)
        without, _ = branch_fn(q, k, v, False, layout, None, None, None)
        assert with_prompts[0, :, -1].abs().sum() > 0 and without[0, :, -1].abs().sum() == 0
    model.eval()
    with torch.no_grad():
        record = model(empty).branches["long"]
    assert torch.all(record.attention[~record.support] == 0) and record.attention[0].sum() == 0
    assert torch.all(record.attention.sum(-1) < 1)                      # u and the prompts hold the rest


def test_key_shift_leaves_the_weights_unchanged():
    """The key side's e_len term adds one vector to every key of a row: it cancels in every softmax."""
    torch.manual_seed(0)
    attention, x, memory, layout = attention_case(0, prompts=2)
    lma = LMASettings(length_dim=5)
    conditioned = EvoAttention(16, 4, 3, ("recency", "hour", "weekend"), lma=lma)
    conditioned.load_state_dict(attention.state_dict(), strict=False)
    with torch.no_grad():
        conditioned.W_k.length_linear.weight.normal_()
    condition = BranchCondition(torch.zeros(len(x)), None, torch.randn(len(x), 5))
    torch.testing.assert_close(conditioned(x, memory, layout, condition).out, attention(x, memory, layout).out,
                               atol=1e-5, rtol=1e-5)
