"""A factorised density: every sub-pixel an independent categorical over its `levels` values.

The simplest model of the likelihood task, and its calibration: with all logits equal it scores
exactly log2(levels) bits/dim (8 for 8-bit images), and with the logits set to the log
frequencies of a data set it scores that data set's per-sub-pixel entropy, its best possible
factorised NLL. It checks the harness's units, not a paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Factorised(nn.Module):
    capabilities = frozenset({"init_from_data", "sample"})  # bench/contracts.py

    def __init__(
        self,
        shape: tuple[int, int, int],
        levels: int = 256,
        init: str = "uniform",
        pseudo_count: float = 1.0,
    ):
        super().__init__()
        if levels not in (2, 256):
            raise ValueError(f"levels must be 2 (binary images) or 256 (8-bit), got {levels}")
        if init not in ("uniform", "data"):
            raise ValueError(f"init must be 'uniform' or 'data', got {init!r}")
        self.shape, self.levels, self.init = tuple(shape), levels, init
        self.pseudo_count = pseudo_count  # added to every count: unseen test values stay finite
        self.input_kind = "binary" if levels == 2 else "discrete256"
        # p(x_d = v) = softmax(logits_d)_v, independently for every sub-pixel d
        self.logits = nn.Parameter(torch.zeros(*self.shape, levels))

    @torch.no_grad()
    def init_from_data(self, x_uint8: Tensor) -> None:
        """With init = "data": log of each value's smoothed frequency in the training images,
        p_d(v) = (count_d(v) + a) / (N + a levels), the maximum-likelihood model when a = 0."""
        if self.init == "data":
            self.logits.copy_(torch.log(self.frequencies(x_uint8, self.pseudo_count)))

    def frequencies(self, x_uint8: Tensor, pseudo_count: float = 0.0) -> Tensor:
        """(count + a) / (N + a levels) per sub-pixel and value; binary images are stored 0/255."""
        values = (x_uint8 > 127).long() if self.levels == 2 else x_uint8.long()
        dims = values[0].numel()
        index = torch.arange(dims, device=values.device) * self.levels + values.flatten(1)
        counts = torch.bincount(index.flatten(), minlength=dims * self.levels).double()
        p = (counts + pseudo_count) / (len(values) + pseudo_count * self.levels)
        return p.view(*self.shape, self.levels).to(self.logits.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """-log p(x) in nats per image: -sum_d log softmax(logits_d)[x_d]."""
        log_p = F.log_softmax(self.logits, dim=-1).expand(len(x), *self.logits.shape)
        picked = log_p.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)
        return -picked.flatten(1).sum(1)

    @torch.no_grad()
    def nll(self, x: Tensor) -> Tensor:
        return self.forward(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        probs = F.softmax(self.logits, dim=-1).reshape(-1, self.levels)
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)
        return draws.T.reshape(n, *self.shape).float()
