"""Synthetic datasets of millions of samples, for memory and throughput measurements (presets ``1m``, ``10m``).

The same kind of data as :mod:`lainctr.data.synthetic` (log-normal history lengths, Zipf items within
categories, per-user interest mixtures, sticky category sessions, favourite items re-consumed, each user's
most recent clicks as positives with negatives at the same position, split 80/10/10 per user by time), drawn
vectorised over blocks of users: the demo generator's per-user loop and its per-session clock would take hours
at 10M samples. Time is simpler than the demo's: sessions of behaviours about a minute apart, hours to days
between sessions, no hour-of-day or weekday rhythm. Meant for measuring, not for comparing models.

The sequences come from one random stream and the samples from another, so presets that differ only in how
many samples they take per history (``sample_fraction``, ``negatives_per_click``) write byte-identical
``sequences.h5`` and ``items.h5``: ``1m`` and ``10m`` differ in their number of samples and nothing else.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Tuple

import numpy as np
from tqdm import tqdm

from .store import UserSequences
from .synthetic import DAY, LABEL, SPLIT_FRACTIONS, SyntheticConfig, _World, item_table, write_synthetic

SEQUENCE_STREAM, SAMPLE_STREAM = 0x5E9, 0x5A3   # the two random streams are seeded (seed, stream)
USERS_PER_BLOCK = 2_000
SLOTS = 8                                       # interest categories per user at most (as the demo generator)
_SCALE = SyntheticConfig(num_users=40_000, num_categories=100, items_per_category=1_000, median_length=100,
                         length_sigma=1.0, min_length=3, max_length=3_000, sample_fraction=0.036,
                         negatives_per_click=3, stickiness=0.6, favourite_prob=0.25, num_favourites=12)
PRESETS: Dict[str, SyntheticConfig] = {   # the same 40k users and 6.6M behaviours; ~1.0M and ~10M samples
    "1m": _SCALE, "10m": replace(_SCALE, sample_fraction=0.375)}
SplitBlocks = Dict[str, Dict[str, List[np.ndarray]]]


def _slot(cumulative_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(R, SLOTS) per-row cumulative interest weights -> (R,) slot drawn by the weights."""
    return np.minimum((rng.random(len(cumulative_weights))[:, None] > cumulative_weights).sum(1), SLOTS - 1)


