"""Batch loader in the LongCTR contract, with vectorised history gathers.

For a batch of samples it gathers each sample's history (the prefix ``items[offsets[u] : offsets[u] +
seq_len]`` of its user's sequence), keeps the most recent ``max_len`` behaviours, pre-pads with 0 so the
most recent behaviour is rightmost, appends the target, and looks up every item feature for the
``B x (T+1)`` item indices with one ``index_select`` per feature. No pandas and no per-sample Python.
When the dataset has times, the behaviours' times go through the same flat index and padding as the items
(``history_time``), and the split's ``timestamp`` column, if any, gives the sample's own (``target_time``).
The sample columns come from :class:`~lainctr.data.columns.Columns`, in memory or read from the split's file
(``out_of_core``): the same batches either way.
"""
from __future__ import annotations

from typing import Dict, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch

from ..distributed import SINGLE_PROCESS, ProcessGroup
from .dataset import SequenceDataset
from .store import TIME_COLUMN

ROWS_PER_READ = 1 << 18   # out of core: rows read at once for consecutive batches (~10 MB of 5 int64 columns)


class SequenceBatch(NamedTuple):
    """One batch.

    Attributes:
        batch_dict: per sample column (meta, label, context features): (B,) or (B, w) tensors.
        item_dict: per item feature: (B*(T+1),) or (B*(T+1), w) tensors; rows per sample are
            ``hist_1 ... hist_T, target`` (LongCTR layout).
        mask: (B, T) float, 1 = real behaviour; pre-padded, most recent behaviour at column T-1.
        history_length: (B,) int64, the untruncated number of prior behaviours (``seq_len``).
        item_index: (B, T+1) int64 item rows of the history (0 = padding) and the target.
        history_time: (B, T) int64 times of the history's behaviours (0 at padding), or None when the dataset
            has no times.
        target_time: (B,) int64 the sample's own time (the split's ``timestamp``), or None without one.
        global_rows: with data parallelism, the size of the global batch this batch is one rank's shard of
            (0: not sharded).
    """
    batch_dict: Dict[str, torch.Tensor]
    item_dict: Dict[str, torch.Tensor]
    mask: torch.Tensor
    history_length: torch.Tensor
    item_index: torch.Tensor
    history_time: Optional[torch.Tensor] = None
    target_time: Optional[torch.Tensor] = None
    global_rows: int = 0

    def to(self, device: torch.device, non_blocking: bool = False) -> "SequenceBatch":
        """The batch on ``device`` (itself when it is there already)."""
        if self.mask.device == torch.device(device):
            return self
        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device, non_blocking=non_blocking)

        def move_optional(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if tensor is None else move(tensor)

        return SequenceBatch({k: move(v) for k, v in self.batch_dict.items()},
                             {k: move(v) for k, v in self.item_dict.items()},
                             move(self.mask), move(self.history_length), move(self.item_index),
                             move_optional(self.history_time), move_optional(self.target_time), self.global_rows)


class HistoryIndex(NamedTuple):
    """Where a batch's pre-padded, truncated histories lie in the flat behaviour columns.

    Attributes:
        flat: (B*T,) int64 flat position of every history cell (0 at padding).
        valid: (B, T) bool, False at padding (on the left).
    """
    flat: torch.Tensor
    valid: torch.Tensor

    def gather(self, column: torch.Tensor) -> torch.Tensor:
        """(N,) per-behaviour values -> (B, T), 0 at padding."""
        if len(column) == 0:
            return torch.zeros(self.valid.shape, dtype=column.dtype)
        return torch.index_select(column, 0, self.flat).view(self.valid.shape).masked_fill_(~self.valid, 0)


def history_index(offsets: np.ndarray, user_index: np.ndarray, seq_len: np.ndarray, max_len: int) -> HistoryIndex:
    """The flat positions of the ``max_len`` most recent prior behaviours of every sample, pre-padded to
    T = max(1, min(max(seq_len), max_len)) columns.

    Args:
        offsets: (U+1,) CSR offsets; user_index, seq_len: (B,) per sample.
    """
    kept = np.minimum(seq_len, max_len).astype(np.int64)
    width = max(1, int(kept.max()) if len(kept) else 1)
    first = offsets[user_index] + seq_len - kept              # flat position of the oldest kept behaviour
    column = np.arange(width, dtype=np.int64)[None, :] - (width - kept)[:, None]
    valid = column >= 0
    flat = torch.from_numpy(np.where(valid, first[:, None] + column, 0).reshape(-1))
    return HistoryIndex(flat, torch.from_numpy(valid))


def gather_histories(offsets: np.ndarray, behaviours: torch.Tensor, user_index: np.ndarray,
                     seq_len: np.ndarray, max_len: int) -> torch.Tensor:
    """Pre-padded, truncated histories: (B, T) int64 item indices (see :func:`history_index`), 0 = padding
    on the left; ``behaviours``: (N,) item indices of all users."""
    return history_index(offsets, user_index, seq_len, max_len).gather(behaviours)


class SequenceBatchLoader:
    """Iterates over one split in batches.

    Args:
        dataset: the loaded dataset.
        split: ``train``, ``valid`` or ``test``.
        batch_size: samples per batch.
        max_len: number of most recent behaviours kept.
        shuffle: reshuffle every epoch from ``seed + epoch`` (reproducible).
        seed: base seed of the shuffling.
        columns: sample columns to put into ``batch_dict`` (default: all columns of the split but its
            ``timestamp``, which comes as ``target_time``: batch_dict holds feature-map columns only).
        times: yield ``history_time`` / ``target_time`` when the dataset has them (one more gather per batch;
            off for models that read no time, ``model.reads_time()``).
        group: with data parallelism, this rank's place: every batch of the epoch (the global batch, of
            ``batch_size`` rows, cut from the seeded permutation every rank draws alike) is split into
            ``world_size`` contiguous shards and the rank reads its own, so the union of the ranks' batches is
            the single-process epoch. A trailing batch smaller than 2 rows per rank joins the batch before it.
    """

    def __init__(self, dataset: SequenceDataset, split: str, batch_size: int, max_len: int,
                 shuffle: bool = False, seed: int = 0, columns: Optional[Sequence[str]] = None, times: bool = True,
                 group: ProcessGroup = SINGLE_PROCESS):
        if batch_size < 2 * group.world_size and group.distributed:
            raise ValueError(f"batch_size {batch_size} gives fewer than 2 rows to each of {group.world_size} ranks")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.split = split
        self.batch_size = batch_size
        self.max_len = max_len
        self.shuffle = shuffle
        self.seed = seed
        self.group = group
        self.epoch = 0
        self.columns = dataset.splits[split]
        self.names = [c for c in self.columns.names if c != TIME_COLUMN] if columns is None else list(columns)
        self.with_target_time = times and TIME_COLUMN in self.columns
        self.behaviour_time = dataset.behaviour_time if times else None
        # every column a batch needs, read once per batch (out of core: once per ROWS_PER_READ rows)
        self._read = list(dict.fromkeys([*self.names, "user_index", "seq_len", "item_index"]
                                        + ([TIME_COLUMN] if self.with_target_time else [])))
        self.num_samples = self.columns.num_rows

    def batch_starts(self) -> np.ndarray:
        """Start offsets of the batches. A trailing batch of one sample (per rank) is merged into the one before
        it: BatchNorm (and Dice) cannot train on a single row, and ``n % batch_size == 1`` happens on real data."""
        starts = np.arange(0, self.num_samples, self.batch_size)
        if len(starts) > 1 and self.num_samples - starts[-1] < 2 * self.group.world_size:
            starts = starts[:-1]
        return starts

    def __len__(self) -> int:
        return len(self.batch_starts())

    def _order(self) -> np.ndarray:
        """The epoch's sample order: ``default_rng(seed + epoch).permutation(n)``, drawn into int32 where n allows
        (the same order: ``shuffle`` draws alike for any dtype; 4 bytes per training sample, the one array that
        grows with the split when its columns stay on disk)."""
        dtype = np.int32 if self.num_samples < 2 ** 31 else np.int64
        order = np.arange(self.num_samples, dtype=dtype)
        if self.shuffle:
            np.random.default_rng(self.seed + self.epoch).shuffle(order)
            self.epoch += 1
        return order

    def make_batch(self, rows: np.ndarray) -> SequenceBatch:
        """Assemble the batch of the given sample rows, shape (B,)."""
        return self._assemble(self.columns.take(self._read, rows))

    def _assemble(self, values: Dict[str, np.ndarray]) -> SequenceBatch:
        """The batch of the sample columns' values of its rows (each (B,) or (B, w))."""
        seq_len = values["seq_len"].astype(np.int64)
        index = history_index(self.dataset.offsets, values["user_index"].astype(np.int64), seq_len, self.max_len)
        history = index.gather(self.dataset.behaviours)
        times = self.behaviour_time
        target = torch.from_numpy(values["item_index"].astype(np.int64)).view(-1, 1)
        item_index = torch.cat([history, target], dim=1)
        flat_items = item_index.view(-1)
        item_dict = {name: torch.index_select(table, 0, flat_items)
                     for name, table in self.dataset.item_table.items()}
        batch_dict = {name: torch.from_numpy(values[name]) for name in self.names}
        return SequenceBatch(batch_dict=batch_dict, item_dict=item_dict, mask=(history > 0).float(),
                             history_length=torch.from_numpy(seq_len), item_index=item_index,
                             history_time=None if times is None else index.gather(times),
                             target_time=(torch.from_numpy(values[TIME_COLUMN].astype(np.int64))
                                          if self.with_target_time else None))

    def __iter__(self) -> Iterator[SequenceBatch]:
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[SequenceBatch]:
        """This epoch's batches from batch ``first`` on (the earlier ones are not built): how an interrupted
        epoch resumes, with ``epoch`` set to the interrupted epoch's index beforehand.

        Columns on disk are read for ``ROWS_PER_READ`` rows of consecutive batches at once (their rows sorted:
        a pass over the file rather than a read per row); columns in memory batch by batch."""
        order = self._order()
        starts = self.batch_starts()
        spans = list(zip(starts, np.append(starts[1:], self.num_samples)))[first:]
        per_read = max(1, ROWS_PER_READ // self.batch_size) if self.columns.on_disk else 1
        for group_start in range(0, len(spans), per_read):
            group = spans[group_start:group_start + per_read]
            rows = [self.group.shard(order[start:end].astype(np.int64)) for start, end in group]
            values = self.columns.take(self._read, np.concatenate(rows))
            bounds = np.cumsum([0] + [len(r) for r in rows])
            for (start, end), low, high in zip(group, bounds[:-1], bounds[1:]):
                batch = self._assemble({name: column[low:high] for name, column in values.items()})
                yield batch._replace(global_rows=int(end - start)) if self.group.distributed else batch
