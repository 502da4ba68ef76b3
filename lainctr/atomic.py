"""Writing files and folders that other processes read: a lock per target, temporary names, stale leftovers.

Every writer of a target ``T`` (a results CSV, a dataset folder) holds :func:`locked` ``(T)`` while it writes
``T``'s temporary sibling :func:`temp_path` ``(T)`` = ``.<name>.tmp-<random>`` and renames it onto ``T``. So
whoever holds the lock knows that every temporary sibling of ``T`` is a leftover of a killed writer and can
remove it (:func:`remove_stale_temps`). While the lock is held, SIGTERM raises ``SystemExit`` (where a signal
handler can be installed), so the writer's cleanup runs; SIGKILL leaves the temporary behind for the next
writer to remove.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import threading
import uuid
from typing import Callable, Iterator

from filelock import FileLock


def lock_path(target: str) -> str:
    return f"{os.path.abspath(target)}.lock"


@contextlib.contextmanager
def locked(target: str) -> Iterator[None]:
    """Hold the exclusive, re-entrant lock of ``target`` (``<target>.lock``, removed when the outermost
    holder leaves; filelock re-locks when a waiter got an inode that was unlinked meanwhile)."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    lock = FileLock(lock_path(target), is_singleton=True)
    with lock, _sigterm_raises():
        try:
            yield
        finally:
            if lock.lock_counter == 1:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock.lock_file)


def temp_path(target: str) -> str:
    """A fresh temporary sibling of ``target``: ``.<name>.tmp-<8 hex>``."""
    target = os.path.abspath(target)
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")


def write_atomically(target: str, write: Callable[[str], object]) -> None:
    """``write(tmp)`` into a fresh :func:`temp_path` of ``target``, then rename it onto ``target``: an interrupted
    write (a kill, a full disk) leaves the previous file and no half-written one; a failed write removes its
    temporary, a killed one leaves it for :func:`remove_stale_temps`."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = temp_path(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomically(target: str, text: str) -> None:
    """``text`` into ``target`` through :func:`write_atomically`."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fd:
            fd.write(text)
    write_atomically(target, write)


def remove_stale_temps(target: str) -> None:
    """Remove ``target``'s temporary siblings (``.<name>.tmp-*``) and set-aside copies (``<name>.old-*``).
    Call only while holding :func:`locked` ``(target)``: then none of them belongs to a live writer."""
    target = os.path.abspath(target)
    parent, name = os.path.dirname(target), glob.escape(os.path.basename(target))
    for path in glob.glob(os.path.join(parent, f".{name}.tmp-*")) + glob.glob(os.path.join(parent, f"{name}.old-*")):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _raise_exit(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` meanwhile (main thread, default handler only), so ``finally`` runs."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
