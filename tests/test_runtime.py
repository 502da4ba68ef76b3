"""The CPU runtime settings of the entry points, and the fused optimizer."""
import math
import os
import platform
import subprocess
import sys

import pytest
from model_checks import build_model

from lainctr.cpu_kernels import kernel_fingerprint
from lainctr.trainer import Trainer

PROBE = ("import os, sys; from lainctr.runtime import configure_cpu_runtime; "
         "print(configure_cpu_runtime(), os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
         "'torch' in sys.modules)")


def probe(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_WAIT", "GOMP_"))}
    return subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_runtime_sets_malloc_and_short_openmp_spinning_without_loading_torch():
    assert probe() == ["True", "PASSIVE", "1000", "False"]


def test_runtime_respects_the_users_settings():
    assert probe(OMP_WAIT_POLICY="ACTIVE", MALLOC_TRIM_THRESHOLD_="131072") == ["False", "ACTIVE", "None", "False"]
    assert probe(GOMP_SPINCOUNT="0") == ["True", "None", "0", "False"]


@pytest.mark.parametrize("optimizer,fused", [("adam", True), ("AdamW", True), ("SGD", None)])
def test_adam_uses_the_fused_kernel(optimizer, fused, feature_map, model_kwargs, tiny_batch):
    model = build_model("DIN_LAIN", feature_map, {**model_kwargs, "optimizer": optimizer})
    trainer = Trainer(model, model.trainer_options)
    assert trainer.optimizer.defaults.get("fused") is fused
    assert len(trainer.optimizer.param_groups[0]["params"]) == len(list(model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    loss = trainer.train_step(tiny_batch, 0, 1)                          # the (fused) step runs
    assert any(not bool((p == b).all()) for p, b in zip(model.parameters(), before))
    assert math.isfinite(loss)


def test_kernel_fingerprint_repeats_and_leaves_the_global_rng_alone():
    import re

    import torch
    state = torch.get_rng_state()
    first = kernel_fingerprint()
    assert torch.equal(torch.get_rng_state(), state)
    assert kernel_fingerprint() == first
    assert re.fullmatch(rf"{torch.backends.cpu.get_cpu_capability()}-[0-9a-f]{{12}}", first)
