"""Checks every model's test file runs: shapes, padding invariance, max_len, determinism, LAIN off."""
import torch

from lainctr.data.loader import SequenceBatch

# every LAIN component off: the variant must be its backbone exactly
LAIN_OFF = dict(use_prompts=False, use_qk_conditioning=False, use_temperature=False)
# the LAIN switches every variant's shape and padding tests run with (models add their own)
LAIN_SWITCHES = [{}, {"use_sle": False}, {"use_prompts": False}, {"use_qk_conditioning": False},
                 {"use_temperature": False}, {"lain_on_short_branch": False}, {"num_prompts": 2, "fourier_dim": 4},
                 {"length_input": "log1p"}, {"length_source": "raw"}, {"length_embedding_dim": 0},
                 {"shared_prompts": False}, {"learn_pivot": True}]


PADDING_TIME = 987_654_321   # a time no model may read: what left_pad writes at the new padded columns


def left_pad(batch: SequenceBatch, extra: int) -> SequenceBatch:
    """The same samples with ``extra`` more padding columns in front of every history (garbage times there)."""
    batch_size, width = batch.mask.shape
    item_index = torch.cat([torch.zeros(batch_size, extra, dtype=torch.long), batch.item_index], dim=1)
    rows = item_index.shape[1]

    def pad_feature(values: torch.Tensor) -> torch.Tensor:
        per_sample = values.view(batch_size, width + 1, *values.shape[1:])
        zeros = torch.zeros(batch_size, extra, *values.shape[1:], dtype=values.dtype)
        return torch.cat([zeros, per_sample], dim=1).view(batch_size * rows, *values.shape[1:])

    return SequenceBatch(batch_dict=batch.batch_dict,
                         item_dict={k: pad_feature(v) for k, v in batch.item_dict.items()},
                         mask=torch.cat([torch.zeros(batch_size, extra), batch.mask], dim=1),
                         history_length=batch.history_length, item_index=item_index,
                         history_time=None if batch.history_time is None else torch.cat(
                             [torch.full((batch_size, extra), PADDING_TIME), batch.history_time], dim=1),
                         target_time=batch.target_time)


def predict(model, batch: SequenceBatch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch).y_pred


def assert_padding_invariant(model, batch: SequenceBatch, extra: int = 7) -> None:
    torch.testing.assert_close(predict(model, left_pad(batch, extra)), predict(model, batch), atol=1e-5, rtol=1e-5)


def assert_output_shape(model, batch: SequenceBatch) -> None:
    y = predict(model, batch)
    assert y.shape == (batch.mask.shape[0], 1)
    assert torch.all((y > 0) & (y < 1))


def assert_lain_off_is_backbone(backbone, variant, batch: SequenceBatch) -> None:
    """``variant`` (all LAIN switches off) with the backbone's weights computes the backbone."""
    variant.load_state_dict(backbone.state_dict(), strict=True)
    torch.testing.assert_close(predict(variant, batch), predict(backbone, batch), atol=0, rtol=0)


