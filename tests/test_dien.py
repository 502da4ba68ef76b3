"""DIEN and DIEN_LAIN: recurrent pieces, shapes, masking, max_len, LAIN wiring, upstream parity, learning."""
import numpy as np
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
    labels_of,
    left_pad,
    long_attention,
    model_inputs,
    predict,
    training_loss,
)
from torch import nn

from lainctr.data.loader import SequenceBatch, SequenceBatchLoader
from lainctr.layers.lain import BranchCondition, LMASettings
from lainctr.layers.recurrent import AUGRU, DotStateAttention, NextBehaviourLoss, left_align, run_gru
from lainctr.models import lain_parameter_count

SWITCHES = LAIN_SWITCHES + [{"attention_type": "bilinear_attention"},
            {"attention_type": "dot_attention", "use_short_branch": False}]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The GRU loops are many tiny ops; on a shared 2-core host a second intra-op thread makes them
    several times slower (it waits for a descheduled sibling), so this file runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def with_mask(batch: SequenceBatch, mask: torch.Tensor) -> SequenceBatch:
    """The batch with a smaller history mask (B, T): dropped behaviours become padding (item rows 0)."""
    keep = torch.cat([mask, torch.ones(len(mask), 1)], dim=1) > 0          # the target column stays
    items = {k: v * keep.view(-1, *([1] * (v.dim() - 1))).to(v.dtype) for k, v in batch.item_dict.items()}
    return batch._replace(item_dict=items, mask=mask.float(), history_length=mask.sum(1).long(),
                          item_index=batch.item_index * keep)


def with_empty_rows(batch: SequenceBatch, rows) -> SequenceBatch:
    """The same batch with the histories of ``rows`` removed (L = 0)."""
    mask = batch.mask.clone()
    mask[rows] = 0
    return with_mask(batch, mask)


def with_other_history_items(batch: SequenceBatch) -> SequenceBatch:
    """Every real history behaviour replaced by another item id/category; targets unchanged."""
    history = torch.cat([batch.mask, torch.zeros(len(batch.mask), 1)], dim=1).view(-1) > 0
    items = {}
    for k, v in batch.item_dict.items():
        flags = history.view(-1, *([1] * (v.dim() - 1)))
        items[k] = torch.where(flags, v % 7 + 1, v)
    return batch._replace(item_dict=items)


# ----- recurrent pieces ------------------------------------------------------------------------
def test_left_align_moves_prompts_and_items_to_the_front():
    sequence = torch.arange(1, 8, dtype=torch.float).view(1, 7, 1).repeat(3, 1, 1)   # [P1 P2 | 3 4 5 6 7]
    mask = torch.tensor([[1, 1, 0, 0, 0, 6, 7], [1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]]) > 0
    aligned, lengths, source = left_align(sequence, mask)
    assert lengths.tolist() == [4, 2, 0] and aligned.shape == (3, 4, 1)
    assert aligned[..., 0].tolist() == [[1, 2, 6, 7], [1, 2, 0, 0], [0, 0, 0, 0]]
    assert source[0].tolist() == [0, 1, 5, 6]


def test_run_gru_reads_each_row_from_its_first_item():
    torch.manual_seed(0)
    gru = nn.GRU(4, 4, batch_first=True)
    x = torch.randn(3, 6, 4)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0] * 6]) > 0
    aligned, lengths, _ = left_align(x, mask)
    padded, packed = run_gru(gru, aligned, lengths, pack=False), run_gru(gru, aligned, lengths, pack=True)
    torch.testing.assert_close(padded, packed)
    torch.testing.assert_close(padded[0, :3], gru(x[:1, 3:])[0][0])     # the row alone, without padding
    assert torch.all(padded[0, 3:] == 0) and torch.all(padded[2] == 0)


def test_augru_is_a_gru_at_full_attention_and_skips_zero_attention_steps():
    torch.manual_seed(0)
    gru, augru = nn.GRU(4, 5, batch_first=True), AUGRU(4, 5)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(augru, name).copy_(getattr(gru, name + "_l0"))
            getattr(augru, name)[5:10] *= -1       # DIEN's u_t = 1 - nn.GRU's z_t
    x = torch.randn(3, 7, 4)
    torch.testing.assert_close(augru(x, torch.ones(3, 7)), gru(x)[1][0])
    attention = torch.rand(3, 7)
    gaps = attention.clone()
    gaps[:, [1, 4]] = 0.0                     # zero-attention steps leave the state exactly unchanged
    kept = [0, 2, 3, 5, 6]
    torch.testing.assert_close(augru(x, gaps), augru(x[:, kept], attention[:, kept]), atol=0, rtol=0)


