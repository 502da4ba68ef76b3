"""CMIC, DiffuMIN's contrastive calibrator: in-batch InfoNCE between a user's real and generated interests.

Spec: ``shared/docs/DIFFUMIN_SPEC.md`` section 3.3.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def info_nce(real: torch.Tensor, generated: torch.Tensor, valid: torch.Tensor, user: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """L_cl = mean_j mean_{b valid} [ logsumexp_{b'} l_bb' - l_bb ], l_bb' = z_{b,j} . z*_{b',j} / tau, per channel
    over the batch, one direction (real -> generated).

    The candidates of row b are itself and every valid row b' of another user: rows of the same user are
    not negatives (a zoo batch may hold several samples of one user), nor are rows whose channel j has no
    real behaviour. A channel with fewer than 2 valid rows contributes 0 (it still counts in the mean over
    channels). Every term is >= 0 (the positive is among the candidates).

    Args:
        real / generated: (B, c, d) unit vectors z and z*; valid: (B, c) bool; user: (B,) ids; temperature: tau.
    Returns:
        scalar.
    """
    logits = torch.einsum("bjd,ejd->jbe", real, generated) / temperature                      # c x B x B
    own = torch.eye(user.shape[0], dtype=torch.bool, device=user.device)
    candidates = ((user.unsqueeze(0) != user.unsqueeze(1)).unsqueeze(0) & valid.t().unsqueeze(1)) | own
    row_loss = torch.logsumexp(logits.masked_fill(~candidates, float("-inf")), dim=-1) - torch.diagonal(
        logits, dim1=-2, dim2=-1)                                                               # c x B
    rows = valid.t()
    count = rows.sum(1)
    per_channel = torch.where(rows, row_loss, torch.zeros_like(row_loss)).sum(1) / count.clamp(min=1)
    return torch.where(count >= 2, per_channel, torch.zeros_like(per_channel)).mean()


class ContrastiveCalibrator(nn.Module):
    """CMIC: z = norm(g_1(r_j)), z* = norm(g_2(r*_j)) with separate projection heads d -> 4d (ReLU) -> d, then
    :func:`info_nce`.

    Args:
        dim: d; temperature: tau_cl (> 0).
    """

    def __init__(self, dim: int, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.real_head = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.generated_head = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

    def forward(self, real: torch.Tensor, generated: torch.Tensor, valid: torch.Tensor,
                user: torch.Tensor) -> torch.Tensor:
        """real r_j and generated r*_j: (B, c, d); valid: (B, c) bool; user: (B,) -> scalar."""
        return info_nce(F.normalize(self.real_head(real), dim=-1), F.normalize(self.generated_head(generated), dim=-1),
                        valid, user, self.temperature)