class _Users:
    """One block of users: their behaviour sequences, drawn from ``rng`` only.

    Attributes: lengths (B,); start (B,) first flat position; slots (B, SLOTS) interest categories; cumw (B, SLOTS)
    cumulative interest weights; owner (N,) user of each behaviour; items, categories, times (N,).
    """

    def __init__(self, cfg: SyntheticConfig, world: _World, lengths: np.ndarray, rng: np.random.Generator):
        self.lengths = lengths
        count = len(lengths)
        self.start = np.cumsum(lengths) - lengths
        self.owner = np.repeat(np.arange(count), lengths)
        breadth = np.clip(1 + rng.poisson(0.2 + np.log10(lengths)), 1, SLOTS)   # long users: broader mixtures
        self.slots = world.popular_categories(count * SLOTS, rng).reshape(count, SLOTS)
        weights = rng.gamma(1.0, size=(count, SLOTS)) * (np.arange(SLOTS) < breadth[:, None])
        self.cumw = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
        total = int(lengths.sum())
        fresh = self.slots[self.owner, _slot(self.cumw[self.owner], rng)]
        switch = rng.random(total) >= cfg.stickiness
        switch[self.start] = True
        last_switch = np.maximum.accumulate(np.where(switch, np.arange(total), 0))
        self.items = world.items_of(fresh[last_switch], rng)                    # sticky chain over the mixture
        favourite_slots = np.stack([_slot(self.cumw, rng) for _ in range(cfg.num_favourites)], axis=1)
        favourites = world.items_of(np.take_along_axis(self.slots, favourite_slots, 1).reshape(-1), rng)
        favourite = rng.random(total) < cfg.favourite_prob
        self.items[favourite] = favourites.reshape(count, -1)[self.owner[favourite],
                                                             rng.integers(0, cfg.num_favourites, int(favourite.sum()))]
        self.categories = (self.items - 1) // cfg.items_per_category
        self.times = self._times(cfg, rng)

    def _times(self, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
        """Non-decreasing Unix seconds per user: a new session is likelier where the category changes."""
        t, total = cfg.time, len(self.items)
        changed = np.ones(total, dtype=bool)
        changed[1:] = self.categories[1:] != self.categories[:-1]
        new_session = rng.random(total) < np.where(changed, t.session_start_on_switch, t.session_start_otherwise)
        gaps = np.where(new_session, t.min_session_gap_s + rng.exponential(1.2 * DAY, total),
                        np.maximum(1.0, rng.exponential(t.within_session_gap_s, total)))
        gaps[self.start] = 0
        elapsed = np.cumsum(gaps)
        origin = t.origin + rng.uniform(0, t.start_spread_days * DAY, len(self.lengths))
        return (origin[self.owner] + elapsed - elapsed[self.start][self.owner]).astype(np.int64)


def _samples(cfg: SyntheticConfig, world: _World, users: _Users, first_user: int, rng: np.random.Generator,
             out: SplitBlocks) -> None:
    """The block's samples, drawn from ``rng`` only, appended to ``out[split][column]``."""
    per_user = np.maximum(1, np.round(cfg.sample_fraction * users.lengths)).astype(np.int64)
    owner = np.repeat(np.arange(len(per_user)), per_user)
    rank = np.arange(len(owner)) - (np.cumsum(per_user) - per_user)[owner]
    position = users.lengths[owner] - per_user[owner] + rank
    flat = users.start[owner] + position
    split = np.searchsorted(np.array(SPLIT_FRACTIONS), rank / per_user[owner], side="right")
    previous = np.where(position > 0, users.categories[np.maximum(flat - 1, 0)],
                        world.popular_categories(len(owner), rng))
    r = cfg.negatives_per_click
    negative_owner = np.repeat(owner, r)
    kind = rng.integers(0, 3, size=len(negative_owner))   # near the session, from the interests, popular
    interest = users.slots[negative_owner, _slot(users.cumw[negative_owner], rng)]
    categories = np.where(kind == 0, np.repeat(previous, r),
                          np.where(kind == 1, interest, world.popular_categories(len(negative_owner), rng)))
    negatives = world.items_of(categories, rng)
    hour = np.concatenate([(18 + rng.normal(0, 4, len(owner))).astype(np.int64) % 24,
                           rng.integers(0, 24, size=len(negative_owner))]) + 1
    columns = {"user_index": first_user + np.concatenate([owner, negative_owner]),
               "item_index": np.concatenate([users.items[flat], negatives]),
               "seq_len": np.concatenate([position, np.repeat(position, r)]),
               LABEL: np.concatenate([np.ones(len(owner)), np.zeros(len(negative_owner))]).astype(np.int8),
               "hour": hour, "timestamp": np.concatenate([users.times[flat], np.repeat(users.times[flat], r)])}
    order = np.lexsort((columns["item_index"], columns["seq_len"], columns["user_index"]))   # as the demo's rows
    splits = np.concatenate([split, np.repeat(split, r)])[order]
    for index, name in enumerate(("train", "valid", "test")):
        keep = order[splits == index]
        for column, values in columns.items():
            out[name].setdefault(column, []).append(values[keep])


def generate(cfg: SyntheticConfig, show_progress: bool = False) -> Tuple[dict, UserSequences, dict]:
    """Draw a scale preset block by block of :data:`USERS_PER_BLOCK` users.

    Returns:
        (splits, sequences, item_table) as :func:`lainctr.data.synthetic.generate`.
    """
    sequence_rng = np.random.default_rng([cfg.seed, SEQUENCE_STREAM])
    sample_rng = np.random.default_rng([cfg.seed, SAMPLE_STREAM])
    world = _World(cfg, sequence_rng)
    lengths = np.clip(np.round(sequence_rng.lognormal(np.log(cfg.median_length), cfg.length_sigma, cfg.num_users)),
                      cfg.min_length, cfg.max_length).astype(np.int64)
    blocks: SplitBlocks = {"train": {}, "valid": {}, "test": {}}
    items, times = [], []
    with tqdm(total=cfg.num_users, desc="synthetic users", unit="user", disable=not show_progress) as bar:
        for first in range(0, cfg.num_users, USERS_PER_BLOCK):
            users = _Users(cfg, world, lengths[first:first + USERS_PER_BLOCK], sequence_rng)
            _samples(cfg, world, users, first, sample_rng, blocks)
            items.append(users.items)
            times.append(users.times)
            bar.update(len(users.lengths))
    offsets = np.zeros(cfg.num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sequences = UserSequences(offsets, np.concatenate(items).astype(np.int64),
                              {"timestamp": np.concatenate(times)})
    splits = {split: {column: np.concatenate(parts) for column, parts in columns.items()}
              for split, columns in blocks.items()}
    return splits, sequences, item_table(cfg)


def resolve_config(preset: str = "1m", seed: int = 2026) -> SyntheticConfig:
    """The generator config of a scale preset and a seed."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic scale preset '{preset}'; choose from {sorted(PRESETS)}")
    return replace(PRESETS[preset], seed=seed)


def build(data_dir: str, preset: str = "1m", seed: int = 2026, dataset_id: str = "synthetic_1m",
          show_progress: bool = True) -> str:
    """Generate a scale preset and write it as a dataset folder (atomically)."""
    cfg = resolve_config(preset, seed)
    return write_synthetic(data_dir, cfg, preset, dataset_id, generate(cfg, show_progress))
