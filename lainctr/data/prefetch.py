"""Background batch preparation for an accelerator: the next batches are gathered (and, for CUDA, pinned) in a
thread while the device computes, and copied with ``non_blocking``."""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Optional

import torch

from .loader import SequenceBatch, SequenceBatchLoader

_DONE = object()


class PrefetchingLoader:
    """Wraps a :class:`SequenceBatchLoader`: iterating it yields the same batches in the same order, built
    ``depth`` batches ahead in a background thread (NumPy gathers and ``index_select`` release the GIL), pinned
    in page-locked memory when ``pin_memory``. Everything else (``epoch``, ``shuffle``, ``len``) is the loader's.

    Args:
        loader: the loader; depth: batches prepared ahead; pin_memory: pin them (for ``to(cuda, non_blocking)``).
    """

    def __init__(self, loader: SequenceBatchLoader, depth: int = 2, pin_memory: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.loader, self.depth, self.pin_memory = loader, depth, pin_memory

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:   # a resumed fit sets the interrupted epoch
        self.loader.epoch = value

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[SequenceBatch]:
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[SequenceBatch]:
        ready: "queue.Queue[object]" = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        failure: list = []

        def produce() -> None:
            try:
                for batch in self.loader.batches_from(first):
                    if stop.is_set():
                        return
                    ready.put(pin(batch) if self.pin_memory else batch)
            except BaseException as error:   # handed to the consumer, raised there
                failure.append(error)
            finally:
                ready.put(_DONE)

        worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    break
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            while worker.is_alive():            # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.01)
        if failure:
            raise failure[0]


def pin(batch: SequenceBatch) -> SequenceBatch:
    """The batch in page-locked memory, so that ``batch.to(cuda, non_blocking=True)`` overlaps the copy."""
    pinned = lambda t: None if t is None else t.pin_memory()  # noqa: E731
    return batch._replace(batch_dict={k: v.pin_memory() for k, v in batch.batch_dict.items()},
                          item_dict={k: v.pin_memory() for k, v in batch.item_dict.items()},
                          mask=batch.mask.pin_memory(), history_length=batch.history_length.pin_memory(),
                          item_index=batch.item_index.pin_memory(), history_time=pinned(batch.history_time),
                          target_time=pinned(batch.target_time))


def prefetching(loader: SequenceBatchLoader, device: torch.device, depth: Optional[int] = None):
    """``loader`` wrapped for ``device``: prefetched and pinned on CUDA (``depth`` 2 by default), itself on the
    CPU unless ``depth`` asks for prefetching."""
    if device.type != "cuda" and depth is None:
        return loader
    return PrefetchingLoader(loader, depth or 2, pin_memory=device.type == "cuda")
