"""A small synthetic long-sequence CTR dataset that looks like the real problem.

* History lengths are log-normal: most users are short, most samples come from long users (the default
  ``demo`` preset has ~57 % of users under 100 behaviours holding ~15 % of the samples).
* Items belong to categories; item popularity is Zipf within a category.
* Each user has an interest mixture over categories, broader for long users, a sticky session process
  (the next behaviour often stays in the current category) and a few favourite items re-consumed
  throughout the history (so far-back behaviours carry signal).
* Samples are the user's most recent clicks (target = the next behaviour, label 1) plus non-clicked
  impressions at the same position (label 0) whose items partly share the user's interests. Positives
  relate to the history more closely than negatives do, so a sequence model clearly beats one without it.
* Behaviours carry Unix timestamps (side column ``timestamp``, seconds) with the structure real logs have
  (see :class:`TimeConfig`): sessions of behaviours a minute or so apart, separated by gaps of hours to days,
  a new session being more likely where the user's category changes; each category has a peak hour of day
  and a weekday/weekend lean, so *when* a user clicks says something about *what*. A sample's
  ``timestamp`` is the time of the behaviour at its position (the impression the positive was clicked at),
  the same for the positive and its negatives, so it carries no label. The ``hour`` context column
  predates the timestamps and is independent of them.

Everything is drawn from one seed: the same seed gives byte-identical files. Timestamps come from a random
stream of their own (seeded from the seed and :data:`TIME_STREAM`), so every other column is exactly what
it was before timestamps had any structure.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional

import numpy as np
from tqdm import tqdm

from . import length_shift as shift_lib
from .length_shift import LengthShiftConfig
from .store import FeatureSpec, UserSequences, build_feature_map_json, write_dataset

LABEL = "label"
TIME_STREAM = 0x7193   # the timestamps' random stream is seeded with (seed, TIME_STREAM)
DAY = 86_400


@dataclass(frozen=True)
class TimeConfig:
    """Time structure of the synthetic behaviours (times in Unix seconds)."""
    origin: int = 1_700_000_000          # 2023-11-14 (a Tuesday); users start within ``start_spread_days``
    start_spread_days: float = 30.0
    session_start_on_switch: float = 0.5  # P(new session) where the behaviour's category differs from the last
    session_start_otherwise: float = 0.05
    within_session_gap_s: float = 60.0    # mean gap inside a session (exponential, >= 1 s)
    same_day_session: float = 0.35        # P(the next session is on the same day, if its hour is still ahead)
    days_between_sessions: float = 0.45   # otherwise 1 + geometric(p) - 1 days later (mean ~ 2.2 days)
    min_session_gap_s: float = 3600.0     # sessions are at least an hour apart
    hour_sigma: float = 1.5               # a session starts at its category's peak hour + user offset + N(0, sigma)
    user_hour_sigma: float = 2.0
    weekend_lean_prob: float = 0.6        # P(a leaning category's session moves to its preferred part of the week)


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator knobs; see :data:`PRESETS`."""
    num_users: int
    num_categories: int
    items_per_category: int
    median_length: float
    length_sigma: float
    min_length: int
    max_length: int
    sample_fraction: float      # share of each user's most recent clicks that become positive samples
    negatives_per_click: int
    stickiness: float           # P(next behaviour stays in the current category)
    favourite_prob: float       # P(a behaviour re-consumes one of the user's favourite items)
    num_favourites: int
    zipf_exponent: float = 1.1
    seed: int = 2026
    time: TimeConfig = TimeConfig()
    length_shift: Optional[LengthShiftConfig] = None   # the issue-16 mechanism (lainctr.data.length_shift); off

    @property
    def num_items(self) -> int:
        """Item rows including the padding row 0."""
        return self.num_categories * self.items_per_category + 1


PRESETS: Dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(num_users=200, num_categories=20, items_per_category=100, median_length=40,
                            length_sigma=1.0, min_length=3, max_length=400, sample_fraction=0.3,
                            negatives_per_click=3, stickiness=0.6, favourite_prob=0.25, num_favourites=6),
    "demo": SyntheticConfig(num_users=1500, num_categories=50, items_per_category=400, median_length=80,
                            length_sigma=1.2, min_length=3, max_length=3000, sample_fraction=0.15,
                            negatives_per_click=3, stickiness=0.6, favourite_prob=0.25, num_favourites=12),
}
# The demo with the length-shift mechanism (short users read the mix of their history, long users a few
# specific past items); dataset ``synthetic_lengthshift``. Not the default demo.
PRESETS["demo_lengthshift"] = replace(PRESETS["demo"], length_shift=LengthShiftConfig())
SPLIT_FRACTIONS = (0.8, 0.9)  # per user, by time: first 80 % of samples train, next 10 % valid, last 10 % test


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return np.cumsum(weights) / weights.sum()