def test_dot_attention_ignores_a_key_side_length_shift():
    """Spec check 5: a per-row constant added to every key does not change dot-product weights."""
    torch.manual_seed(0)
    attention = DotStateAttention(6, bilinear=False, lma=LMASettings(length_dim=3))
    states, target, mask = torch.randn(2, 5, 6), torch.randn(2, 6), torch.ones(2, 5, dtype=torch.bool)
    condition = BranchCondition(torch.tensor([3.0, 50.0]), None, torch.randn(2, 3))
    nn.init.normal_(attention.length_shift.key.weight)
    _, shifted = attention(target, states, mask, condition)
    nn.init.zeros_(attention.length_shift.key.weight)
    _, plain = attention(target, states, mask, condition)
    torch.testing.assert_close(shifted, plain)


def test_next_behaviour_loss_uses_consecutive_real_behaviours_only():
    torch.manual_seed(0)
    loss = NextBehaviourLoss(4, 4, (8,))
    states, tokens = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    assert loss(states, tokens, torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]) > 0).item() == 0.0
    real = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 0, 1, 1]]) > 0
    value = loss(states, tokens, real)
    assert torch.isfinite(value) and value > 0
    states2 = states.clone()
    states2[:, 4] += 100.0                    # a state with no real successor does not take part
    states2[0, 0] += 100.0                    # nor a state at a non-real position
    torch.manual_seed(1)
    a = loss(states, tokens, real)
    torch.manual_seed(1)
    torch.testing.assert_close(loss(states2, tokens, real), a)


def test_next_behaviour_loss_is_the_bce_of_the_scorer_on_concatenations():
    """The split first layer equals the scorer on [h_t; e_{t+1}] and [h_t; e'] (same negatives)."""
    torch.manual_seed(0)
    loss = NextBehaviourLoss(4, 3, (8,))
    states, tokens = torch.randn(3, 6, 4), torch.randn(3, 6, 3)
    real = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]]) > 0
    torch.manual_seed(5)
    value = loss(states, tokens, real)
    pairs = real[:, :-1] & real[:, 1:]
    state, positive, pool = states[:, :-1][pairs], tokens[:, 1:][pairs], tokens[real]
    torch.manual_seed(5)
    negative = pool[torch.randint(pool.shape[0], (state.shape[0],))]
    explicit = (torch.nn.functional.binary_cross_entropy_with_logits(
                    loss.scorer(torch.cat([state, positive], -1)), torch.ones(state.shape[0], 1))
                + torch.nn.functional.binary_cross_entropy_with_logits(
                    loss.scorer(torch.cat([state, negative], -1)), torch.zeros(state.shape[0], 1)))
    torch.testing.assert_close(value, explicit)


def test_next_behaviour_loss_gradients_repeat():
    """Same seed, same inputs -> the same gradients: the negatives repeat rows of the pool."""
    torch.manual_seed(0)
    loss = NextBehaviourLoss(16, 16, (32,))
    states = torch.randn(512, 200, 16, requires_grad=True)
    tokens = torch.randn(512, 200, 16, requires_grad=True)
    real = torch.arange(200).unsqueeze(0) >= torch.randint(0, 200, (512, 1))

    def seeded_loss():
        torch.manual_seed(1)
        return loss(states, tokens, real)
    assert_gradients_repeat(seeded_loss, [states, tokens], trials=6)


# ----- models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,extra", [("DIEN", {}), ("DIEN", {"attention_type": "bilinear_attention"}),
                                        ("DIEN", {"attention_type": "dot_attention", "use_short_branch": False}),
                                        ("DIEN", {"use_attention_softmax": False, "use_auxiliary_loss": False}),
                                        ("DIEN", {"attention_hidden_activations": "Dice"})]
                         + [("DIEN_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)


@pytest.mark.parametrize("name", ["DIEN", "DIEN_LAIN"])
def test_behaviour_beyond_max_len_has_no_effect(name, feature_map, model_kwargs, tiny_dataset):
    model = build_model(name, feature_map, model_kwargs)
    assert_window_respected(model, tiny_dataset, checked_rows=3, check_oldest=True)   # the GRU reads the oldest


@pytest.mark.parametrize("attention_type", ["din_attention", "dot_attention"])
def test_lain_all_off_is_dien(attention_type, feature_map, model_kwargs, tiny_batch):
    backbone = build_model("DIEN", feature_map, model_kwargs, attention_type=attention_type)
    variant = build_model("DIEN_LAIN", feature_map, model_kwargs, attention_type=attention_type, **LAIN_OFF)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


@pytest.mark.parametrize("attention_type", ["din_attention", "bilinear_attention"])
def test_fresh_lain_without_prompts_and_temperature_starts_as_dien(attention_type, feature_map, model_kwargs,
                                                                   tiny_batch):
    """QK conditioning is zero/identity-initialised: only prompts and temperature change a fresh model."""
    backbone = build_model("DIEN", feature_map, model_kwargs, attention_type=attention_type)
    variant = build_model("DIEN_LAIN", feature_map, model_kwargs, attention_type=attention_type, use_prompts=False,
                    use_temperature=False)
    variant.load_state_dict(backbone.state_dict(), strict=False)
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch))


