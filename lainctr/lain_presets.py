"""LAIN's size presets (spec s.3.4), the YAML key ``lain_preset``; apart from the layers so that the config
and results tooling read them without loading torch.

Everything a preset leaves out keeps ``LAINConfig``'s default. ``lean`` is ``LAINConfig``'s defaults;
``paper`` the paper's selected setting (d_f 64, d_h 512, k 4) with the spec's readings for d_p and d_e.
"""
from typing import Dict

LAIN_PRESETS: Dict[str, Dict[str, int]] = {
    "lean": {"fourier_dim": 16, "sle_hidden_dim": 64, "num_prompts": 4, "prompt_hidden_dim": 32,
             "length_embedding_dim": 16},
    "paper": {"fourier_dim": 64, "sle_hidden_dim": 512, "num_prompts": 4,
              "prompt_hidden_dim": 0,        # d_p = d
              "length_embedding_dim": 0},    # e_len = h_len (d_e = d)
}
DEFAULT_PRESET = "lean"
