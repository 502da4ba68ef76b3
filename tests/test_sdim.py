"""SDIM and SDIM_LAIN (and lainctr.layers.hashing): shapes, masking, hashing, LAIN, upstream parity, learning."""
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
    long_attention,
    model_inputs,
    predict,
    truncate,
)

from lainctr.data.loader import SequenceBatch, SequenceBatchLoader
from lainctr.layers.hashing import SimHash, SimHashPooling
from lainctr.registry import get_model

SWITCHES = LAIN_SWITCHES + [{"l2_norm": False}, {"use_short_branch": False}]





def reference_pool(planes, target, sequence, mask, l2_norm, always_match=None):
    """SDIM's long branch written plainly: loops over rows and rounds, bucket = sum_t 2^t [R_t . x > 0]."""
    def bucket(x, j):
        return sum(2 ** t * int(float(x @ planes[:, j, t]) > 0) for t in range(planes.shape[2]))
    out = torch.zeros_like(target)
    for b in range(target.shape[0]):
        for j in range(planes.shape[1]):
            total = torch.zeros_like(target[b])
            for i in range(sequence.shape[1]):
                if mask[b, i] and bucket(sequence[b, i], j) == bucket(target[b], j):
                    total = total + sequence[b, i]
            if always_match is not None:
                total = total + always_match[b].sum(0)
            if l2_norm:
                total = total / total.norm().clamp_min(1e-12)
            out[b] += total / planes.shape[1]
    return out


# ----------------------------------------------------------------------------- hashing layer
def test_simhash_signatures():
    torch.manual_seed(1)
    simhash = SimHash(8, num_hashes=5, hash_bits=3, seed=7)
    x = torch.randn(4, 6, 8)
    buckets = simhash(x)
    assert buckets.shape == (4, 6, 5) and buckets.dtype == torch.long
    assert buckets.min() >= 0 and buckets.max() < 8
    assert torch.equal(simhash(3.0 * x), buckets)                   # a direction's signature
    assert torch.equal(simhash(-x), 7 - buckets)                    # the opposite direction flips every bit
    assert torch.equal(SimHash(8, 5, 3, seed=7).planes, simhash.planes)
    assert not torch.equal(SimHash(8, 5, 3, seed=8).planes, simhash.planes)
    assert "planes" in simhash.state_dict() and not list(simhash.parameters())


@pytest.mark.parametrize("l2_norm", [True, False])
@pytest.mark.parametrize("with_prompts", [False, True])
def test_hash_pooling_matches_plain_loops(l2_norm, with_prompts):
    torch.manual_seed(2)
    pooling = SimHashPooling(6, num_hashes=4, hash_bits=2, seed=3, l2_norm=l2_norm)
    target, sequence = torch.randn(5, 6), torch.randn(5, 9, 6)
    mask = torch.arange(9).expand(5, 9) >= torch.tensor([[0], [3], [8], [9], [5]])   # row 3: L = 0
    prompts = torch.randn(5, 2, 6) if with_prompts else None
    pooled, weights = pooling(target, sequence, mask, always_match=prompts)
    expected = reference_pool(pooling.hash.planes, target, sequence, mask, l2_norm, prompts)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    assert torch.all(weights[~mask] == 0) and torch.isfinite(pooled).all()
    if not with_prompts:   # the recorded weights are the effective attention of the pooled vector
        torch.testing.assert_close(torch.bmm(weights.unsqueeze(1), sequence).squeeze(1), pooled)


# ----------------------------------------------------------------------------- shapes and masking
@pytest.mark.parametrize("name,extra", [("SDIM", {}), ("SDIM", {"l2_norm": False}),
                                        ("SDIM", {"num_hashes": 1, "hash_bits": 4, "use_short_branch": False}),
                                        ("SDIM", {"num_heads": 2})]
                         + [("SDIM_LAIN", s) for s in SWITCHES])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)


@pytest.mark.parametrize("name", ["SDIM", "SDIM_LAIN"])
def test_behaviour_beyond_max_len_has_no_effect(name, feature_map, model_kwargs, tiny_dataset):
    model = build_model(name, feature_map, model_kwargs)
    assert_window_respected(model, tiny_dataset)