def test_prompts_sit_directly_before_the_first_real_item(feature_map, model_kwargs, tiny_batch, monkeypatch):
    """The GRU input is [P; items; 0 ...] with length L + k; the auxiliary loss sees the items only."""
    model = build_model("DIEN_LAIN", feature_map, model_kwargs, num_prompts=3)
    seen = {}

    def capture(gru, aligned, lengths, pack=None):
        seen["aligned"], seen["lengths"] = aligned, lengths
        return run_gru(gru, aligned, lengths, pack)

    branch = model.branches["long"]
    monkeypatch.setitem(type(branch).forward.__globals__, "run_gru", capture)
    original = branch.auxiliary_loss.forward
    monkeypatch.setattr(branch.auxiliary_loss, "forward",
                        lambda states, tokens, real: seen.update(real=real) or original(states, tokens, real))
    model.train()
    model(tiny_batch)
    target, history, mask = model_inputs(model, tiny_batch)
    prompts = model.length_conditions(mask, tiny_batch.history_length)["long"].prompts
    lengths = mask.sum(1)
    assert torch.equal(seen["lengths"], lengths + 3)
    for row in (0, int(torch.argmin(lengths))):
        n = int(lengths[row])
        torch.testing.assert_close(seen["aligned"][row, :3], prompts[row])
        torch.testing.assert_close(seen["aligned"][row, 3:3 + n], history[row, mask[row]])
        assert torch.all(seen["aligned"][row, 3 + n:] == 0)
        assert seen["real"][row].tolist() == [False] * 3 + [True] * n + [False] * (seen["real"].shape[1] - 3 - n)


@pytest.mark.parametrize("name", ["DIEN", "DIEN_LAIN"])
def test_empty_histories_give_finite_outputs_and_gradients(name, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs)
    batch = with_empty_rows(tiny_batch, [0, 3, 5])
    model.train()
    out = model(batch)
    assert torch.all(torch.isfinite(out.y_pred)) and torch.isfinite(out.auxiliary_loss)
    (out.y_pred.sum() + out.auxiliary_loss).backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters() if p.grad is not None)
    everything_empty = with_empty_rows(tiny_batch, list(range(len(tiny_batch.mask))))
    assert torch.all(torch.isfinite(predict(model, everything_empty)))


def test_auxiliary_loss_only_in_training(feature_map, model_kwargs, tiny_batch):
    model = build_model("DIEN", feature_map, model_kwargs, auxiliary_loss_weight=0.5)
    out, loss = training_loss(model, tiny_batch)
    bce = torch.nn.functional.binary_cross_entropy(out.y_pred, labels_of(tiny_batch))
    assert out.auxiliary_loss > 0
    torch.testing.assert_close(loss, bce + out.auxiliary_loss)
    model.eval()
    assert model(tiny_batch).auxiliary_loss is None
    without = build_model("DIEN", feature_map, model_kwargs, use_auxiliary_loss=False).train()
    assert without(tiny_batch).auxiliary_loss is None


def test_deterministic_eval_and_attention_record(feature_map, model_kwargs, tiny_batch):
    for name in ("DIEN", "DIEN_LAIN"):
        model = build_model(name, feature_map, model_kwargs)
        assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
        weights, support = long_attention(model, tiny_batch)   # left-aligned [prompts; items; 0 ...]
        assert weights.shape == support.shape and torch.equal(support.sum(1), tiny_batch.mask.sum(1).long())
        assert torch.all(weights[~support] == 0)
        total = weights.sum(1)
        if name == "DIEN":    # softmax over the real behaviours only
            torch.testing.assert_close(total, torch.ones_like(total))
        else:                 # prompts take part of the mass
            assert torch.all((total > 0) & (total < 1))


def test_invalid_settings_are_rejected(feature_map, model_kwargs):
    with pytest.raises(ValueError, match="attention_type"):
        build_model("DIEN", feature_map, model_kwargs, attention_type="bilinear")
    with pytest.raises(ValueError, match="temperature"):
        build_model("DIEN_LAIN", feature_map, model_kwargs, use_attention_softmax=False)
    with pytest.raises(TypeError):
        build_model("DIEN_LAIN", feature_map, model_kwargs, use_promtps=False)


