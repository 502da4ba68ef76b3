"""Checks every model's test file runs: shapes, padding invariance, max_len, determinism, LAIN off."""
import torch

from lainctr.data.loader import SequenceBatch


def left_pad(batch: SequenceBatch, extra: int) -> SequenceBatch:
    """The same samples with ``extra`` more padding columns in front of every history."""
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
                         history_length=batch.history_length, item_index=item_index)


def predict(model, batch: SequenceBatch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)["y_pred"]


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
