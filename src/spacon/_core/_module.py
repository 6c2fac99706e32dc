"""The dual graph-attention autoencoder (torch only; knows nothing of AnnData).

Two encoders of identical shape, one on the connectome graph and one on the spatial graph,
each a stack of attention layers ``d0 -> d1 -> ... -> dL`` followed by BatchNorm, with ELU
after every layer but the last. Their bottlenecks are fused (``concat`` or ``add``) and
decoded on the connectome graph back to ``d0``; the decoder's input at every intermediate
depth receives the sum of both encoders' outputs of that depth (U-Net-like skips). The
decoder's last layer is linear (BatchNorm, no ELU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._graph import GraphTensors
from ._layers import GraphAttention

FUSIONS = ("concat", "add")


class Encoder(nn.Module):
    """Stack of attention layers with BatchNorm, ELU after all but the last."""

    def __init__(self, dims: Sequence[int], *, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GraphAttention(a, b, dropout=dropout) for a, b in zip(dims[:-1], dims[1:])
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:])

    def __len__(self) -> int:
        return len(self.layers)

    def finish(self, index: int, out: torch.Tensor) -> torch.Tensor:
        """BatchNorm (and ELU except after the last layer) applied to layer ``index``'s output."""
        out = self.norms[index](out)
        return F.elu(out) if index < len(self.layers) - 1 else out

    def forward(self, x: torch.Tensor, graph: GraphTensors) -> list[torch.Tensor]:
        outputs = []
        for i, layer in enumerate(self.layers):
            x = self.finish(i, layer(x, graph))
            outputs.append(x)
        return outputs


class SpaconNet(nn.Module):
    """Dual-encoder graph-attention autoencoder.

    Parameters
    ----------
    hidden_dims
        ``[d0, d1, ..., dL]``: input width then the width after every encoder layer.
    fusion
        ``"concat"`` (bottleneck width ``2 dL``) or ``"add"`` (L2-normalise each, then sum).
    dropout
        Attention dropout of every layer.
    """

    def __init__(
        self, hidden_dims: Sequence[int], *, fusion: str = "concat", dropout: float = 0.1
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
        dims = [int(d) for d in hidden_dims]
        self.hidden_dims = dims
        self.fusion = fusion
        self.encoder_connectome = Encoder(dims, dropout=dropout)
        self.encoder_spatial = Encoder(dims, dropout=dropout)
        bottleneck = 2 * dims[-1] if fusion == "concat" else dims[-1]
        self.decoder = Encoder([bottleneck, *dims[-2::-1]], dropout=dropout)

    def fuse(self, z_con: torch.Tensor, z_spa: torch.Tensor) -> torch.Tensor:
        if self.fusion == "concat":
            return torch.cat([z_con, z_spa], dim=1)
        return F.normalize(z_con, dim=1) + F.normalize(z_spa, dim=1)

    def decode(
        self, z: torch.Tensor, skips: Sequence[torch.Tensor], graph: GraphTensors
    ) -> torch.Tensor:
        """Decode ``z``; ``skips[i]`` is added to the input of decoder layer ``i + 1``."""
        h = z
        for i, layer in enumerate(self.decoder.layers):
            if i > 0:
                h = h + skips[i - 1]
            h = self.decoder.finish(i, layer(h, graph))
        return h

    def forward(
        self, x: torch.Tensor, connectome: GraphTensors, spatial: GraphTensors
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the connectome bottleneck, the spatial bottleneck and the reconstruction."""
        h_con = self.encoder_connectome(x, connectome)
        h_spa = self.encoder_spatial(x, spatial)
        # skip for decoder depth i: both encoders' outputs of width dims[L - 1 - i]
        skips = [a + b for a, b in zip(h_con[-2::-1], h_spa[-2::-1])]
        x_hat = self.decode(self.fuse(h_con[-1], h_spa[-1]), skips, connectome)
        return h_con[-1], h_spa[-1], x_hat
