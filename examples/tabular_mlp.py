"""A plain tabular MLP: the kind of model `autopilot improve` starts from."""

import torch
from torch import nn


class TabularMLP(nn.Module):
    """Two hidden layers with ReLU; the harness fills n_features and n_outputs."""

    def __init__(self, n_features: int, n_outputs: int, hidden: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
