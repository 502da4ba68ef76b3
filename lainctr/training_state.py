"""What resuming a fit needs besides the trainer's counters: RNG states, atomic writes, the SIGTERM guard."""
from __future__ import annotations

import contextlib
import random
import signal
import threading
from typing import Any, Callable, Dict, Iterator

import numpy as np
import torch

from .atomic import write_atomically

RESUME_FILE = "last.ckpt"


def rng_states() -> Dict[str, Any]:
    """The states of every random generator training draws from (torch CPU and CUDA, NumPy, Python)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states: Dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_torch_save(content: object, path: str) -> None:
    """``torch.save`` through :func:`lainctr.atomic.write_atomically`: never a half-written file under ``path``."""
    write_atomically(path, lambda tmp: torch.save(content, tmp))


@contextlib.contextmanager
def preemption_guard() -> Iterator[Callable[[], bool]]:
    """Within the block SIGTERM only raises a flag (the returned callable reads it), so training can finish its
    step, save a resume point and stop; outside the main thread, or when another handler is installed, the
    flag never rises and SIGTERM keeps its meaning."""
    raised = threading.Event()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield raised.is_set
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: raised.set())
    try:
        yield raised.is_set
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
