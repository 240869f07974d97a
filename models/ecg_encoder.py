"""A small 1D ResNet over 12-lead windows (1.14 M parameters: fast on two CPU threads)."""

from __future__ import annotations

import torch
from torch import nn

from models.config import EcgClipConfig


class BasicBlock1d(nn.Module):
    """Two convolutions with a residual connection (ResNet-18 style, in 1D)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.drop(out)))
        return self.act(out + self.shortcut(x))


class EcgEncoder(nn.Module):
    """(batch, 12, samples) -> (batch, features). Length-agnostic: global average + max pooling."""

    def __init__(self, config: EcgClipConfig) -> None:
        super().__init__()
        k = config.kernel_size
        self.stem = nn.Sequential(
            nn.Conv1d(config.in_leads, config.stem_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm1d(config.stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1) if config.stem_pool else nn.Identity(),
        )
        layers: list[nn.Module] = []
        c_in = config.stem_channels
        for c_out in config.stage_channels:
            for i in range(config.blocks_per_stage):
                layers.append(BasicBlock1d(c_in, c_out, k, 2 if i == 0 else 1, config.dropout))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.out_features = 2 * c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        return torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)
