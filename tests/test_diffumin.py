"""DiffuMIN and DiffuMIN_LAIN: shapes, masking and top-p selection, orthonormal channels, the diffusion maths,
controlled randomness, the auxiliary losses and their switches, LAIN-off equivalence."""
import copy
import math

import pytest
import torch
from model_checks import (
    assert_finite_on_empty_histories,
    assert_lain_off_is_backbone,
    assert_output_shape,
    assert_padding_invariant,
    assert_window_respected,
    build_model,
    labels_of,
    left_pad,
    model_inputs,
    predict,
    training_loss,
    truncate,
)

from lainctr import config
from lainctr.layers.contrastive import info_nce
from lainctr.layers.diffusion import NoiseSchedule, beta_schedule
from lainctr.layers.omie import (
    TargetAttentionExtractor,
    orthonormal_channels,
    route,
    select_top_count,
    select_top_ratio,
)

LAIN_OFF = dict(use_prompts=False, use_qk_conditioning=False, use_temperature=False)
NO_AUX = dict(diffusion_loss_weight=0.0, contrastive_loss_weight=0.0)
WO_OMIE = dict(interest_extractor="target_attention")
WO_DMIG = dict(use_generator=False, **NO_AUX)
ABLATIONS = {"wo_omie": WO_OMIE, "wo_dmig": WO_DMIG, "wo_cmic": dict(contrastive_loss_weight=0.0)}


def long_branch(model):
    return model.branches["long"]


def train_forward(model, batch):
    model.train()
    return model(batch, labels_of(batch))


# ----------------------------------------------------------------------------- shapes and masking
@pytest.mark.parametrize("name,extra", [("DiffuMIN", {}), ("DiffuMIN", {"short_encoder": "attention"}),
                                        ("DiffuMIN", {"use_short_branch": False, "num_channels": 16}),
                                        ("DiffuMIN", {"beta_schedule": "cosine", "sample_steps": 3}),
                                        ("DiffuMIN", WO_OMIE), ("DiffuMIN", WO_DMIG),
                                        ("DiffuMIN_LAIN", WO_OMIE), ("DiffuMIN_LAIN", WO_DMIG),
                                        ("DiffuMIN_LAIN", {}), ("DiffuMIN_LAIN", {"use_qk_conditioning": False}),
                                        ("DiffuMIN_LAIN", {"lain_on_short_branch": False, "use_prompts": False}),
                                        ("DiffuMIN_LAIN", {"use_temperature": False, "use_sle": False}),
                                        ("DiffuMIN_LAIN", {"length_embedding_dim": 0, "shared_prompts": False}),
                                        ("DiffuMIN_LAIN", {"length_source": "raw", "short_encoder": "attention"})])
def test_shape_and_padding_invariance(name, extra, feature_map, model_kwargs, tiny_batch):
    model = build_model(name, feature_map, model_kwargs, **extra)
    assert_output_shape(model, tiny_batch)
    assert_padding_invariant(model, tiny_batch)
    channels = long_branch(model).extractor.num_channels * (2 if extra.get("use_generator", True) else 1)
    assert model.dnn.mlp[0].in_features == model.context_dim + model.token_dim * (
        1 + channels + (extra.get("use_short_branch", True)))