class _World:
    """Item catalogue: category c owns items ``1 + c*S ... (c+1)*S``, popularity Zipf by rank."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rank_cdf = _zipf_cdf(cfg.items_per_category, cfg.zipf_exponent)
        self.category_cdf = _zipf_cdf(cfg.num_categories, 0.7)
        self.category_order = rng.permutation(cfg.num_categories)  # which category is most popular

    def items_of(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rank = np.minimum(np.searchsorted(self.rank_cdf, rng.random(len(categories))),
                          self.cfg.items_per_category - 1)
        return 1 + categories * self.cfg.items_per_category + rank

    def popular_categories(self, n: int, rng: np.random.Generator) -> np.ndarray:
        idx = np.minimum(np.searchsorted(self.category_cdf, rng.random(n)), self.cfg.num_categories - 1)
        return self.category_order[idx]


class _Clock:
    """When categories are consumed: a peak hour of day each, and a lean towards weekdays (-1), weekends
    (+1) or neither (0)."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        self.cfg = cfg.time
        self.peak_hour = rng.uniform(0, 24, cfg.num_categories)
        self.weekend_lean = rng.choice([-1, 0, 1], size=cfg.num_categories, p=[0.3, 0.4, 0.3])

    def timestamps(self, item_categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(length,) int64 non-decreasing Unix seconds of one user's behaviours, given their categories."""
        t, length = self.cfg, len(item_categories)
        switch = np.ones(length, dtype=bool)
        switch[1:] = item_categories[1:] != item_categories[:-1]
        starts = rng.random(length) < np.where(switch, t.session_start_on_switch, t.session_start_otherwise)
        starts[0] = True
        session = np.cumsum(starts) - 1
        lead = item_categories[starts]
        user_hour = rng.normal(0, t.user_hour_sigma)
        hour = (self.peak_hour[lead] + user_hour + rng.normal(0, t.hour_sigma, len(lead))) % 24
        day_gap = np.where(rng.random(len(lead)) < t.same_day_session, 0, rng.geometric(t.days_between_sessions, len(lead)))
        lean_moves = rng.random(len(lead)) < t.weekend_lean_prob
        fallback_gap = t.min_session_gap_s + rng.exponential(2 * 3600.0, len(lead))
        within = np.maximum(1.0, rng.exponential(t.within_session_gap_s, length))
        within[starts] = 0
        offset_in_session = np.cumsum(within) - np.cumsum(within)[starts][session]
        duration = np.bincount(session, weights=within)
        day = t.origin // DAY + int(rng.uniform(0, t.start_spread_days))
        start, end = np.zeros(len(lead), dtype=np.int64), -np.inf
        for s in range(len(lead)):
            day += day_gap[s]
            weekday = (day + 3) % 7                      # 1970-01-01 was a Thursday; Monday = 0
            if lean_moves[s] and self.weekend_lean[lead[s]] > 0 and weekday < 5:
                day += 5 - weekday
            elif lean_moves[s] and self.weekend_lean[lead[s]] < 0 and weekday >= 5:
                day += 7 - weekday
            candidate = day * DAY + hour[s] * 3600
            start[s] = candidate if candidate >= end + t.min_session_gap_s else end + fallback_gap[s]
            day = start[s] // DAY
            end = start[s] + duration[s]
        return (start[session] + offset_in_session).astype(np.int64)


def _user_interests(cfg: SyntheticConfig, world: _World, length: int, rng: np.random.Generator):
    """Interest categories and weights; long users have broader mixtures."""
    k = int(np.clip(1 + rng.poisson(0.2 + np.log10(length)), 1, 8))
    categories = np.unique(world.popular_categories(3 * k, rng))[:k]
    weights = rng.dirichlet(np.ones(len(categories)))
    return categories, weights


def _behaviours(cfg: SyntheticConfig, world: _World, length: int, categories: np.ndarray,
                weights: np.ndarray, favourites: np.ndarray, rng: np.random.Generator):
    """One user's chronological behaviour sequence: (items, categories), each (length,)."""
    fresh = categories[rng.choice(len(categories), size=length, p=weights)]
    switch = rng.random(length) >= cfg.stickiness
    switch[0] = True
    last_switch = np.maximum.accumulate(np.where(switch, np.arange(length), 0))
    seq_categories = fresh[last_switch]                 # sticky Markov chain over the mixture
    items = world.items_of(seq_categories, rng)
    favourite = rng.random(length) < cfg.favourite_prob
    items[favourite] = rng.choice(favourites, size=int(favourite.sum()))
    return items, (items - 1) // cfg.items_per_category


def _negatives(cfg: SyntheticConfig, world: _World, previous_category: np.ndarray, categories: np.ndarray,
               weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shown-but-not-clicked items: a third near the current session, a third from the user's interests,
    a third popular items."""
    n = len(previous_category)
    kind = rng.integers(0, 3, size=n)
    cat = np.where(kind == 0, previous_category,
                   np.where(kind == 1, categories[rng.choice(len(categories), size=n, p=weights)],
                            world.popular_categories(n, rng)))
    return world.items_of(cat, rng)


def generate(cfg: SyntheticConfig, show_progress: bool = False):
    """Draw the whole dataset.

    Returns:
        (splits, sequences, item_table): see :func:`lainctr.data.store.write_dataset`.
    """
    rng = np.random.default_rng(cfg.seed)
    time_rng = np.random.default_rng([cfg.seed, TIME_STREAM])
    shift_rng = np.random.default_rng([cfg.seed, shift_lib.STREAM])
    world, clock = _World(cfg, rng), _Clock(cfg, time_rng)
    lengths = np.clip(np.round(rng.lognormal(np.log(cfg.median_length), cfg.length_sigma, cfg.num_users)),
                      cfg.min_length, cfg.max_length).astype(np.int64)
    sequences, timestamps, rows = [], [], []
    for user in tqdm(range(cfg.num_users), desc="synthetic users", disable=not show_progress):
        length = int(lengths[user])
        categories, weights = _user_interests(cfg, world, length, rng)
        favourites = world.items_of(categories[rng.choice(len(categories), cfg.num_favourites, p=weights)], rng)
        items, item_categories = _behaviours(cfg, world, length, categories, weights, favourites, rng)
        num_samples = max(1, int(round(cfg.sample_fraction * length)))
        if cfg.length_shift is not None:
            shifted = shift_lib.rewrite(cfg.length_shift, world, items, item_categories, num_samples, shift_rng)
            items, item_categories = shifted.items, shifted.categories
        sequences.append(items)
        rng.exponential(3600.0, size=length)   # the main stream's old timestamp draws: keeps every column after them
        times = clock.timestamps(item_categories, time_rng)
        timestamps.append(times)
        positions = np.arange(length - num_samples, length)
        rank = np.arange(num_samples) / num_samples
        split = np.searchsorted(np.array(SPLIT_FRACTIONS), rank, side="right")  # 0 train, 1 valid, 2 test
        previous_category = np.where(positions > 0, item_categories[np.maximum(positions - 1, 0)],
                                     world.popular_categories(num_samples, rng))
        r = cfg.negatives_per_click
        negatives = _negatives(cfg, world, np.repeat(previous_category, r), categories, weights, rng)
        if cfg.length_shift is not None:
            negatives = shift_lib.negatives(shifted, negatives, r, world, shift_rng)
        hour_pos = (18 + rng.normal(0, 4, num_samples)).astype(np.int64) % 24
        hour_neg = rng.integers(0, 24, size=num_samples * r)
        rows.append(np.column_stack([
            np.full(num_samples * (r + 1), user),
            np.concatenate([items[positions], negatives]),
            np.concatenate([positions, np.repeat(positions, r)]),
            np.concatenate([np.ones(num_samples), np.zeros(num_samples * r)]),
            np.concatenate([hour_pos, hour_neg]) + 1,
            np.concatenate([split, np.repeat(split, r)]),
            np.concatenate([times[positions], np.repeat(times[positions], r)]),
        ]).astype(np.int64))
    table = np.concatenate(rows)
    table = table[np.lexsort((table[:, 1], table[:, 2], table[:, 0]))]  # by user, time, item: stable
    names = ("user_index", "item_index", "seq_len", LABEL, "hour", None, "timestamp")
    dtypes = (np.int64, np.int64, np.int64, np.int8, np.int64, None, np.int64)
    splits = {name: {col: table[table[:, 5] == i, j].astype(dt) for j, (col, dt) in enumerate(zip(names, dtypes))
                     if col is not None}
              for i, name in enumerate(("train", "valid", "test"))}
    seqs = UserSequences.from_lists(sequences, side={"timestamp": timestamps})
    return splits, seqs, item_table(cfg)


def item_table(cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """``item_id`` and ``cate_id`` of every item row (row 0: the padding item, all zeros)."""
    item_ids = np.arange(cfg.num_items, dtype=np.int64)
    return {"item_id": item_ids, "cate_id": np.where(item_ids > 0, (item_ids - 1) // cfg.items_per_category + 1, 0)}


def length_statistics(lengths: np.ndarray, sample_seq_len: np.ndarray, boundaries=(100, 200)) -> Dict[str, list]:
    """Share of users (by full history length) and of samples (by seq_len) per length bucket."""
    edges = np.array(boundaries)
    users = np.bincount(np.searchsorted(edges, lengths, side="right"), minlength=len(edges) + 1)
    samples = np.bincount(np.searchsorted(edges, sample_seq_len, side="right"), minlength=len(edges) + 1)
    return {"bucket_boundaries": list(boundaries),
            "user_share": (users / users.sum()).round(4).tolist(),
            "sample_share": (samples / samples.sum()).round(4).tolist()}


def _check_knobs(name: str, knobs: Dict[str, Any], valid: set, hint: str = "") -> None:
    """Raises ValueError naming the keys of the ``name`` block of ``builder_args`` outside ``valid``."""
    unknown = sorted(set(knobs) - valid)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; valid: {sorted(valid)}{hint}")


def resolve_config(preset: str = "tiny", seed: int = 2026, length_shift: Optional[Dict[str, Any]] = None,
                   generator: Optional[Dict[str, Any]] = None) -> SyntheticConfig:
    """The generator config of a preset, a seed, ``generator`` values of the preset's scalar knobs (e.g.
    ``{num_categories: 200}``) and ``length_shift`` knobs of the length-shift mechanism
    (:class:`~lainctr.data.length_shift.LengthShiftConfig`) over the preset's own (switching it on for a preset
    without it), e.g. ``{anchor_share: 0.7}`` in a dataset's ``builder_args``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset '{preset}'; choose from {sorted(PRESETS)}")
    cfg = replace(PRESETS[preset], seed=seed)
    if generator is not None:
        scalar = set(SyntheticConfig.__dataclass_fields__) - {"seed", "time", "length_shift"}
        _check_knobs("generator", generator, scalar, " (seed and length_shift are builder_args of their own)")
        cfg = replace(cfg, **generator)
    if length_shift is not None:
        _check_knobs("length_shift", length_shift, set(LengthShiftConfig.__dataclass_fields__))
        cfg = replace(cfg, length_shift=replace(cfg.length_shift or LengthShiftConfig(), **length_shift))
    return cfg


