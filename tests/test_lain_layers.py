"""LAIN modules and the length-modulated attentions."""
import pytest
import torch

from lainctr.layers import (
    DINAttention,
    LAINConfig,
    LengthConditioner,
    LengthTemperature,
    MultiHeadTargetAttention,
    prepend_prompts,
)
from lainctr.layers.lain import NO_LMA, BranchCondition, BucketLengthEncoder, LMASettings, SpectralLengthEncoder

D = 12


def condition_for(mask, config=LAINConfig(), max_len=300):
    torch.manual_seed(0)
    conditioner = LengthConditioner(config, D, max_len, ("long", "short"))
    return conditioner, conditioner(mask, mask.sum(-1))


def test_shapes():
    mask = torch.ones(5, 30, dtype=torch.bool)
    conditioner, conditions = condition_for(mask)
    long = conditions["long"]
    assert long.length.shape == (5,) and long.prompts.shape == (5, 4, D) and long.length_embedding.shape == (5, 16)
    assert SpectralLengthEncoder(100, D, 8, 32)(torch.arange(5.)).shape == (5, D)
    assert BucketLengthEncoder(100, D)(torch.tensor([0., 1., 3., 1000.])).shape == (4, D)
    seq, m = prepend_prompts(torch.zeros(5, 30, D), torch.zeros(5, 30, dtype=torch.bool), long)
    assert seq.shape == (5, 34, D) and m[:, :4].all() and not m[:, 4:].any()


def test_length_is_visible_behaviours_and_padding_does_not_change_conditions():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    padded = torch.cat([torch.zeros(3, 5, dtype=torch.bool), mask], dim=1)
    conditioner, a = condition_for(mask)
    b = conditioner(padded, padded.sum(-1))
    torch.testing.assert_close(a["long"].length, torch.tensor([2., 4., 0.]))
    torch.testing.assert_close(a["long"].prompts, b["long"].prompts)
    raw = LengthConditioner(LAINConfig(length_source="raw"), D, 300, ("long",))
    torch.testing.assert_close(raw(mask, torch.tensor([7, 400, 0]))["long"].length, torch.tensor([7., 400., 0.]))


def test_temperature_bounds_and_monotone():
    tau = LengthTemperature(pivot=100.0, gamma_init=1.0)
    lengths = torch.arange(0, 1001, dtype=torch.float)
    values = tau(lengths).detach()
    assert torch.all(values >= 1) and torch.all(values <= 2)
    assert torch.all(values.diff() <= 0)
    assert values[0].item() == pytest.approx(1.98, abs=0.01) and values[100].item() == pytest.approx(1.5)
    assert values[200].item() == pytest.approx(1.02, abs=0.01)


def test_switches_decide_what_is_built():
    mask = torch.ones(2, 8, dtype=torch.bool)
    _, c = condition_for(mask, LAINConfig(use_prompts=False))
    assert c["long"].prompts is None and c["long"].length_embedding is not None
    _, c = condition_for(mask, LAINConfig(use_qk_conditioning=False))
    assert c["long"].length_embedding is None and c["long"].prompts is not None
    _, c = condition_for(mask, LAINConfig(lain_on_short_branch=False))
    assert "short" not in c and c["long"] is not None
    conditioner, c = condition_for(mask, LAINConfig(use_sle=False))
    assert isinstance(conditioner.length_encoder, BucketLengthEncoder)
    _, c = condition_for(mask, LAINConfig(length_embedding_dim=0))
    assert c["long"].length_embedding.shape == (2, D)  # e_len = h_len
    conditioner, c = condition_for(mask, LAINConfig(shared_prompts=False))
    assert not torch.equal(c["long"].prompts, c["short"].prompts)
    assert not LAINConfig(use_prompts=False, use_qk_conditioning=False, use_temperature=False).active
    with pytest.raises(ValueError, match="length_input"):
        LAINConfig(length_input="sqrt")


@pytest.mark.parametrize("attention_type", ["mha", "din"])
def test_attention_padding_invariance_and_empty_rows(attention_type):
    torch.manual_seed(1)
    lain = LAINConfig()
    lma = lain.lma_settings("long", D)
    layer = MultiHeadTargetAttention(D, 16, 2, lma=lma) if attention_type == "mha" else DINAttention(D, (8,), lma=lma)
    for module in layer.modules():           # give the zero-initialised conditioning parts real weights
        if hasattr(module, "length_linear") and module.length_linear is not None:
            torch.nn.init.normal_(module.length_linear.weight)
    target, seq = torch.randn(3, D), torch.randn(3, 6, D)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0] * 6], dtype=torch.bool)
    cond = BranchCondition(mask.sum(-1).float(), None, torch.randn(3, 16))
    out, weights = layer(target, seq, mask, cond)
    pad_seq = torch.cat([torch.randn(3, 4, D), seq], dim=1)            # garbage under the padding
    pad_mask = torch.cat([torch.zeros(3, 4, dtype=torch.bool), mask], dim=1)
    out2, _ = layer(target, pad_seq, pad_mask, cond)
    torch.testing.assert_close(out, out2)
    assert torch.all(weights[..., ~mask[0]][0] == 0)
    assert torch.isfinite(out).all() and torch.all(weights[2] == 0)


