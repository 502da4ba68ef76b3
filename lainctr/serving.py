"""A trained model as a function of named, padded tensors: what an exported artefact computes.

:class:`ServingModel` holds the model (weights, inference caches: LAIN's per-length tables, TWIN's item
projections) and the dataset's item table, and turns the tensors a server has into the model's batch:

==================  ==========================  =================================================================
input               shape, dtype                meaning
==================  ==========================  =================================================================
``history_items``   (batch, width) int64        item-table rows of the behaviours, pre-padded (most recent on the
                                                right), 0 at padding
``history_mask``    (batch, width) bool         True = a real behaviour (the item rows where it is False are read
                                                as padding)
``target_item``     (batch,) int64              item-table row of the candidate
``history_length``  (batch,) int64              the untruncated number of prior behaviours (``seq_len``)
``user_index``      (batch,) int64              the user (the feature map's ``group_id`` column)
``history_time``    (batch, width) int64        the behaviours' times (0 at padding), for models that read time
``target_time``     (batch,) int64              the sample's own time (the splits' ``timestamp``)
context features    (batch,) or (batch, w)      one input per context feature, named and typed as in the splits
==================  ==========================  =================================================================

Output: ``score`` (batch,) float32, the click probability. The item features of every row come from the baked-in
item table, so a server sends rows, not features.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, cast

import torch
from torch import nn

from .data.loader import SequenceBatch
from .models.base import SequenceCTRModel

HISTORY_INPUTS = ("history_items", "history_mask", "history_time")   # (batch, width) inputs


class InputSpec(NamedTuple):
    """One input of the artefact: name, dtype (``torch`` name), shape (dimension names or sizes), meaning."""
    name: str
    dtype: str
    shape: Tuple
    meaning: str


class ServingModel(nn.Module):
    """``forward(*tensors)`` in the order of ``input_names`` -> scores (B,).

    Args:
        model: a trained model in eval mode with its inference caches built (``trainer.prepare_inference``).
        item_table: ``dataset.item_table`` ({feature: (N, ...)}, row 0 = padding), kept as buffers.
        context_names: the context features, one input each (the time inputs are there when the model reads time).
    """

    def __init__(self, model: SequenceCTRModel, item_table: Dict[str, torch.Tensor], context_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.item_features = list(model.item_features)
        for name in self.item_features:
            self.register_buffer(f"item_table_{name}", item_table[name].clone())
        self.group_id = model.feature_map.group_id or "user_index"
        self.context_names = list(context_names)
        times = ["history_time", "target_time"] if model.reads_time() else []
        self.input_names: List[str] = ["history_items", "history_mask", "target_item", "history_length",
                                       "user_index", *times, *self.context_names]

    def batch(self, inputs: Dict[str, torch.Tensor]) -> SequenceBatch:
        """The model's batch of the named inputs (what the loader would build for the same samples)."""
        mask = inputs["history_mask"].bool()
        rows = torch.cat([inputs["history_items"] * mask, inputs["target_item"].unsqueeze(1)], dim=1)
        flat = rows.reshape(-1)
        item_dict = {name: getattr(self, f"item_table_{name}")[flat] for name in self.item_features}
        batch_dict = {self.group_id: inputs["user_index"], **{k: inputs[k] for k in self.context_names}}
        return SequenceBatch(batch_dict, item_dict, mask.float(), inputs["history_length"], rows,
                             inputs.get("history_time"), inputs.get("target_time"))

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(self.batch(dict(zip(self.input_names, tensors)))).y_pred.view(-1)


def example_inputs(serving: ServingModel, batch: SequenceBatch) -> Tuple[torch.Tensor, ...]:
    """The artefact's inputs for a loader batch, in ``serving.input_names`` order."""
    named: Dict[str, Optional[torch.Tensor]] = {
        "history_items": batch.item_index[:, :-1].contiguous(), "history_mask": batch.mask > 0,
        "target_item": batch.item_index[:, -1].contiguous(), "history_length": batch.history_length,
        "user_index": batch.batch_dict[serving.group_id], "history_time": batch.history_time,
        "target_time": batch.target_time, **{k: batch.batch_dict[k] for k in serving.context_names}}
    missing = [n for n in serving.input_names if named.get(n) is None]
    if missing:
        raise ValueError(f"the batch has no {missing} (a model reading time needs a dataset with times)")
    return tuple(cast(torch.Tensor, named[n]) for n in serving.input_names)


MEANINGS = {"history_items": "item-table rows of the behaviours, pre-padded (most recent on the right), 0 at padding",
            "history_mask": "True = a real behaviour; padding where False",
            "target_item": "item-table row of the candidate",
            "history_length": "untruncated number of prior behaviours (seq_len)",
            "user_index": "the user (the feature map's group_id column)",
            "history_time": "times of the behaviours in the dataset's unit, 0 at padding",
            "target_time": "the sample's own time (the splits' timestamp)"}


def input_specs(names: Sequence[str], examples: Sequence[torch.Tensor]) -> List[InputSpec]:
    """The spec of each input from its example tensor (dimension 0 is ``batch``, a history's dimension 1
    ``history_width``; a context feature's other dimensions are fixed)."""
    specs = []
    for name, tensor in zip(names, examples):
        shape = ("batch", "history_width") if name in HISTORY_INPUTS else ("batch", *tensor.shape[1:])
        meaning = MEANINGS.get(name, "context feature, as the column of the dataset's splits")
        specs.append(InputSpec(name, str(tensor.dtype).replace("torch.", ""), shape, meaning))
    return specs