def build(data_dir: str, preset: str = "tiny", seed: int = 2026, dataset_id: str = "synthetic",
          show_progress: bool = True, length_shift: Optional[Dict[str, Any]] = None,
          generator: Optional[Dict[str, Any]] = None) -> str:
    """Generate the config of :func:`resolve_config` and write it as a dataset folder (atomically)."""
    cfg = resolve_config(preset, seed, length_shift, generator)
    return write_synthetic(data_dir, cfg, preset, dataset_id, generate(cfg, show_progress=show_progress))


def write_synthetic(data_dir: str, cfg: SyntheticConfig, preset: str, dataset_id: str, generated: tuple) -> str:
    """Write generated ``(splits, sequences, item_table)`` of ``cfg`` as a dataset folder, with its feature map and
    info (generator settings, CTR, length statistics)."""
    splits, sequences, item_table = generated
    feature_map = build_feature_map_json(
        dataset_id, LABEL,
        sample_features=[FeatureSpec("hour", "categorical", "context", vocab_size=25)],
        item_features=[FeatureSpec("item_id", "categorical", "item", vocab_size=cfg.num_items),
                       FeatureSpec("cate_id", "categorical", "item", vocab_size=cfg.num_categories + 1)])
    all_seq_len = np.concatenate([s["seq_len"] for s in splits.values()])
    info = {"source_format": "synthetic", "preset": preset, "generator": asdict(cfg),
            "target_is_next_behaviour": True, "time_unit": "s", "time_is_wallclock": True,
            "ctr": float(np.mean(np.concatenate([s[LABEL] for s in splits.values()]))),
            "length_statistics": length_statistics(sequences.lengths(), all_seq_len)}
    return write_dataset(data_dir, splits, sequences, item_table, feature_map, info)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic long-sequence CTR dataset.")
    parser.add_argument("--output", required=True, help="dataset folder to write")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dataset_id", default="synthetic")
    args = parser.parse_args(argv)
    print(build(args.output, args.preset, args.seed, args.dataset_id))


if __name__ == "__main__":
    main()