def test_garbage_at_padding_and_batch_composition_do_not_matter(feature_map, model_kwargs, tiny_batch):
    """Eval: random items at padded positions, and a sub-batch of the rows, give the same predictions (the
    eval noise is indexed by the sample, not by its place in a batch)."""
    model = build_model("DiffuMIN_LAIN", feature_map, model_kwargs)
    baseline = predict(model, tiny_batch)
    batch_size, width = tiny_batch.mask.shape
    padded = torch.cat([tiny_batch.mask == 0, torch.zeros(batch_size, 1, dtype=torch.bool)], 1)
    generator = torch.Generator().manual_seed(3)
    item_dict = {k: torch.where(padded, torch.randint(1, 20, padded.shape, generator=generator),
                                v.view(batch_size, -1)).view(-1) for k, v in tiny_batch.item_dict.items()}
    garbage = tiny_batch._replace(item_dict=item_dict)
    torch.testing.assert_close(predict(model, garbage), baseline, atol=1e-5, rtol=1e-5)
    rows = torch.arange(5, 17)
    sub = tiny_batch._replace(batch_dict={k: v[rows] for k, v in tiny_batch.batch_dict.items()},
                              item_dict={k: v.view(batch_size, width + 1)[rows].reshape(-1)
                                         for k, v in tiny_batch.item_dict.items()},
                              mask=tiny_batch.mask[rows], history_length=tiny_batch.history_length[rows],
                              item_index=tiny_batch.item_index[rows])
    torch.testing.assert_close(predict(model, sub), baseline[rows], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_training_forward(feature_map, model_kwargs, tiny_batch):
    """Training noise is drawn per sample and channel, not per position: from the same generator state a
    left-padded batch gets the same noise, predictions and auxiliary loss."""
    model = build_model("DiffuMIN_LAIN", feature_map, model_kwargs)
    state = copy.deepcopy(model.state_dict())
    plain = train_forward(model, tiny_batch)
    model.load_state_dict(state)
    padded = train_forward(model, left_pad(tiny_batch, 7))
    torch.testing.assert_close(padded.y_pred, plain.y_pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.auxiliary_loss, plain.auxiliary_loss, atol=1e-5, rtol=1e-5)


def test_behaviour_beyond_max_len_has_no_effect(feature_map, model_kwargs, tiny_dataset):
    assert_window_respected(build_model("DiffuMIN", feature_map, model_kwargs), tiny_dataset)


# ----------------------------------------------------------------------------- OMIE
def random_left_padded(batch_size=64, width=30, channels=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch_size, width, channels, generator=generator)
    lengths = torch.randint(0, width + 1, (batch_size,), generator=generator)
    lengths[:3] = torch.tensor([0, 1, width])
    mask = torch.arange(width) >= width - lengths.unsqueeze(1)
    return scores, mask


@pytest.mark.parametrize("keep_ratio", [0.2, 0.5, 1.0])
def test_routing_and_top_p_use_real_behaviours_only(keep_ratio):
    scores, mask = random_left_padded()
    for sign in (1.0, -1.0):     # all-negative scores: padding (score 0 after masking by product) must not win
        signed = sign * (scores.abs() + 0.1)
        routed = route(signed, mask)
        assert torch.equal(routed.sum(-1), mask.long())                                 # routed once, padding never
        selected = select_top_ratio(signed, routed, keep_ratio)
        assert not selected[~mask].any() and not (selected & ~routed).any()
        counts = routed.sum(1)
        expected = torch.tensor([[math.ceil(keep_ratio * n - 1e-9) for n in row] for row in counts.tolist()])
        assert torch.equal(selected.sum(1), expected)
        kept_min = signed.masked_fill(~selected, float("inf")).amin(1)                  # the largest are kept
        dropped_max = signed.masked_fill(~routed | selected, float("-inf")).amax(1)
        assert bool((kept_min >= dropped_max).all())
        extra = 6                                                                     # left padding with garbage
        wider = select_top_ratio(torch.cat([torch.randn(64, extra, 4) * 9, signed], 1),
                                 route(torch.cat([torch.randn(64, extra, 4), signed], 1),
                                       torch.cat([torch.zeros(64, extra, dtype=torch.bool), mask], 1)), keep_ratio)
        assert not wider[:, :extra].any() and torch.equal(wider[:, extra:], selected)


def test_top_p_ties_keep_the_more_recent_behaviour():
    scores = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [5.0, 0.0]]])   # 1 x 5 x 2
    mask = torch.tensor([[False, True, True, True, True]])
    routed = route(scores, mask)
    selected = select_top_ratio(scores, routed, 0.5)    # channel 1: 3 routed (1, 1, 2) -> keep 2: the 2, then t = 2
    assert selected[0, :, 1].tolist() == [False, False, True, True, False]
    assert selected[0, :, 0].tolist() == [False, False, False, False, True]


def test_channels_are_orthonormal_for_any_target():
    generator = torch.Generator().manual_seed(0)
    d, c = 16, 4
    matrices = [torch.randn(32, d, c, generator=generator), torch.zeros(2, d, c),      # q = 0, b_c = 0
                torch.randn(8, d, c, generator=generator) * 1e4]
    duplicated = torch.randn(4, d, 1, generator=generator).expand(4, d, c).clone()     # rank 1
    for matrix in matrices + [duplicated]:
        channels = orthonormal_channels(matrix)
        torch.testing.assert_close(channels @ channels.transpose(1, 2), torch.eye(c).expand(len(matrix), c, c),
                                   atol=1e-5, rtol=0)
    matrix = matrices[0]
    q, r = torch.linalg.qr(matrix)
    channels = orthonormal_channels(matrix)
    # sign fix: O^T = Q diag(sgn R_ii), i.e. M = O^T R' with R' = O M having a positive diagonal
    assert bool((torch.diagonal(channels @ matrix, dim1=1, dim2=2) > 0).all())
    nudged = orthonormal_channels(matrix + 1e-4 * torch.randn(matrix.shape, generator=generator))
    assert (nudged - channels).abs().max() < 1e-2                                        # continuous in q


