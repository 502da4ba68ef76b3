"""Analysis of runs: length buckets, attention Gini, aggregation over seeds, published references, plots.

* :mod:`.length` — ``bucket_report``: samples / users / CTR per length bucket.
* :mod:`.gini` — ``gini``, ``attention_gini_by_bucket``.
* :mod:`.evaluation` — ``extra_evaluation_columns``: the columns ``Trainer.evaluate_split`` adds per split.
* :mod:`.aggregate` — results files -> mean ± std per expid -> LAIN-vs-backbone gains.
* :mod:`.reference` — ``reference/published_results.csv`` lookups.
* :mod:`.ablation` — the spec's ablation variants and table.
* :mod:`.plots` — PNGs (imported lazily: it loads matplotlib).
"""
from .ablation import ablation_overrides, ablation_table, infer_variant
from .evaluation import extra_evaluation_columns
from .gini import attention_gini_by_bucket, gini, gini_by_bucket
from .length import bucket_report

__all__ = ["ablation_overrides", "ablation_table", "infer_variant", "extra_evaluation_columns",
           "attention_gini_by_bucket", "gini", "gini_by_bucket", "bucket_report"]