def randomize_embeddings(model, std: float = 0.5) -> None:
    """Replace FuxiCTR's N(0, 1e-4) init by a visible one (padding row stays 0), so checks are sensitive."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.embedding_layer.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()


def build_model(name: str, feature_map, model_kwargs: dict, **extra):
    """``name`` from the zoo, seeded, with visible embeddings (see :func:`randomize_embeddings`)."""
    from lainctr.registry import get_model
    torch.manual_seed(0)
    model = get_model(name)(feature_map, **{**model_kwargs, **extra})
    randomize_embeddings(model)
    return model


def assert_window_respected(model, dataset, max_len: int = 30, checked_rows: int = 5, check_oldest: bool = False) -> None:
    """Changing the behaviour just older than the ``max_len`` window leaves a prediction unchanged;
    changing the most recent behaviour (and, with ``check_oldest``, the oldest one inside the window)
    changes it, so the model does read the window."""
    from lainctr.data.loader import SequenceBatchLoader
    loader = SequenceBatchLoader(dataset, "valid", batch_size=64, max_len=max_len)
    rows = torch.arange(64).numpy()
    batch = loader.make_batch(rows)
    baseline = predict(model, batch)
    long_rows = torch.nonzero(batch.history_length > max_len).view(-1)[:checked_rows]
    assert len(long_rows) > 0
    for row in long_rows.tolist():
        u, s = int(batch.batch_dict["user_index"][row]), int(batch.history_length[row])
        checks = [(s - max_len - 1, False), (s - 1, True)] + ([(s - max_len, True)] if check_oldest else [])
        for position, should_change in checks:
            flat = dataset.offsets[u] + position
            saved = dataset.behaviours[flat].clone()
            dataset.behaviours[flat] = 1 if saved != 1 else 2
            try:
                changed = predict(model, loader.make_batch(rows))[row]
            finally:
                dataset.behaviours[flat] = saved
            assert torch.allclose(changed, baseline[row], atol=1e-6) != should_change


def truncate(batch: SequenceBatch, rows, keep: int = 0) -> SequenceBatch:
    """The batch with only the ``keep`` most recent behaviours of ``rows`` left (keep = 0: L = 0)."""
    batch_size, width = batch.mask.shape
    drop = torch.zeros(batch_size, width + 1, dtype=torch.bool)
    drop[rows, :width - keep] = True
    item_dict = {k: v.view(batch_size, width + 1).masked_fill(drop, 0).view(-1) for k, v in batch.item_dict.items()}
    history_length = batch.history_length.clone()
    history_length[rows] = keep
    history_time = None if batch.history_time is None else batch.history_time.masked_fill(drop[:, :-1], 0)
    return SequenceBatch(batch.batch_dict, item_dict, batch.mask.masked_fill(drop[:, :-1], 0), history_length,
                         batch.item_index.masked_fill(drop, 0), history_time, batch.target_time)


def model_inputs(model, batch: SequenceBatch):
    """target (B, d), history (B, T, d), mask (B, T) bool as the model sees them."""
    inputs = model.branch_inputs(batch)[1]
    return inputs.target, inputs.history, inputs.mask


def labels_of(batch: SequenceBatch) -> torch.Tensor:
    return batch.batch_dict["label"].float().view(-1, 1)


def training_loss(model, batch: SequenceBatch):
    """(model output, CTR + auxiliary loss) of a training forward pass, as the trainer computes them."""
    from lainctr.trainer import Trainer
    model.train()
    out = model(batch, labels_of(batch))
    return out, Trainer(model, model.trainer_options).loss(out.y_pred, out.auxiliary_loss, labels_of(batch))


def long_attention(model, batch: SequenceBatch):
    """The long branch's attention record (weights, support) of an eval pass."""
    model.eval()
    with torch.no_grad():
        out = model(batch).branches["long"]
    return out.attention, out.support


def assert_finite_on_empty_histories(model, batch: SequenceBatch) -> None:
    """A training step on rows without any behaviour gives finite predictions, loss and gradients."""
    out, loss = training_loss(model, batch)
    loss.backward()
    assert torch.isfinite(out.y_pred).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def assert_short_mask_shift_difference(ours, upstream, batch: SequenceBatch) -> None:
    """LongCTR masks its short window with ``mask[:, -S:-1]`` (the neighbour's mask). Given the window's
    own mask, LongCTR's short attention computes ours; with its shifted mask it differs exactly on the rows
    whose window holds their oldest real behaviour. ``batch`` rows 0-2 must be such rows."""
    target, history, mask = model_inputs(ours, batch)
    window, window_mask = ours.branches["short"].window_of(history, mask)
    width = window.shape[1]
    with torch.no_grad():
        mine, _ = ours.branches["short"].attention(target, window, window_mask)
        shifted = upstream.short_attention(target, window, mask[:, -width - 1:-1].float())
        fixed = upstream.short_attention(target, window, window_mask.float())
    torch.testing.assert_close(fixed, mine, atol=1e-5, rtol=1e-5)
    affected = (mask[:, -width - 1:-1] != window_mask).any(1)
    assert affected[:3].all() and not affected.all()
    assert (shifted[affected] - mine[affected]).abs().amax(1).min() > 1e-4
    torch.testing.assert_close(shifted[~affected], mine[~affected], atol=1e-5, rtol=1e-5)


def assert_gradients_repeat(loss_of, leaves, trials: int = 4) -> None:
    """``loss_of()`` backpropagated ``trials`` times gives bit-identical gradients on ``leaves``
    (CPU indexing with repeated rows, ``x[rows]``, accumulates its gradient in a varying order)."""
    seen = []
    for _ in range(trials):
        for leaf in leaves:
            leaf.grad = None
        loss_of().backward()
        seen.append([leaf.grad.clone() for leaf in leaves])
    for grads in seen[1:]:
        assert all(torch.equal(a, b) for a, b in zip(seen[0], grads))
