"""The prefetching loader yields exactly the loader's batches, also from a resumed position and on errors."""
import pytest
import torch

from lainctr.data.loader import SequenceBatchLoader
from lainctr.data.prefetch import PrefetchingLoader, prefetching


def same(a, b) -> bool:
    return (all(torch.equal(a.batch_dict[k], b.batch_dict[k]) for k in a.batch_dict)
            and all(torch.equal(a.item_dict[k], b.item_dict[k]) for k in a.item_dict)
            and torch.equal(a.mask, b.mask) and torch.equal(a.item_index, b.item_index))


@pytest.mark.parametrize("first", [0, 3])
def test_prefetched_batches_are_the_loaders(first, tiny_dataset):
    plain = SequenceBatchLoader(tiny_dataset, "train", 256, 40, shuffle=True, seed=5)
    ahead = PrefetchingLoader(SequenceBatchLoader(tiny_dataset, "train", 256, 40, shuffle=True, seed=5), depth=3)
    for _ in range(2):                                  # two epochs: the shuffling advances alike
        expected, got = list(plain.batches_from(first)), list(ahead.batches_from(first))
        assert len(got) == len(expected) == len(ahead) - first and all(map(same, got, expected))
    ahead.epoch = 0                                     # a resumed fit sets the epoch through the wrapper
    assert ahead.loader.epoch == 0


def test_an_early_stop_and_a_failing_loader(tiny_dataset, monkeypatch):
    loader = SequenceBatchLoader(tiny_dataset, "train", 64, 40)
    ahead = PrefetchingLoader(loader, depth=1)
    for index, _ in enumerate(ahead):                   # the consumer leaves early: the producer stops
        if index == 2:
            break
    monkeypatch.setattr(loader.columns, "take", lambda names, rows: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        list(ahead)


def test_cpu_trains_on_the_plain_loader(tiny_dataset):
    loader = SequenceBatchLoader(tiny_dataset, "valid", 64, 40)
    assert prefetching(loader, torch.device("cpu")) is loader
    assert isinstance(prefetching(loader, torch.device("cpu"), depth=2), PrefetchingLoader)