def test_lain_parameter_count_is_the_difference_to_the_backbone(feature_map, model_kwargs):
    for attention_type in ("din_attention", "dot_attention"):
        backbone = build_model("DIEN", feature_map, model_kwargs, attention_type=attention_type)
        variant = build_model("DIEN_LAIN", feature_map, model_kwargs, attention_type=attention_type)
        assert lain_parameter_count(backbone) == 0
        assert lain_parameter_count(variant) == variant.count_parameters() - backbone.count_parameters() > 0


# ----- upstream parity -------------------------------------------------------------------------
def upstream_pair(feature_map, model_kwargs, attention_type):
    """Our DIEN (no short branch) and upstream LongCTR DIEN with the same weights."""
    upstream_module = pytest.importorskip("model_zoo.LongCTR.DIEN.DIEN")
    ours = build_model("DIEN", feature_map, model_kwargs, attention_type=attention_type, use_short_branch=False)
    upstream = upstream_module.DIEN(feature_map, attention_type=attention_type, attention_hidden_units=[64],
                                    attention_activation="ReLU", dnn_hidden_units=model_kwargs["dnn_hidden_units"],
                                    batch_norm=False, embedding_dim=model_kwargs["embedding_dim"], optimizer="adam",
                                    loss="binary_crossentropy", model_root=model_kwargs["model_root"], verbose=0,
                                    metrics=["AUC"])
    ours_state = {k.replace("branches.long.", ""): v for k, v in ours.state_dict().items()}
    hidden = ours.token_dim
    state = {k: v for k, v in ours_state.items() if k.startswith(("embedding_layer.", "dnn."))}
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        state["extraction_modules.0." + name] = ours_state["interest_extractor." + name]
    # upstream's AUGRU cell orders its gates (update, reset, new); ours (reset, update, new) as nn.GRU
    order = torch.cat([torch.arange(hidden, 2 * hidden), torch.arange(hidden), torch.arange(2 * hidden, 3 * hidden)])
    cell = "evolving_modules.0.gru_cell."
    for theirs, mine in (("x2h", "ih"), ("h2h", "hh")):
        state[f"{cell}{theirs}.weight"] = ours_state[f"interest_evolution.weight_{mine}"][order]
        state[f"{cell}{theirs}.bias"] = ours_state[f"interest_evolution.bias_{mine}"][order]
    prefix = "state_attention.scorer."
    state.update({"attention_modules.0.attn_mlp." + k[len(prefix):]: v
                  for k, v in ours_state.items() if k.startswith(prefix)})
    if attention_type == "bilinear_attention":
        state["attention_modules.0.W_kernel"] = ours_state["state_attention.kernel.weight"]
    upstream.load_state_dict(state, strict=True)
    upstream.eval()
    return ours, upstream


def predict_upstream(upstream, batch: SequenceBatch) -> torch.Tensor:
    with torch.no_grad():
        return upstream((dict(batch.batch_dict), dict(batch.item_dict), batch.mask))["y_pred"]


@pytest.fixture
def full_batch(tiny_dataset):
    """Rows whose history fills every column (no padding): upstream's packing is then right."""
    loader = SequenceBatchLoader(tiny_dataset, "valid", batch_size=64, max_len=20)
    batch = loader.make_batch(np.nonzero(loader.columns["seq_len"] >= 20)[0][:32])
    assert bool(batch.mask.all())
    return batch


@pytest.mark.parametrize("attention_type", ["din_attention", "bilinear_attention", "dot_attention"])
def test_matches_upstream_on_full_rows(attention_type, feature_map, model_kwargs, full_batch):
    ours, upstream = upstream_pair(feature_map, model_kwargs, attention_type)
    torch.testing.assert_close(predict(ours, full_batch), predict_upstream(upstream, full_batch), atol=1e-5, rtol=0)


def test_upstream_packs_pre_padded_rows_wrongly(feature_map, model_kwargs, full_batch):
    """The same rows with 5 padding columns in front: ours is unchanged (= upstream without padding);
    upstream's GRU reads the padding instead of the items, and its prediction moves."""
    ours, upstream = upstream_pair(feature_map, model_kwargs, "din_attention")
    padded = left_pad(full_batch, 5)
    reference = predict_upstream(upstream, full_batch)
    torch.testing.assert_close(predict(ours, padded), reference, atol=1e-5, rtol=0)
    assert (predict_upstream(upstream, padded) - reference).abs().max() > 1e-3
    # rows of 3 items in 25 columns: upstream's GRU reads 3 padding tokens and its attention (pre-padded
    # mask over post-padded states) gives the AUGRU zero weights, so the items have no effect at all
    mask = padded.mask.clone()
    mask[:, :-3] = 0
    short = with_mask(padded, mask)
    changed = with_other_history_items(short)
    torch.testing.assert_close(predict_upstream(upstream, changed), predict_upstream(upstream, short))
    assert (predict(ours, changed) - predict(ours, short)).abs().max() > 1e-4
