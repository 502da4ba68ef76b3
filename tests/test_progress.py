"""Progress of long loops when the output is not a terminal: a log line per interval, nothing else changed."""
import logging

from lainctr.progress import logged_progress, progress


class FakeClock:
    """Advances 25 s on every call after the first."""

    def __init__(self):
        self.now = -25.0

    def __call__(self):
        self.now += 25.0
        return self.now


def test_logged_progress_yields_everything_and_logs_once_per_interval(caplog):
    caplog.set_level(logging.INFO)
    items = list(logged_progress(range(10), "epoch 1 batches", total=14, done_before=4, every_seconds=60.0,
                                 clock=FakeClock()))
    assert items == list(range(10))
    lines = [r.getMessage() for r in caplog.records]
    # the clock reads 25 s per item: lines after items 3, 6 and 9 (75 s, 150 s, 225 s), 0.04 items/s
    assert lines == ["epoch 1 batches: 7/14 (0.04/s, about 3 min left)",
                     "epoch 1 batches: 10/14 (0.04/s, about 2 min left)",
                     "epoch 1 batches: 13/14 (0.04/s, about 0 min left)"]


def test_unknown_total_and_silent_mode(caplog):
    caplog.set_level(logging.INFO)
    assert list(logged_progress(iter("abc"), "evaluate batches", every_seconds=0.0, clock=FakeClock())) == list("abc")
    assert [r.getMessage() for r in caplog.records][-1] == "evaluate batches: 3 done (0.04/s)"
    data = [1, 2]
    assert progress(data, verbose=0, desc="x") is data