def test_key_side_shift_cancels_in_dot_product_attention():
    """Adding the same vector to every key (what key-side conditioning does) leaves the weights unchanged."""
    torch.manual_seed(2)
    layer = MultiHeadTargetAttention(D, 16, 1, lma=NO_LMA)
    target, seq = torch.randn(4, D), torch.randn(4, 9, D)
    mask = torch.ones(4, 9, dtype=torch.bool)
    _, w1 = layer(target, seq, mask)
    _, w2 = layer(target, seq + torch.randn(4, 1, D), mask)
    torch.testing.assert_close(w1, w2)


@pytest.mark.parametrize("activation", ["ReLU", "Dice"])
def test_din_length_shifts_equal_the_explicit_concatenation(activation):
    """DIN's LMA: scoring with q' = q + W_qe e and k' = k + W_ke e folded into the first layer equals the MLP
    on the explicit [q', k', q' - k', q' * k'] of every key, and the softmax uses those scores."""
    torch.manual_seed(4)
    layer = DINAttention(D, (8,), activation, lma=LMASettings(length_dim=5)).eval()
    shifts = layer.length_shift
    for shift in (shifts.query, shifts.key):
        torch.nn.init.normal_(shift.weight)
    target, seq, e = torch.randn(3, D), torch.randn(3, 7, D), torch.randn(3, 5)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, :4] = False
    q, k = target + shifts.query(e), seq + shifts.key(e).unsqueeze(1)
    q = q.unsqueeze(1).expand_as(k)
    explicit = layer.scorer(torch.cat([q, k, q - k, q * k], -1).view(-1, 4 * D)).view(3, 7)
    condition = BranchCondition(torch.full((3,), 7.0), None, e)
    with torch.no_grad():
        pooled, weights = layer(target, seq, mask, condition)
    torch.testing.assert_close(layer.score(target + shifts.query(e), seq, shifts.key(e)), explicit)
    torch.testing.assert_close(weights[:, 0], torch.softmax(explicit.masked_fill(~mask, -1e30), -1) * mask)


def test_temperature_flattens_short_rows():
    layer = MultiHeadTargetAttention(D, 16, 1, lma=LMASettings(temperature=True))
    torch.manual_seed(3)
    target, seq = torch.randn(2, D), torch.randn(2, 20, D)
    mask = torch.ones(2, 20, dtype=torch.bool)
    _, plain = MultiHeadTargetAttention.forward(layer, target, seq, mask, None)
    _, short = layer(target, seq, mask, BranchCondition(torch.tensor([5., 5.]), None, None))
    _, long = layer(target, seq, mask, BranchCondition(torch.tensor([900., 900.]), None, None))
    entropy = lambda w: -(w * w.clamp_min(1e-12).log()).sum(-1)  # noqa: E731
    assert torch.all(entropy(short) > entropy(plain))
    torch.testing.assert_close(long, plain, atol=1e-4, rtol=1e-4)


def test_zero_length_rows_have_finite_gradients():
    conditioner = LengthConditioner(LAINConfig(), D, 100, ("long", "short"))
    layer = MultiHeadTargetAttention(D, 16, 1, lma=LAINConfig().lma_settings("long", D))
    mask = torch.zeros(3, 5, dtype=torch.bool)
    cond = conditioner(mask, mask.sum(-1))["long"]
    seq, m = prepend_prompts(torch.zeros(3, 5, D), mask, cond)
    out, _ = layer(torch.randn(3, D), seq, m, cond)
    out.sum().backward()
    grads = [p.grad for p in list(conditioner.parameters()) + list(layer.parameters()) if p.grad is not None]
    assert torch.isfinite(out).all() and grads and all(torch.isfinite(g).all() for g in grads)
    assert out.abs().sum() > 0   # prompts give L = 0 rows a real interest vector


def test_din_temperature_needs_softmax():
    with pytest.raises(ValueError, match="din_use_softmax"):
        DINAttention(D, use_softmax=False, lma=LMASettings(temperature=True))
