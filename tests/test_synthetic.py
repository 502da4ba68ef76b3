"""The synthetic generator: shape of the length distribution, determinism, the format's promises."""
from dataclasses import replace

import numpy as np
import pytest

from lainctr.data import synthetic
from lainctr.data.dataset import load_dataset
from lainctr.data.length_shift import LengthShiftConfig
from lainctr.data.store import read_info


@pytest.fixture(scope="module")
def demo():
    return synthetic.generate(synthetic.PRESETS["demo"])


def test_demo_is_heavy_tailed_like_the_paper(demo):
    splits, sequences, _ = demo
    all_seq_len = np.concatenate([s["seq_len"] for s in splits.values()])
    stats = synthetic.length_statistics(sequences.lengths(), all_seq_len)
    short_users, _, long_users = stats["user_share"]
    short_samples, _, long_samples = stats["sample_share"]
    assert 0.50 <= short_users <= 0.65          # most users are short ...
    assert 0.10 <= short_samples <= 0.22        # ... but they hold a minority of the samples
    assert long_samples >= 0.55 and long_users <= 0.30
    assert sequences.lengths().max() > 1000     # long enough to exercise max_len 1000


def test_long_users_have_broader_interests(demo):
    _, sequences, _ = demo
    cfg = synthetic.PRESETS["demo"]
    lengths = sequences.lengths()
    categories = (sequences.items - 1) // cfg.items_per_category
    distinct = np.array([len(np.unique(categories[a:b])) for a, b in zip(sequences.offsets[:-1], sequences.offsets[1:])])
    assert distinct[lengths > 200].mean() > distinct[lengths < 100].mean() + 1


def test_same_seed_same_data_other_seed_other_data():
    cfg = synthetic.PRESETS["tiny"]
    a, b = synthetic.generate(cfg), synthetic.generate(cfg)
    c = synthetic.generate(replace(cfg, seed=cfg.seed + 1))
    for split in ("train", "valid", "test"):
        for col in a[0][split]:
            np.testing.assert_array_equal(a[0][split][col], b[0][split][col])
    np.testing.assert_array_equal(a[1].items, b[1].items)
    assert not np.array_equal(a[1].items, c[1].items)


def test_positive_target_is_next_behaviour_and_history_is_earlier():
    splits, sequences, _ = synthetic.generate(synthetic.PRESETS["tiny"])
    for columns in splits.values():
        pos = columns["label"] == 1
        u, s = columns["user_index"][pos], columns["seq_len"][pos]
        np.testing.assert_array_equal(sequences.items[sequences.offsets[u] + s], columns["item_index"][pos])
        assert np.all(columns["seq_len"] < sequences.lengths()[columns["user_index"]])


def test_ctr_and_split_sizes(tiny_dir):
    info = read_info(tiny_dir)
    assert info["ctr"] == pytest.approx(0.25, abs=0.01)
    n = info["num_samples"]
    assert n["train"] > 5 * n["valid"] and n["valid"] > 0 and n["test"] > 0


def test_splits_are_chronological_per_user(tiny_dataset):
    """Within a user, every train sample precedes every valid sample, which precedes every test sample."""
    s = tiny_dataset.splits
    for earlier, later in (("train", "valid"), ("valid", "test")):
        last = np.full(len(tiny_dataset.offsets), -1)
        np.maximum.at(last, s[earlier]["user_index"], s[earlier]["seq_len"])
        assert np.all(s[later]["seq_len"] > last[s[later]["user_index"]])


