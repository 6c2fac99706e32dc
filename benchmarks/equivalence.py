"""Same weights, same outputs: spacon's network against the published SpaCon's, numerically.

Usage::

    python benchmarks/equivalence.py

Builds the reference's ``SpaCon`` (PyPI ``spacon==0.1.3``, installed by ``_reference.setup``
into ``benchmarks/out/reference``; its ``model.py`` is loaded under another module name so
both packages live in one process) and spacon's ``SpaconNet`` of the same widths, copies
every weight of the first into the second, and runs both on the same features and random
graphs (self-loops included, as both trainings use them). Prints, for each fusion and for
eval and train mode (attention dropout off so both are deterministic), the largest
absolute difference of both bottlenecks and the reconstruction, both losses, and the
relative difference of a few gradients. Differences at float32 rounding (~1e-6) mean the
two networks compute the same function, so a difference in domain quality comes from the
training protocol, the sampling or the seed, not from the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import numpy as np
import scipy.sparse as sp_sparse
import torch
import torch.nn.functional as F

from spacon._core import CSR, GraphTensors, SpaconNet

import _reference


def _load_reference_model():
    paths = _reference.setup()
    sys.path.insert(0, str(paths["shim"]))  # torch_sparse stand-in
    spec = importlib.util.spec_from_file_location(
        "spacon_reference_model", paths["site"] / "spacon" / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # PyG's MessagePassing inspects its module's globals
    spec.loader.exec_module(module)
    return module


def _graph(n: int, density: float, rng: np.random.Generator) -> sp_sparse.csr_matrix:
    """Random 0/1 graph with self-loops; row i lists what cell i receives from."""
    adj = sp_sparse.random(n, n, density=density, random_state=rng, format="csr")
    adj = (adj + sp_sparse.eye(n)).tocsr()
    adj.data[:] = 1.0
    return adj.astype(np.float32)


def _edge_index(adj: sp_sparse.csr_matrix) -> torch.Tensor:
    """PyG's convention: messages flow from ``edge_index[0]`` to ``edge_index[1]``."""
    coo = adj.tocoo()
    return torch.tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)


def _copy_weights(ref_net, net: SpaconNet) -> None:
    def attention(dst, conv) -> None:
        dst.weight.data.copy_(conv.lin_src.data)
        dst.att_src.data.copy_(conv.att_src.data.reshape(-1))
        dst.att_dst.data.copy_(conv.att_dst.data.reshape(-1))

    pairs = [(net.encoder_connectome, ref_net.encoder_con, ("conv1", "conv2", "conv3"),
              ("bn1", "bn2", "bn3")),
             (net.encoder_spatial, ref_net.encoder_spa, ("conv1", "conv2", "conv3"),
              ("bn1", "bn2", "bn3")),
             (net.decoder, ref_net.decoder, ("conv3_", "conv2_", "conv1_"),
              ("bn3_", "bn2_", "bn1_"))]
    for stack, ref_stack, convs, norms in pairs:
        for i, (conv, norm) in enumerate(zip(convs, norms)):
            attention(stack.layers[i], getattr(ref_stack, conv))
            stack.norms[i].load_state_dict(getattr(ref_stack, norm).module.state_dict())


def _no_dropout(*nets) -> None:
    for net in nets:
        for module in net.modules():
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=500)
    parser.add_argument("--n-genes", type=int, default=33)
    parser.add_argument("--hidden", type=int, nargs=3, default=[256, 128, 32])
    args = parser.parse_args(argv)
    reference = _load_reference_model()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n = args.n_cells
    x = torch.tensor(rng.random((n, args.n_genes)), dtype=torch.float32)
    connectome, spatial = _graph(n, 0.05, rng), _graph(n, 0.02, rng)
    ref_graphs = (_edge_index(connectome), _edge_index(spatial))
    graphs = tuple(GraphTensors.from_csr(CSR.from_scipy(a)) for a in (connectome, spatial))
    dims = [args.n_genes, *args.hidden]
    print(f"{n} cells, {args.n_genes} genes, widths {dims}, "
          f"{connectome.nnz} connectome and {spatial.nnz} spatial edges (with self-loops)")
    worst = 0.0
    for fusion in ("concat", "add"):
        ref_net = reference.SpaCon(dims, fusion_method=fusion)
        net = SpaconNet(dims, fusion=fusion)
        _copy_weights(ref_net, net)
        _no_dropout(ref_net, net)
        for mode in ("eval", "train"):
            ref_net.train(mode == "train")
            net.train(mode == "train")
            ref_out = ref_net(x, *ref_graphs)
            out = net(x, *graphs)
            diffs = [float((a - b).detach().abs().max()) for a, b in zip(ref_out, out)]
            worst = max(worst, *diffs)
            ref_loss = F.mse_loss(ref_out[2], x)
            loss = net(x, *graphs, loss=True)  # the fused loss in train mode
            line = (f"{fusion:<6} {mode:<5} max |diff|: connectome {diffs[0]:.1e}, spatial "
                    f"{diffs[1]:.1e}, reconstruction {diffs[2]:.1e}; loss "
                    f"{ref_loss.item():.6f} vs {loss.item():.6f}")
            if mode == "train":
                ref_net.zero_grad()
                net.zero_grad()
                ref_loss.backward()
                loss.backward()
                checks = [
                    (ref_net.encoder_spa.conv1.lin_src, net.encoder_spatial.layers[0].weight),
                    (ref_net.encoder_con.conv2.att_dst, net.encoder_connectome.layers[1].att_dst),
                    (ref_net.decoder.conv1_.att_src, net.decoder.layers[-1].att_src),
                ]
                rel = [float((a.grad.reshape(b.grad.shape) - b.grad).norm() / a.grad.norm())
                       for a, b in checks]
                line += f"; gradient rel. diff {max(rel):.1e}"
            print(line)
    print(f"largest difference of any output: {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
