"""A tiny real image model, saved as TorchScript, for the tests that need a fast backbone."""

from __future__ import annotations

from pathlib import Path

import torch


class PooledConv(torch.nn.Module):
    """One strided convolution, ReLU, global mean: 8 features per image, none zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) + 0.01


def save_tiny_torchscript(path: str | Path) -> str:
    """A :class:`PooledConv` of seed 0, scripted and saved at ``path`` (for
    ``backbone="torchscript"``); returns the path as str."""
    torch.manual_seed(0)
    torch.jit.script(PooledConv().eval()).save(str(path))
    return str(path)
