"""A switchable mechanism of the synthetic generator in which short- and long-history users need differently
shaped attention (issue 16; the problem LAIN addresses, spec s.1).

* **Long users** (full history ``L >= long_length``): a share ``anchor_share`` of their samples return to an
  *anchor* seen ``anchor_min_age`` to ``anchor_max_age`` behaviours before the sample, so the click depends on a
  few specific past behaviours (sharp attention over a window that reaches back far enough: invisible at
  max_len 50, always visible at max_len >= ``anchor_max_age``). ``anchor_match`` says what ties the sample to its
  anchor:

  - ``category`` (default): a *dormant interest*. The anchor is the user's only behaviour of a category outside
    their interests, each anchored sample with a category of its own; the sample's positive is another item of
    that category and its negatives are items of categories the user never consumed. Only seeing that past
    category tells the click, and category embeddings are well trained, so an attention model can read it. The
    anchor is a burst of ``anchor_burst`` consecutive behaviours of the category ending at the anchor's age (the
    bursts of one user do not overlap). A user has at most half of the categories missing from their history
    as anchors (the other half are the negatives' categories).
  - ``item``: the anchor is an item drawn uniformly from its category, seen once, and the positive re-consumes it
    against other items of that category: only that one item's identity tells the click (the first look of
    issue 16: with it DIN's long-history AUC stayed flat from max_len 50 to 500).
* **Short users** (``L <= short_length``): a share ``mix_share`` of their behaviours copy the category of a
  uniformly drawn earlier behaviour (a Polya urn) with a fresh item of it, and the negatives of their samples come
  from the categories of their history drawn uniformly: the click depends on the overall mix of the history (how
  often the target's category occurs), which smooth attention reads and sharp attention loses.
* Users in between get both in proportion ``a = (L - short_length) / (long_length - short_length)``: anchors
  with probability ``a * anchor_share``, urn copies with ``(1 - a) * mix_share``, urn negatives with ``1 - a``.

The mechanism rewrites the base generator's draws with a random stream of its own, after the base drew them:
the users' lengths (so the data's imbalance: most users short, most samples from long users), interests, hours
and sample positions are exactly the base generator's. Off (``SyntheticConfig.length_shift = None``) nothing
here runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

STREAM = 0x1E65   # the mechanism's random stream is seeded with (seed, STREAM)
BASE, MIX, ANCHOR = 0, 1, 2   # how a sample's negatives are drawn
ANCHOR_MATCHES = ("category", "item")


@dataclass(frozen=True)
class LengthShiftConfig:
    """Knobs of the mechanism (see the module docstring); lengths in behaviours."""
    short_length: int = 100
    long_length: int = 200
    mix_share: float = 0.9
    anchor_share: float = 0.5
    anchor_min_age: int = 100
    anchor_max_age: int = 900
    anchor_match: str = "category"
    anchor_burst: int = 1

    def __post_init__(self):
        if not 0 < self.short_length < self.long_length:
            raise ValueError(f"length_shift: need 0 < short_length < long_length, got {self.short_length}, "
                             f"{self.long_length}")
        if not 0 < self.anchor_min_age <= self.anchor_max_age:
            raise ValueError(f"length_shift: need 0 < anchor_min_age <= anchor_max_age, got "
                             f"{self.anchor_min_age}, {self.anchor_max_age}")
        if self.anchor_match not in ANCHOR_MATCHES:
            raise ValueError(f"length_shift: anchor_match must be one of {ANCHOR_MATCHES}, got "
                             f"{self.anchor_match!r}")
        if self.anchor_burst < 1 or (self.anchor_burst > 1 and self.anchor_match != "category"):
            raise ValueError(f"length_shift: anchor_burst must be >= 1 (and 1 unless anchor_match is 'category'), "
                             f"got {self.anchor_burst} with anchor_match {self.anchor_match!r}")
        for name in ("mix_share", "anchor_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"length_shift: {name} must lie in [0, 1], got {getattr(self, name)}")

    def long_weight(self, length: int) -> float:
        """a in [0, 1]: 0 for short users, 1 for long users, linear in between."""
        return float(np.clip((length - self.short_length) / (self.long_length - self.short_length), 0.0, 1.0))


class RewrittenUser(NamedTuple):
    """One user's behaviours after the mechanism: items and categories (L,), per sample (num_samples,) how its
    negatives are drawn (``BASE`` / ``MIX`` / ``ANCHOR``), and the categories absent from the history that
    category-matched anchors draw their negatives from (empty for ``anchor_match: item``)."""
    items: np.ndarray
    categories: np.ndarray
    kinds: np.ndarray
    absent_categories: np.ndarray


def rewrite(shift: LengthShiftConfig, world, items: np.ndarray, categories: np.ndarray, num_samples: int,
            rng: np.random.Generator) -> RewrittenUser:
    """The mechanism applied to one user's base behaviours ``items``, ``categories`` (L,) whose last
    ``num_samples`` positions are samples; ``world`` is the generator's item catalogue."""
    length = len(items)
    weight = shift.long_weight(length)
    items, categories = items.copy(), categories.copy()
    copies = np.flatnonzero(rng.random(length) < (1.0 - weight) * shift.mix_share)
    parents = np.floor(rng.random(len(copies)) * copies).astype(np.int64)
    for position, parent in zip(copies[copies > 0], parents[copies > 0]):   # sequential: a copy may be copied
        categories[position] = categories[parent]
    redrawn = copies[copies > 0]
    items[redrawn] = world.items_of(categories[redrawn], rng)
    kinds = np.where(rng.random(num_samples) < 1.0 - weight, MIX, BASE)
    positions = np.arange(length - num_samples, length)
    sources = positions - rng.integers(shift.anchor_min_age, shift.anchor_max_age + 1, num_samples)
    anchored = (rng.random(num_samples) < weight * shift.anchor_share) & (sources >= 0) & \
        (sources < length - num_samples)
    anchored &= _first_occurrences(np.where(anchored, sources, -1))
    if shift.anchor_match == "item":
        absent = _place_item_anchors(world, items, categories, sources, positions, anchored, rng)
    else:
        anchored, absent = _place_dormant_interests(shift, world, items, categories, sources, positions, anchored, rng)
    kinds[anchored] = ANCHOR
    return RewrittenUser(items, categories, kinds, absent)