def test_empty_history_rows_are_finite(feature_map, model_kwargs, tiny_batch):
    batch = truncate(tiny_batch, [0, 1, 2])
    for name, extra in (("SDIM", {}), ("SDIM", {"l2_norm": False}), ("SDIM_LAIN", {})):
        model = build_model(name, feature_map, model_kwargs, **extra)
        assert_finite_on_empty_histories(model, batch)


def test_fixed_hyperplanes_deterministic_eval_and_checkpoint(feature_map, model_kwargs, tiny_batch):
    model = build_model("SDIM", feature_map, model_kwargs)
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    assert "branches.long.hash_pooling.hash.planes" in model.state_dict()
    assert all(p is not model.branches["long"].hash_pooling.hash.planes for p in model.parameters())
    torch.manual_seed(123)   # the planes come from hash_seed, not from the global generator
    same_seed = get_model("SDIM")(feature_map, **model_kwargs)
    assert torch.equal(same_seed.branches["long"].hash_pooling.hash.planes, model.branches["long"].hash_pooling.hash.planes)
    other = build_model("SDIM", feature_map, model_kwargs, hash_seed=1)
    assert not torch.equal(other.branches["long"].hash_pooling.hash.planes, model.branches["long"].hash_pooling.hash.planes)
    other.load_state_dict(model.state_dict(), strict=True)   # the checkpoint carries the hash functions
    assert torch.equal(predict(other, tiny_batch), predict(model, tiny_batch))
    weights, support = long_attention(model, tiny_batch)
    assert weights.shape == support.shape == tiny_batch.mask.shape and torch.all(weights[~support] == 0)


# ----------------------------------------------------------------------------- LAIN
def test_lain_all_off_is_sdim(feature_map, model_kwargs, tiny_batch):
    backbone = build_model("SDIM", feature_map, model_kwargs)
    variant = build_model("SDIM_LAIN", feature_map, model_kwargs, **LAIN_OFF)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)


def test_hash_branch_has_no_lma(feature_map, model_kwargs, tiny_batch):
    """Without prompts and with LAIN off the short branch, SDIM_LAIN is SDIM: the hash branch has no softmax."""
    backbone = build_model("SDIM", feature_map, model_kwargs)
    variant = build_model("SDIM_LAIN", feature_map, model_kwargs, use_prompts=False, lain_on_short_branch=False)
    variant.load_state_dict(backbone.state_dict(), strict=False)
    assert variant.branches["short"].attention.temperature is None
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch), atol=0, rtol=0)


def test_prompts_always_collide_in_the_hash_branch(feature_map, model_kwargs, tiny_batch):
    model = build_model("SDIM_LAIN", feature_map, model_kwargs, num_hashes=3, hash_bits=3)
    batch = truncate(tiny_batch, [0], 0)
    with torch.no_grad():
        target, history, mask = model_inputs(model, batch)
        prompts = model.length_conditions(mask, batch.history_length)["long"].prompts
        pooled, _ = model.branches["long"].hash_pooling(target, history, mask, always_match=prompts)
        planes = model.branches["long"].hash_pooling.hash.planes
        expected = reference_pool(planes, target[:4], history[:4], mask[:4], True, prompts[:4])
    torch.testing.assert_close(pooled[:4], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[0], torch.nn.functional.normalize(prompts[0].sum(0), dim=0))   # L = 0


def test_fresh_lain_without_prompts_and_temperature_starts_as_sdim(feature_map, model_kwargs, tiny_batch):
    backbone = build_model("SDIM", feature_map, model_kwargs)
    variant = build_model("SDIM_LAIN", feature_map, model_kwargs, use_prompts=False, use_temperature=False)
    variant.load_state_dict(backbone.state_dict(), strict=False)
    torch.testing.assert_close(predict(variant, tiny_batch), predict(backbone, tiny_batch))


def test_invalid_configurations_are_rejected(feature_map, model_kwargs):
    for extra in ({"num_hashes": 0}, {"hash_bits": 0}):
        with pytest.raises(ValueError):
            build_model("SDIM", feature_map, model_kwargs, **extra)
    with pytest.raises(TypeError):
        build_model("SDIM", feature_map, model_kwargs, reuse_hash=True)   # not a key: the planes are always fixed


