"""Values a module derives from the parameters and keeps for inference, declared by the module itself.

A module that keeps such values subclasses :class:`InferenceCache` (or :class:`LengthTabulated`); the model
finds every one by type and drops them all whenever the parameters may have changed (optimizer step,
``train()``, a weight load). Nobody has to list the classes that cache.
"""
from __future__ import annotations

import torch


class InferenceCache:
    """Mixin for an ``nn.Module`` that keeps values computed from parameters, valid until they change."""

    def drop_cache(self) -> None:
        """Forget every kept value (the module then computes from its parameters again)."""
        raise NotImplementedError


class LengthTabulated(InferenceCache):
    """Mixin for a module whose output depends on the integer length L alone (no batch statistics): for
    inference the model evaluates it once for L = 0, 1, ..., N - 1 and rows read the table."""

    def tabulate(self, lengths: torch.Tensor) -> None:
        """Build the table for lengths (N,) float = 0, 1, ..., N - 1."""
        raise NotImplementedError