def one_item_history(batch, row: int):
    """``batch`` with every real behaviour of ``row`` replaced by its most recent one (all in one channel)."""
    width = batch.mask.shape[1]
    real = torch.zeros(batch.mask.shape[0], width + 1, dtype=torch.bool)
    real[row, :width] = batch.mask[row] > 0
    def repeat(values):
        values = values.view(-1, width + 1)
        return torch.where(real, values[:, width - 1:width], values).view(-1)
    return batch._replace(item_dict={k: repeat(v) for k, v in batch.item_dict.items()},
                          item_index=repeat(batch.item_index).view(-1, width + 1))


def test_empty_single_and_one_channel_rows(feature_map, model_kwargs, tiny_batch):
    """L = 0, L = 1 and a history all routed to one channel: finite outputs, losses and gradients."""
    batch = one_item_history(truncate(truncate(tiny_batch, [0, 1, 2]), [3, 4], keep=1), 5)
    for name in ("DiffuMIN", "DiffuMIN_LAIN"):
        model = build_model(name, feature_map, model_kwargs)
        assert_finite_on_empty_histories(model, batch)
    model = build_model("DiffuMIN", feature_map, model_kwargs)
    model.eval()
    target, history, mask = model_inputs(model, batch)
    branch = long_branch(model)
    with torch.no_grad():
        omie = branch.extractor(target, history, mask)
        out = model(batch).branches["long"].interest.view(len(mask), 2, -1, model.token_dim)
    assert not omie.interests[:3].any() and not out[:3].any()                             # L = 0: all zeros
    assert torch.equal((omie.kept_counts[3:5] > 0).sum(1), torch.tensor([1, 1]))            # L = 1: one channel
    assert int((omie.routed_counts[5] > 0).sum()) == 1 and int(omie.routed_counts[5].sum()) == int(mask[5].sum()) > 5
    j = int(omie.kept_counts[3].argmax())
    a = history[3, -1] @ omie.channels[3, j]
    torch.testing.assert_close(omie.interests[3, j], a * history[3, -1])
    assert out[3, 1, j].abs().sum() > 0 and not out[3, 1].index_select(0, torch.tensor(
        [i for i in range(out.shape[2]) if i != j])).any()                                 # r* only where S_j


# ----------------------------------------------------------------------------- diffusion maths
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_diffusion_has_the_closed_form(schedule):
    noise_schedule = NoiseSchedule(1000, schedule)
    betas = beta_schedule(schedule, 1000, 1e-4, 0.02)
    torch.testing.assert_close(noise_schedule.alphas_cumprod, torch.cumprod(1 - betas, 0), atol=1e-12, rtol=1e-12)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, generator=generator)
    for t in (0, 10, 500, 999):
        abar = float(torch.prod(1 - betas[:t + 1]))
        step = torch.full((20000,), t)
        samples = noise_schedule.add_noise(x0.expand(20000, 8), step, torch.randn(20000, 8, generator=generator))
        torch.testing.assert_close(samples.mean(0), math.sqrt(abar) * x0, atol=0.03, rtol=0)
        torch.testing.assert_close(samples.var(0), torch.full((8,), 1 - abar), atol=0.03, rtol=0.05)