# ----------------------------------------------------------------------------- upstream LongCTR parity
def upstream_sdim(feature_map, ours, tmp_path, **extra):
    """LongCTR's SDIM with our model's weights and hyperplanes."""
    module = pytest.importorskip("model_zoo.LongCTR.SDIM.SDIM")
    pooling = ours.branches["long"].hash_pooling
    upstream = module.SDIM(feature_map, gpu=-1, dnn_hidden_units=[32], attention_dim=64, num_heads=1,
                           num_hashes=pooling.hash.num_hashes, hash_bits=pooling.hash.hash_bits,
                           l2_norm=pooling.l2_norm, short_seq_len=10, embedding_dim=8, optimizer="adam",
                           loss="binary_crossentropy", model_root=str(tmp_path), verbose=0, metrics=["AUC"], **extra)
    names = (("branches.short.attention.", "short_attention."), ("branches.long.", ""), (".linear.", "."))
    state = {functools.reduce(lambda key, pair: key.replace(*pair), names, k): v for k, v in ours.state_dict().items()}
    state["random_rotations"] = state.pop("hash_pooling.hash.planes").unsqueeze(0)
    missing, unexpected = upstream.load_state_dict(state, strict=False)
    assert not unexpected and missing == ["powers_of_two"]
    upstream.eval()
    return upstream


def upstream_predict(upstream, batch: SequenceBatch) -> torch.Tensor:
    with torch.no_grad():
        return upstream((dict(batch.batch_dict), dict(batch.item_dict), batch.mask.clone()))["y_pred"]


@pytest.mark.parametrize("l2_norm", [True, False])
def test_parity_with_longctr(l2_norm, feature_map, model_kwargs, tiny_dataset, tiny_batch, tmp_path):
    """Same planes and reuse_hash: True: the whole model agrees on an unpadded batch, the hash branch on any."""
    ours = build_model("SDIM", feature_map, model_kwargs, l2_norm=l2_norm)
    upstream = upstream_sdim(feature_map, ours, tmp_path, reuse_hash=True)
    batch = next(iter(SequenceBatchLoader(tiny_dataset, "valid", batch_size=64, max_len=12)))
    assert bool(batch.mask.all())
    torch.testing.assert_close(upstream_predict(upstream, batch), predict(ours, batch), atol=1e-5, rtol=1e-5)
    padded = truncate(tiny_batch, [0, 1, 2, 3], 3)
    target, history, mask = model_inputs(ours, padded)
    with torch.no_grad():
        expected = upstream.lsh_attentioin(upstream.random_rotations, target, history, mask.float())
        pooled, _ = ours.branches["long"].hash_pooling(target, history, mask)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


def test_difference_redrawn_hashes(feature_map, model_kwargs, tiny_batch, tmp_path):
    """LongCTR's reuse_hash: False draws new planes on every forward: evaluation is random; ours is not."""
    ours = build_model("SDIM", feature_map, model_kwargs)
    upstream = upstream_sdim(feature_map, ours, tmp_path, reuse_hash=False)
    first, second = upstream_predict(upstream, tiny_batch), upstream_predict(upstream, tiny_batch)
    assert not torch.allclose(first, second, atol=1e-4)
    assert torch.equal(predict(ours, tiny_batch), predict(ours, tiny_batch))


def test_difference_short_mask_shift(feature_map, model_kwargs, tiny_batch, tmp_path):
    """LongCTR's short window uses its neighbour's mask: rows with L = 1, 5 and 9 differ; given the window's
    own mask, LongCTR's attention computes ours (the hash branch agrees)."""
    ours = build_model("SDIM", feature_map, model_kwargs)
    upstream = upstream_sdim(feature_map, ours, tmp_path, reuse_hash=True)
    batch = truncate(truncate(truncate(tiny_batch, [0], 1), [1], 5), [2], 9)
    assert_short_mask_shift_difference(ours, upstream, batch)
    assert not torch.allclose(upstream_predict(upstream, batch), predict(ours, batch), atol=1e-4)


# ----------------------------------------------------------------------------- learning
