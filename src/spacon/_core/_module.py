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

    def _encode(self, x: torch.Tensor, connectome: GraphTensors, spatial: GraphTensors):
        """Both bottlenecks and the decoder skips."""
        h_con = self.encoder_connectome(x, connectome)
        h_spa = self.encoder_spatial(x, spatial)
        # skip for decoder depth i: both encoders' outputs of width dims[L - 1 - i]
        skips = [a + b for a, b in zip(h_con[-2::-1], h_spa[-2::-1])]
        return h_con[-1], h_spa[-1], skips

    def forward(
        self,
        x: torch.Tensor,
        connectome: GraphTensors,
        spatial: GraphTensors,
        *,
        loss: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | torch.Tensor:
        """Return the connectome bottleneck, the spatial bottleneck and the reconstruction;
        with ``loss=True``, the training objective :meth:`loss` instead.

        The training loop always calls ``module(x, connectome, spatial, loss=True)``, so that
        a wrapper such as DistributedDataParallel sees the forward call, and every path
        (full-batch, minibatch, distributed) optimises the same loss.
        """
        if loss:
            return self.loss(x, connectome, spatial)
        z_con, z_spa, skips = self._encode(x, connectome, spatial)
        x_hat = self.decode(self.fuse(z_con, z_spa), skips, connectome)
        return z_con, z_spa, x_hat

    def loss(
        self, x: torch.Tensor, connectome: GraphTensors, spatial: GraphTensors
    ) -> torch.Tensor:
        """The training objective, the one place it is written: the mean squared error of the
        reconstruction, ``F.mse_loss(self(x, connectome, spatial)[2], x)``, computed more
        cheaply in training mode.

        The decoder's last layer widens back to the input width (aggregate ``u = A h``,
        then ``u W``, then BatchNorm). With batch statistics the loss depends on ``u W``
        only through ``u``'s mean and covariance and through ``x W^T``-sized products
        (:func:`_linear_batchnorm_mse`), so nothing ``n_nodes x n_features`` is built
        besides ``x`` itself: about a third less work per node for 500 features.
        Elsewhere (eval mode, a narrowing last layer, a BatchNorm subclass such as the
        synchronised one) the reconstruction is computed as usual.
        """
        z_con, z_spa, skips = self._encode(x, connectome, spatial)
        last = len(self.decoder) - 1
        layer, norm = self.decoder.layers[last], self.decoder.norms[last]
        fused = (
            self.training
            and norm.training
            and type(norm) is nn.BatchNorm1d  # noqa: E721 (exact class: not synced BN)
            and not layer.project_first
            and x.shape[0] > 1
            and not x.requires_grad
        )
        if not fused:
            return F.mse_loss(self.decode(self.fuse(z_con, z_spa), skips, connectome), x)
        h = self.fuse(z_con, z_spa)
        for i in range(last):
            if i > 0:
                h = h + skips[i - 1]
            h = self.decoder.finish(i, self.decoder.layers[i](h, connectome))
        if last > 0:
            h = h + skips[last - 1]
        u = layer(h, connectome, project=False)
        return _linear_batchnorm_mse(u, layer.weight, norm, x)


def _linear_batchnorm_mse(
    u: torch.Tensor, weight: torch.Tensor, norm: nn.BatchNorm1d, target: torch.Tensor
) -> torch.Tensor:
    """``F.mse_loss(norm(u @ weight), target)`` for a BatchNorm in training mode.

    With ``c = u - mean(u)``, ``C = c^T c / n`` and ``M = W diag(s)``, where the batch
    variance of column ``g`` of ``u W`` is ``v_g = (W^T C W)_gg`` and ``s = gamma /
    sqrt(v + eps)``, the normalised output is ``c M + beta``, hence::

        n G * loss = n sum(s^2 v) + n |beta|^2 - 2 <c, target M^T> - 2 beta . sum(target)
                     + |target|^2

    (the cross term ``beta^T M^T sum(c)`` vanishes). Costs ``O(n d (d + G))`` with
    ``d = u.shape[1]`` and no ``n x G`` temporary; the running statistics are updated as
    :class:`torch.nn.BatchNorm1d` does.
    """
    n, n_features = target.shape
    mean = u.mean(0)
    centred = u - mean
    cov = (centred.T @ centred) / n
    var = ((cov @ weight) * weight).sum(0).clamp_min(0.0)
    scale = torch.rsqrt(var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    total = n * (scale.square() * var).sum()
    total = total - 2.0 * (centred * (target @ (weight * scale).T)).sum()
    if norm.affine:
        total = total + n * norm.bias.square().sum() - 2.0 * (norm.bias * target.sum(0)).sum()
    total = total + target.square().sum()
    if norm.track_running_stats:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            m = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            norm.running_mean.mul_(1 - m).add_(mean @ weight, alpha=m)
            norm.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
    return total / (n * n_features)
