"""Progress of a long loop: a bar on an interactive terminal, a log line every minute otherwise.

Redirected output (nohup, CI, a cluster's log file) gets no bar, which would print one line per update, but
``logging`` lines at most every :data:`LOG_EVERY_SECONDS`: batches done (of how many), rate and time left, so
that a run whose epochs take many minutes still shows that it moves and how fast.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

LOG_EVERY_SECONDS = 60.0
Item = TypeVar("Item")


def progress(iterable: Iterable[Item], verbose: int, desc: str, total: Optional[int] = None,
             done_before: int = 0) -> Iterable[Item]:
    """``iterable`` with progress reporting when ``verbose > 0``; ``total`` items in all (None: unknown), of
    which ``done_before`` were consumed before (a resumed epoch)."""
    if verbose <= 0:
        return iterable
    if sys.stdout.isatty():
        return tqdm(iterable, desc=desc, leave=False, file=sys.stdout, total=total, initial=done_before)
    return logged_progress(iterable, desc, total, done_before)


def logged_progress(iterable: Iterable[Item], desc: str, total: Optional[int] = None, done_before: int = 0,
                    every_seconds: float = LOG_EVERY_SECONDS, clock=time.monotonic) -> Iterator[Item]:
    """Yields ``iterable``'s items; after an item, when ``every_seconds`` have passed since the last line,
    logs ``<desc>: <done>/<total> (<rate>/s, about <m> min left)``."""
    began = last = clock()
    for count, item in enumerate(iterable, start=1):
        yield item
        now = clock()
        if now - last < every_seconds:
            continue
        last = now
        rate = count / max(now - began, 1e-9)
        if total is None:
            logging.info("%s: %d done (%.2f/s)", desc, done_before + count, rate)
        else:
            left = max(total - done_before - count, 0) / rate / 60.0
            logging.info("%s: %d/%d (%.2f/s, about %.0f min left)", desc, done_before + count, total, rate, left)
