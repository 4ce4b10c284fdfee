"""The audit runs in full float32: no TF32 and no autocast while the model is evaluated."""

from __future__ import annotations

import torch
from audit_helpers import audit_document, quick_config
from torch import nn


class _Recorder(nn.Module):
    """Passes through to the model and records the precision settings of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: set[tuple[bool, bool, bool]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(
            (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.is_autocast_enabled(x.device.type),
            )
        )
        return self.model(x)


def test_tf32_and_autocast_are_off_during_an_audit_and_restored_after() -> None:
    recorders: list[_Recorder] = []

    def wrap(model: nn.Module) -> nn.Module:
        recorders.append(_Recorder(model))
        return recorders[-1]

    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        audit_document("digits-mlp-dropout", quick_config(num_samples=20, flatness=True), wrap)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    assert recorders[0].seen == {(False, False, False)}