def _place_item_anchors(world, items, categories, sources, positions, anchored, rng) -> np.ndarray:
    """``anchor_match: item``, in place: each anchored sample's positive re-consumes a uniformly drawn item of its
    source's category, written at the source. Returns no absent categories (the negatives share the anchor's)."""
    size = world.cfg.items_per_category
    for sample in np.flatnonzero(anchored):
        source, position = sources[sample], positions[sample]
        items[source] = 1 + categories[source] * size + rng.integers(size)
        items[position], categories[position] = items[source], categories[source]
    return np.empty(0, dtype=np.int64)


def _place_dormant_interests(shift: LengthShiftConfig, world, items, categories, sources, positions, anchored, rng):
    """``anchor_match: category``, in place: anchored samples (in random order, at most half as many as
    categories are missing from the history, skipping those whose burst would overlap a kept one or start
    before the history) each get a missing category of their own, written with fresh items of it over the
    ``anchor_burst`` behaviours ending at their source and at their position. Returns (anchored
    (num_samples,) bool, the categories still absent from the history)."""
    missing = rng.permutation(np.setdiff1d(np.arange(world.cfg.num_categories), categories))
    burst = shift.anchor_burst
    kept: list = []
    taken = np.zeros(len(items), dtype=bool)
    for sample in rng.permutation(np.flatnonzero(anchored)):
        if len(kept) == len(missing) // 2:
            break
        first = sources[sample] - burst + 1
        if first >= 0 and not taken[first:sources[sample] + 1].any():
            taken[first:sources[sample] + 1] = True
            kept.append(sample)
    chosen = np.sort(np.array(kept, dtype=np.int64))
    dormant = missing[:len(chosen)]
    bursts = (sources[chosen, None] - np.arange(burst)[::-1]).ravel()
    for where, of in ((bursts, np.repeat(dormant, burst)), (positions[chosen], dormant)):
        categories[where] = of
        items[where] = world.items_of(of, rng)
    anchored = np.zeros_like(anchored)
    anchored[chosen] = True
    return anchored, missing[len(chosen):]


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """True at the first occurrence of every value >= 0 (one anchor per source position)."""
    keep = np.zeros(len(values), dtype=bool)
    valid = np.flatnonzero(values >= 0)
    _, first = np.unique(values[valid], return_index=True)
    keep[valid[first]] = True
    return keep


def negatives(user: RewrittenUser, base_negatives: np.ndarray, per_sample: int, world,
              rng: np.random.Generator) -> np.ndarray:
    """The negatives (num_samples * per_sample,), sample-major: the base generator's for ``BASE`` samples; for
    ``ANCHOR`` samples items of categories the user never consumed (``anchor_match: category``) or other items of
    the anchor's category (``item``); items of a category of the history drawn uniformly (each distinct category
    once) for ``MIX`` samples."""
    out = base_negatives.copy()
    num_samples = len(user.kinds)
    positions = np.arange(len(user.items) - num_samples, len(user.items))
    kinds = np.repeat(user.kinds, per_sample)
    rows = np.repeat(positions, per_sample)
    size = world.cfg.items_per_category
    anchor = np.flatnonzero(kinds == ANCHOR)
    if len(user.absent_categories):
        out[anchor] = world.items_of(rng.choice(user.absent_categories, size=len(anchor)), rng)
    else:
        out[anchor] = 1 + user.categories[rows[anchor]] * size + rng.integers(size, size=len(anchor))
    mix = np.flatnonzero(kinds == MIX)
    distinct, first_seen = np.unique(user.categories, return_index=True)
    order = np.argsort(first_seen)
    seen = np.searchsorted(first_seen[order], rows[mix], side="left")        # categories seen before the sample
    drawn = distinct[order][np.floor(rng.random(len(mix)) * seen).astype(np.int64)]
    out[mix] = world.items_of(drawn, rng)
    return out