def test_posterior_coefficients():
    """The respaced posterior keeps the forward marginal (c_0 + c_t sqrt(a) = sqrt(a'), c_t^2 (1 - a) +
    sigma^2 = 1 - a'), and between consecutive steps it is DDPM's q(x_{t-1} | x_t, x_0)."""
    schedule = NoiseSchedule(1000)
    abar = schedule.alphas_cumprod
    step, previous = torch.tensor([999, 500, 37, 1]), torch.tensor([888, 0, 36, 0])
    c0, ct, sigma = schedule.posterior_coefficients(step, previous)
    a, a_prev = abar[step], abar[previous]
    torch.testing.assert_close(c0 + ct * a.sqrt(), a_prev.sqrt(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ct ** 2 * (1 - a) + sigma ** 2, 1 - a_prev, atol=1e-12, rtol=1e-12)
    beta = 1 - abar[37] / abar[36]                                   # DDPM's beta_37, its posterior
    torch.testing.assert_close(torch.stack([c0[2], ct[2], sigma[2] ** 2]), torch.stack([
        abar[36].sqrt() * beta / (1 - abar[37]), (1 - beta).sqrt() * (1 - abar[36]) / (1 - abar[37]),
        beta * (1 - abar[36]) / (1 - abar[37])]))


@pytest.mark.parametrize("num_steps", [1, 2, 10])
def test_respaced_steps_are_distinct_and_end_at_zero(num_steps):
    start = torch.tensor([1, 5, 9, 10, 500, 999])
    steps, active = NoiseSchedule.respaced_steps(start, num_steps)
    for row, t in enumerate(start.tolist()):
        count = min(num_steps, t + 1)
        assert active[row].tolist() == [False] * (num_steps - count) + [True] * count
        chain = steps[row][active[row]].tolist()
        assert chain[0] == t and chain[-1] == (0 if count > 1 else t)
        assert all(a > b for a, b in zip(chain, chain[1:]))


def test_sampler(feature_map, model_kwargs):
    """0 steps return the input; with an oracle denoiser returning x_0 the chain returns x_0 exactly."""
    model = build_model("DiffuMIN", feature_map, {**model_kwargs, "sample_steps": 0})
    generator = long_branch(model).generator
    x, context, channels = (torch.randn(5, 4, model.token_dim) for _ in range(3))
    start = torch.randint(1, 1000, (5, 4))
    assert generator.sample(x, start, torch.randn(5, 0, 4, model.token_dim), context, channels) is x
    model = build_model("DiffuMIN", feature_map, model_kwargs)
    generator = long_branch(model).generator
    truth = torch.nn.functional.normalize(torch.randn(5, 4, model.token_dim), dim=-1)
    generator.denoiser.forward = lambda x, step, context, channels: truth
    generator.eval()
    rows = torch.arange(5)
    filled = torch.ones(5, 4, dtype=torch.bool)
    filled[0, 1] = False
    generated = generator.generate(truth, channels, filled, rows)
    assert torch.equal(generated[filled], truth[filled]) and not generated[0, 1].any()


# ----------------------------------------------------------------------------- randomness
def test_eval_is_deterministic_and_training_noise_is_seeded(feature_map, model_kwargs, tiny_batch, tmp_path):
    model = build_model("DiffuMIN", feature_map, model_kwargs)
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    state = copy.deepcopy(model.state_dict())                   # holds the training generator's state
    first = train_forward(model, tiny_batch).y_pred
    second = train_forward(model, tiny_batch).y_pred
    assert not torch.equal(first, second)
    torch.save(state, tmp_path / "checkpoint.pt")
    model.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert torch.equal(train_forward(model, tiny_batch).y_pred, first)
    again = build_model("DiffuMIN", feature_map, model_kwargs)   # same global seed: same stream
    assert torch.equal(train_forward(again, tiny_batch).y_pred, first)
    torch.manual_seed(1)
    other = long_branch(type(model)(feature_map, **model_kwargs)).generator.noise_generator.get_state()
    assert not torch.equal(other, state["branches.long.generator._extra_state"])


# ----------------------------------------------------------------------------- auxiliary losses
def test_auxiliary_losses(feature_map, model_kwargs, tiny_batch):
    model = build_model("DiffuMIN", feature_map, model_kwargs)
    out, loss = training_loss(model, tiny_batch)
    bce = torch.nn.functional.binary_cross_entropy(out.y_pred, labels_of(tiny_batch))
    assert out.auxiliary_loss is not None and torch.isfinite(out.auxiliary_loss) and out.auxiliary_loss > 0
    torch.testing.assert_close(loss, bce + out.auxiliary_loss)
    loss.backward()
    assert long_branch(model).calibrator.real_head[0].weight.grad.abs().sum() > 0
    assert long_branch(model).extractor.channel_projection.weight.grad.abs().sum() > 0
    model.eval()
    assert model(tiny_batch, labels_of(tiny_batch)).auxiliary_loss is None                # training only
    branch = long_branch(model)
    target, history, mask = model_inputs(model, tiny_batch)
    branch.train()
    omie = branch.extractor(target, history, mask)
    unit = torch.nn.functional.normalize(omie.interests, dim=-1)
    real = omie.routed_counts > 0
    assert real.any()
    assert branch.generator.denoising_loss(unit, omie.channels, real) >= 0
    assert branch.generator.denoising_loss(unit, omie.channels, torch.zeros_like(real)) == 0
    generated = branch.generator.generate(unit, omie.channels, real, torch.arange(len(mask)))
    assert branch.calibrator(unit, generated, real, tiny_batch.batch_dict["user_index"]) >= 0


@pytest.mark.parametrize("off", [NO_AUX, {"diffusion_loss_weight": 0.0}, {"contrastive_loss_weight": 0.0}])
def test_zero_weight_switches_a_loss_off(off, feature_map, model_kwargs, tiny_batch):
    """A loss of weight 0 is not computed and draws no noise, and CMIC's heads are not built: with the full
    model's weights and generator state the predictions, and the remaining loss, are the full model's."""
    full = build_model("DiffuMIN", feature_map, model_kwargs)
    reduced = build_model("DiffuMIN", feature_map, model_kwargs, **off)
    missing, unexpected = reduced.load_state_dict(full.state_dict(), strict=False)
    without_cmic = off.get("contrastive_loss_weight", 1) == 0
    assert not missing and set(unexpected) == ({k for k in full.state_dict() if ".calibrator." in k}
                                               if without_cmic else set())
    assert (long_branch(reduced).calibrator is None) == without_cmic
    expected = train_forward(full, tiny_batch)
    got = train_forward(reduced, tiny_batch)
    torch.testing.assert_close(got.y_pred, expected.y_pred, atol=0, rtol=0)
    if off == NO_AUX:
        assert got.auxiliary_loss is None
        assert not any("calibrator" in name for name, _ in reduced.named_parameters())
        _, loss = training_loss(reduced, tiny_batch)
        loss.backward()
        assert long_branch(reduced).generator.denoiser.blocks[0].ffn[0].weight.grad.abs().sum() > 0  # via r*
    else:
        assert 0 < got.auxiliary_loss < expected.auxiliary_loss


def test_info_nce_closed_form_and_masks():
    batch, channels, d, tau = 6, 2, 8, 0.05
    z = torch.eye(d)[:batch].unsqueeze(1).expand(batch, channels, d)                     # unit, orthogonal
    valid = torch.ones(batch, channels, dtype=torch.bool)
    users = torch.arange(batch)
    expected = math.log(math.exp(1 / tau) + batch - 1) - 1 / tau
    torch.testing.assert_close(info_nce(z, z, valid, users, tau), torch.tensor(expected))
    same = users.clone()
    same[1] = 0                                                                        # rows 0 and 1: one user
    per_row = torch.tensor([math.log(math.exp(1 / tau) + batch - 2) - 1 / tau] * 2
                           + [expected] * (batch - 2))
    torch.testing.assert_close(info_nce(z, z, valid, same, tau), per_row.mean())
    valid[:4, 0] = False                                                               # channel 0: 2 valid rows
    two = math.log(math.exp(1 / tau) + 1) - 1 / tau
    torch.testing.assert_close(info_nce(z, z, valid, users, tau), torch.tensor((two + expected) / 2))
    valid[:5, 1] = False                                                               # channel 1: 1 valid row
    torch.testing.assert_close(info_nce(z, z, valid, users, tau), torch.tensor(two / 2))
    assert info_nce(z[:1], z[:1], valid[:1] | True, users[:1], tau) == 0                  # B = 1


# ----------------------------------------------------------------------------- ablation switches
def test_without_omie_is_multi_head_target_attention(feature_map, model_kwargs, tiny_batch):
    """w/o OMIE: r_j = softmax_t(u_j . s_t / sqrt(d)) over the real behaviours, u = reshape(W_c q + b_c, [d, c]);
    o_j = u_j / ||u_j||; every real behaviour counts in every channel; an empty history gives r = 0."""
    model = build_model("DiffuMIN", feature_map, model_kwargs, **WO_OMIE)
    extractor = long_branch(model).extractor
    assert isinstance(extractor, TargetAttentionExtractor)
    batch = truncate(tiny_batch, [0])
    target, history, mask = model_inputs(model, batch)
    with torch.no_grad():
        out = extractor(target, history, mask)
    queries = extractor.channel_projection(target).view(len(mask), model.token_dim, -1).transpose(1, 2)
    for row in (0, 5, 9):
        real = history[row, mask[row]]                                                  # L x d
        weights = torch.softmax(queries[row] @ real.t() / math.sqrt(model.token_dim), dim=-1)  # c x L
        expected = weights @ real if len(real) else torch.zeros_like(queries[row])
        torch.testing.assert_close(out.interests[row], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.channels, torch.nn.functional.normalize(queries, dim=-1))
    assert torch.equal(out.routed_counts, mask.sum(1, keepdim=True).expand_as(out.routed_counts))
    assert not out.interests[0].any() and not out.routed_counts[0].any()


def test_without_dmig_feeds_the_extracted_interests_alone(feature_map, model_kwargs, tiny_batch):
    """w/o DMIG: no denoiser is built, the long interest is [r_1 .. r_c] (the full model's first half with the
    same extractor), there is no auxiliary loss, and a loss weight > 0 is rejected."""
    full = build_model("DiffuMIN", feature_map, model_kwargs)
    reduced = build_model("DiffuMIN", feature_map, model_kwargs, **WO_DMIG)
    assert long_branch(reduced).generator is None and long_branch(reduced).calibrator is None
    long_branch(reduced).extractor.load_state_dict(long_branch(full).extractor.state_dict())
    reduced.embedding_layer.load_state_dict(full.embedding_layer.state_dict())
    full.eval(), reduced.eval()
    with torch.no_grad():
        expected = full(tiny_batch).branches["long"].interest
        got = reduced(tiny_batch).branches["long"].interest
    torch.testing.assert_close(got, expected[:, :got.shape[1]], atol=0, rtol=0)
    out, loss = training_loss(reduced, tiny_batch)
    assert out.auxiliary_loss is None and torch.isfinite(loss)
    for weight in ("diffusion_loss_weight", "contrastive_loss_weight"):
        with pytest.raises(ValueError, match="use_generator"):
            build_model("DiffuMIN", feature_map, model_kwargs, use_generator=False, **{**NO_AUX, weight: 0.01})


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_ablation_expids_change_one_part_and_train(variant, feature_map, model_kwargs, tiny_batch):
    """DiffuMIN_synthetic_<variant> is DiffuMIN_synthetic with exactly the variant's keys changed, and that
    model trains: a finite loss whose gradients reach the extractor and the head."""
    base, expid = config.load_config("DiffuMIN_synthetic"), config.load_config(f"DiffuMIN_synthetic_{variant}")
    assert {k: v for k, v in expid.items() if base.get(k) != v and k != "expid"} == ABLATIONS[variant]
    model = build_model("DiffuMIN", feature_map, model_kwargs, **ABLATIONS[variant])
    _, loss = training_loss(model, tiny_batch)
    loss.backward()
    assert torch.isfinite(loss) and model.dnn.mlp[0].weight.grad.abs().sum() > 0
    assert long_branch(model).extractor.channel_projection.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the public code's readings (D1-D6)
CODE_READINGS = dict(keep_mode="code", keep_count=3, pooling="code", sample_start="fixed", eval_sampling="mean",
                     sample_grad="last", empty_channel="generate")


def test_keep_mode_code_is_the_public_codes_rule_on_a_hand_case():
    """Routed to j and among the top keep_count real behaviours of all by a_{t,j}: channel 0 ranks t = 4, 3
    (routed to 1) above its own t = 2, so with keep_count 2 it ends empty; padding (t = 0) never counts."""
    scores = torch.tensor([[[9.0, 9.0], [0.0, 0.5], [1.0, 0.0], [2.0, 2.5], [3.0, 3.5]]])   # 1 x 5 x 2
    mask = torch.tensor([[False, True, True, True, True]])
    routed = route(scores, mask)
    assert routed[0, :, 1].tolist() == [False, True, False, True, True]
    selected = select_top_count(scores, routed, mask, 2)
    assert selected[0, :, 0].tolist() == [False] * 5                                     # routed t = 2 is 3rd
    assert selected[0, :, 1].tolist() == [False, False, False, True, True]
    everything = select_top_count(scores, routed, mask, 100)                              # T < k: all routed
    assert torch.equal(everything, routed)


def test_pooling_code_divides_by_the_padded_length(feature_map, model_kwargs, tiny_batch):
    spec = build_model("DiffuMIN", feature_map, model_kwargs)
    code = build_model("DiffuMIN", feature_map, model_kwargs, pooling="code")
    target, history, mask = model_inputs(spec, tiny_batch)
    code.load_state_dict(spec.state_dict())
    with torch.no_grad():
        mean, total = (long_branch(m).extractor(target, history, mask) for m in (spec, code))
    expected = mean.interests * mean.kept_counts.clamp(min=1).unsqueeze(-1) / history.shape[1]
    torch.testing.assert_close(total.interests, expected)


def test_fixed_sample_start_reverses_from_sample_steps_minus_one(feature_map, model_kwargs):
    model = build_model("DiffuMIN", feature_map, model_kwargs, sample_start="fixed")
    generator = long_branch(model).generator
    seen = []
    generator.denoiser.forward = lambda x, step, context, channels: seen.append(step) or x
    x = torch.randn(3, 4, model.token_dim)
    generator.sample(x, torch.tensor([[1, 5, 999, 2]] * 3), torch.zeros(3, 9, 4, model.token_dim), x, x)
    assert [int(step[0, 2]) for step in seen] == list(range(9, -1, -1))
    assert all(bool((step == step[0, 0]).all()) for step in seen)                     # whatever t_s


def test_eval_sampling_mean_is_noise_free_from_the_middle_step(feature_map, model_kwargs, tiny_batch):
    model = build_model("DiffuMIN", feature_map, model_kwargs, eval_sampling="mean")
    generator = long_branch(model).generator
    generator.eval()
    draws = generator.sampling_noise(torch.tensor([0, 7, 1023]))
    assert bool((draws.start == 500).all()) and not draws.noise.any()
    assert torch.equal(predict(model, tiny_batch), predict(model, tiny_batch))
    assert not torch.equal(predict(model, tiny_batch), predict(build_model("DiffuMIN", feature_map, model_kwargs),
                                                                 tiny_batch))


def test_sample_grad_last_lets_gradients_through_the_last_iteration_only(feature_map, model_kwargs):
    """With ``last`` the gradient equals that of the last reverse iteration applied to the (detached) chain's
    state; with ``full`` it differs (the earlier iterations contribute)."""
    model = build_model("DiffuMIN", feature_map, model_kwargs, sample_grad="last", sample_steps=3)
    generator = long_branch(model).generator
    generator.train()
    x, context, channels = (torch.randn(2, 4, model.token_dim) for _ in range(3))
    start, noise = torch.tensor([[700, 300, 50, 2]] * 2), torch.randn(2, 2, 4, model.token_dim)
    weight = generator.denoiser.blocks[0].ffn[0].weight
    def gradient(chain_input):
        generator.zero_grad()
        generator.sample(chain_input, start, noise, context, channels).sum().backward()
        return weight.grad.clone()
    chain_input = x.clone().requires_grad_()
    last = gradient(chain_input)
    assert chain_input.grad is None                                                  # the input is detached
    generator.sample_grad = "full"
    full = gradient(chain_input)
    assert chain_input.grad.abs().sum() > 0
    steps, _ = generator.reverse_steps(start)
    with torch.no_grad():
        state = x
        for i in range(2):
            estimate = generator.denoiser(state, steps[..., i], context, channels)
            state = generator.schedule.posterior_step(state, estimate, steps[..., i], steps[..., i + 1], noise[:, i])
    generator.zero_grad()
    generator.denoiser(state, steps[..., 2], context, channels).sum().backward()
    torch.testing.assert_close(last, weight.grad)
    assert not torch.allclose(full, last)
    generator.sample_grad, generator.sample_steps = "last", 1                        # one step: input detached too
    chain_input = x.clone().requires_grad_()
    generator.sample(chain_input, start, noise, context, channels).sum().backward()
    assert chain_input.grad is None and weight.grad.abs().sum() > 0


def test_empty_channel_generate_fills_every_channel(feature_map, model_kwargs, tiny_batch):
    """A one-behaviour row has one filled channel; ``generate`` gives the empty ones an r* (from the noised
    zero), ``zero`` leaves them 0."""
    batch = truncate(tiny_batch, [0, 1], keep=1)
    for empty_channel, filled in (("zero", 1), ("generate", None)):
        model = build_model("DiffuMIN", feature_map, model_kwargs, empty_channel=empty_channel)
        model.eval()
        with torch.no_grad():
            channels = long_branch(model).extractor.num_channels
            generated = model(batch).branches["long"].interest.view(len(batch.mask), 2, channels, -1)[:2, 1]
        assert (generated.abs().sum(-1) > 0).sum(1).tolist() == [filled or channels] * 2


@pytest.mark.parametrize("name", ["DiffuMIN", "DiffuMIN_LAIN"])
def test_all_code_readings_train_and_defaults_are_the_spec(name, feature_map, model_kwargs, tiny_batch):
    """With every reading switched to the public code's the model trains (finite loss, gradients); spelled
    out, the defaults give the default model's outputs bit for bit."""
    model = build_model(name, feature_map, model_kwargs, **CODE_READINGS)
    _, loss = training_loss(model, tiny_batch)
    loss.backward()
    assert torch.isfinite(loss) and long_branch(model).extractor.channel_projection.weight.grad.abs().sum() > 0
    defaults = dict(keep_mode="ratio", keep_count=100, pooling="mean", sample_start="respaced",
                    eval_sampling="bank", sample_grad="full", empty_channel="zero")
    spelled, plain = (build_model(name, feature_map, model_kwargs, **extra) for extra in (defaults, {}))
    assert torch.equal(train_forward(spelled, tiny_batch).y_pred, train_forward(plain, tiny_batch).y_pred)
    assert torch.equal(predict(spelled, tiny_batch), predict(plain, tiny_batch))


# ----------------------------------------------------------------------------- configuration, LAIN
def test_invalid_configurations_are_rejected(feature_map, model_kwargs):
    for extra in ({"num_channels": 17}, {"num_channels": 0}, {"keep_ratio": 0.0}, {"keep_ratio": 1.5},
                  {"sample_steps": 11, "diffusion_steps": 10}, {"diffusion_steps": 1}, {"num_heads": 3},
                  {"beta_schedule": "quadratic"}, {"short_encoder": "gru"}, {"diffusion_loss_weight": -1.0},
                  {"contrastive_temperature": 0.0}, {"denoiser_layers": 0}, {"short_layers": 0},
                  {"embedding_dim": 1}, {"interest_extractor": "mind"}, {"use_generator": False},
                  {"keep_mode": "top"}, {"keep_count": 0}, {"pooling": "sum"}, {"sample_start": "random"},
                  {"eval_sampling": "bank_mean"}, {"sample_grad": "none"}, {"empty_channel": "skip"},
                  {**WO_OMIE, "keep_mode": "code"}, {**WO_DMIG, "sample_grad": "last"}):
        with pytest.raises(ValueError):
            build_model("DiffuMIN", feature_map, model_kwargs, **extra)
    odd = copy.deepcopy(feature_map)
    odd.features["cate_id"]["embedding_dim"] = 3                                        # d = 11
    with pytest.raises(ValueError, match="even"):
        build_model("DiffuMIN", odd, model_kwargs)
    with pytest.raises(TypeError):
        build_model("DiffuMIN", feature_map, model_kwargs, num_channel=4)


@pytest.mark.parametrize("extra", [{}, {"short_encoder": "attention"}, WO_OMIE, WO_DMIG])
def test_lain_all_off_is_diffumin(extra, feature_map, model_kwargs, tiny_batch):
    backbone = build_model("DiffuMIN", feature_map, model_kwargs, **extra)
    variant = build_model("DiffuMIN_LAIN", feature_map, model_kwargs, **extra, **LAIN_OFF)
    assert variant.length_conditioner is None
    assert_lain_off_is_backbone(backbone, variant, tiny_batch)
    torch.testing.assert_close(train_forward(variant, tiny_batch).y_pred, train_forward(backbone, tiny_batch).y_pred,
                               atol=0, rtol=0)


def test_lain_placement(feature_map, model_kwargs, tiny_batch):
    """Prompts give an L = 0 row non-zero channel interests; the temperature sits on the short encoder's
    self-attentions only (OMIE has no softmax); the shifts start at zero."""
    model = build_model("DiffuMIN_LAIN", feature_map, model_kwargs)
    extractor = long_branch(model).extractor
    assert extractor.temperature is None and extractor.lma.temperature
    assert all(block.temperature is not None for block in model.branches["short"].blocks)
    assert not extractor.channel_shift.weight.any() and not extractor.key_shift.weight.any()
    batch = truncate(tiny_batch, [0])
    model.eval()
    with torch.no_grad():
        out = model(batch).branches["long"].interest.view(len(batch.mask), 2, -1, model.token_dim)
    assert out[0, 0].abs().sum(-1).min() > 0 and out[0, 1].abs().sum(-1).min() > 0