def test_timestamps_have_sessions_and_daily_rhythm_and_leave_the_other_columns_alone():
    cfg = synthetic.PRESETS["tiny"]
    splits, sequences, _ = synthetic.generate(cfg)
    times, offsets = sequences.side["timestamp"], sequences.offsets
    gaps = np.diff(times)
    within_user = np.ones(len(gaps), dtype=bool)
    within_user[offsets[1:-1] - 1] = False
    gaps = gaps[within_user]
    assert gaps.min() >= 0
    assert np.median(gaps) < 300                                   # most behaviours are inside a session ...
    assert 0.1 < np.mean(gaps > 3600) < 0.35                       # ... sessions are hours to days apart
    assert np.percentile(gaps, 95) > 86_400
    categories = (sequences.items - 1) // cfg.items_per_category
    angle = (times // 3600 % 24) / 24 * 2 * np.pi                  # hour-of-day concentration per category
    concentration = [np.hypot(np.cos(angle[categories == c]).mean(), np.sin(angle[categories == c]).mean())
                     for c in range(cfg.num_categories) if np.sum(categories == c) > 50]
    assert np.mean(concentration) > 0.3                            # uniform hours would give ~0.05
    # a sample's time is the time of the behaviour at its position (the same for a positive and its negatives)
    for columns in splits.values():
        u, s = columns["user_index"], columns["seq_len"]
        np.testing.assert_array_equal(columns["timestamp"], times[offsets[u] + s])


def _history(sequences, user, seq_len):
    return sequences.items[sequences.offsets[user]:sequences.offsets[user] + seq_len]


def _generate_with_shift(shift: LengthShiftConfig):
    base_cfg = synthetic.PRESETS["tiny"]
    return base_cfg, synthetic.generate(base_cfg), synthetic.generate(replace(base_cfg, length_shift=shift))


def _sample_rows(split, label):
    """Per positive: (user, seq_len, positive item, its negatives)."""
    for row in np.flatnonzero(split["label"] == label):
        user, seq_len = split["user_index"][row], split["seq_len"][row]
        same = (split["user_index"] == user) & (split["seq_len"] == seq_len) & (split["label"] == 0)
        yield user, seq_len, split["item_index"][row], split["item_index"][same]


def test_length_shift_with_item_anchors_keeps_the_base_users_and_contains_the_problem():
    """Short users' negatives come from their history's categories (the mix decides); many long users' clicks
    re-consume an item seen once, anchor_min_age..anchor_max_age behaviours back, against negatives of its
    category (that one item decides); lengths, users and labels are the base generator's."""
    shift = LengthShiftConfig(anchor_min_age=20, anchor_max_age=120, anchor_match="item")
    base_cfg, base, (splits, sequences, _) = _generate_with_shift(shift)
    np.testing.assert_array_equal(base[1].lengths(), sequences.lengths())
    for split in splits:                     # rows are ordered by item within (user, seq_len): compare as multisets
        for column in ("user_index", "seq_len", "label", "hour"):
            a, b = base[0][split], splits[split]
            np.testing.assert_array_equal(a[column][np.lexsort((a[column], a["seq_len"], a["user_index"]))],
                                          b[column][np.lexsort((b[column], b["seq_len"], b["user_index"]))])
    assert not np.array_equal(base[1].items, sequences.items)
    size, lengths = base_cfg.items_per_category, sequences.lengths()
    train = splits["train"]
    short_checked = anchors = long_positives = 0
    for user, seq_len, item, negatives in _sample_rows(train, 1):
        history = _history(sequences, user, seq_len)
        if lengths[user] <= shift.short_length:
            assert set((negatives - 1) // size) <= set((history - 1) // size)
            short_checked += 1
        elif lengths[user] >= shift.long_length:
            long_positives += 1
            seen = np.flatnonzero(history == item)
            if len(seen) == 1 and shift.anchor_min_age <= seq_len - seen[0] <= shift.anchor_max_age and \
                    np.all((negatives - 1) // size == (item - 1) // size):
                anchors += 1
    assert short_checked > 100 and long_positives > 100
    # anchor_share 0.5 of the samples whose anchor fits before the sample range (about 60 % on tiny)
    assert anchors > 0.15 * long_positives


def test_length_shift_with_dormant_interests_ties_long_clicks_to_one_far_category():
    """anchor_match: category (the default): a share of long users' clicks return to a category the user consumed
    exactly once, anchor_min_age..anchor_max_age behaviours back, against negatives of categories absent from the
    whole history, so only that one far behaviour tells the click; lengths and labels are the base generator's."""
    shift = LengthShiftConfig(anchor_min_age=20, anchor_max_age=120)
    assert shift.anchor_match == "category"
    base_cfg, base, (splits, sequences, _) = _generate_with_shift(shift)
    np.testing.assert_array_equal(base[1].lengths(), sequences.lengths())
    for split in splits:
        np.testing.assert_array_equal(np.sort(base[0][split]["seq_len"]), np.sort(splits[split]["seq_len"]))
        assert base[0][split]["label"].sum() == splits[split]["label"].sum()
    size, lengths = base_cfg.items_per_category, sequences.lengths()
    anchors = long_positives = 0
    for user, seq_len, item, negatives in _sample_rows(splits["train"], 1):
        if lengths[user] < shift.long_length:
            continue
        long_positives += 1
        history_categories = (_history(sequences, user, seq_len) - 1) // size
        seen = np.flatnonzero(history_categories == (item - 1) // size)
        if len(seen) == 1 and shift.anchor_min_age <= seq_len - seen[0] <= shift.anchor_max_age:
            assert not set((negatives - 1) // size) & set(history_categories)
            anchors += 1
    # at most half of a user's missing categories (>= 6 of tiny's 20) become anchors: ~10 % of long positives
    assert long_positives > 500 and anchors > 0.06 * long_positives
    with pytest.raises(ValueError, match="anchor_match must be one of"):
        LengthShiftConfig(anchor_match="items")


def test_length_shift_knobs_from_the_builder_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"length_shift: unknown key\(s\) \['anchor_shar'\]"):
        synthetic.build(str(tmp_path / "x"), "tiny", length_shift={"anchor_shar": 0.7}, show_progress=False)
    with pytest.raises(ValueError, match="mix_share must lie in"):
        LengthShiftConfig(mix_share=1.5)
    folder = synthetic.build(str(tmp_path / "y"), "tiny", length_shift={"anchor_share": 0.7}, show_progress=False)
    assert read_info(folder)["generator"]["length_shift"]["anchor_share"] == 0.7
    assert synthetic.PRESETS["demo_lengthshift"] == replace(synthetic.PRESETS["demo"], length_shift=LengthShiftConfig())


def test_generator_knobs_from_the_builder_arguments(tmp_path):
    for bad in ({"num_categorys": 40}, {"seed": 1}, {"length_shift": {}}):
        with pytest.raises(ValueError, match=r"generator: unknown key\(s\)"):
            synthetic.resolve_config("tiny", generator=bad)
    folder = synthetic.build(str(tmp_path / "z"), "tiny", generator={"num_categories": 40, "items_per_category": 50},
                             show_progress=False)
    generated, item_table = read_info(folder)["generator"], load_dataset(folder).item_table
    assert (generated["num_categories"], generated["items_per_category"]) == (40, 50)
    assert len(item_table["cate_id"]) == 40 * 50 + 1 and item_table["cate_id"].max() == 40


def test_dormant_interest_bursts_are_consecutive():
    """anchor_burst: k: many long users' clicks return to a category seen exactly k times before, on k consecutive
    behaviours ending anchor_min_age..anchor_max_age back, against negatives of categories never seen."""
    counts = {}
    for burst in (1, 3):
        shift = LengthShiftConfig(anchor_min_age=20, anchor_max_age=120, anchor_burst=burst)
        base_cfg, _, (splits, sequences, _) = _generate_with_shift(shift)
        size, lengths = base_cfg.items_per_category, sequences.lengths()
        counts[burst] = 0
        for user, seq_len, item, negatives in _sample_rows(splits["train"], 1):
            history_categories = (_history(sequences, user, seq_len) - 1) // size
            seen = np.flatnonzero(history_categories == (item - 1) // size)
            if lengths[user] >= shift.long_length and len(seen) == 3 and np.all(np.diff(seen) == 1) and \
                    shift.anchor_min_age <= seq_len - seen[-1] <= shift.anchor_max_age and \
                    not set((negatives - 1) // size) & set(history_categories):
                counts[burst] += 1
    assert counts[3] > 50 and counts[1] < 5
    with pytest.raises(ValueError, match="anchor_burst must be >= 1"):
        LengthShiftConfig(anchor_burst=2, anchor_match="item")
