"""``sp.tl.to_pyg``: the model's input (and spacon's embeddings) as a PyTorch Geometric graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from anndata import AnnData

from .._constants import DEFAULT_KEY, Key
from .._core import CSR
from .._utils import check_adata
from ._inputs import feature_source, model_inputs

if TYPE_CHECKING:
    from torch_geometric.data import Data


def _edges(graph: CSR) -> tuple[torch.Tensor, torch.Tensor]:
    """PyG ``edge_index`` (row 0: source, row 1: target) and ``edge_weight`` of a CSR graph
    whose row ``i`` lists the nodes ``i`` aggregates from."""
    targets = np.repeat(np.arange(graph.n_rows, dtype=np.int64), graph.degrees())
    edge_index = torch.from_numpy(np.stack([graph.indices.astype(np.int64), targets]))
    weights = graph.weights if graph.weights is not None else np.ones(graph.nnz, np.float32)
    return edge_index, torch.from_numpy(np.asarray(weights, dtype=np.float32))


def to_pyg(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    connectome_graph_key: str = Key.obsp.connectome_connectivities,
    embedding_key: str | None = DEFAULT_KEY,
) -> Data:
    """Export the cells, both graphs and spacon's embeddings as a :class:`torch_geometric.data.Data`.

    For users who bring their own graph neural network: the graph is exactly what
    :func:`spacon.tl.train` reads (same features, same checks, self-loops removed; add them
    with ``torch_geometric.utils.add_self_loops`` if your layer wants them).

    Parameters
    ----------
    adata
        Annotated data with both graphs in ``adata.obsp``.
    layer, use_rep
        Node features, as in :func:`spacon.tl.train`: ``adata.layers[layer]``,
        ``adata.obsm[use_rep]`` or, by default, ``adata.X`` (densified: prefer
        ``use_rep="X_pca"`` for many genes).
    spatial_graph_key, connectome_graph_key
        ``adata.obsp`` keys of the two graphs.
    embedding_key
        ``key_added`` of :func:`spacon.tl.embed` whose embeddings to attach when present
        (``None``: none).

    Returns
    -------
    A ``Data`` with ``x`` (``n_obs x n_features``, ``float32``), ``edge_index`` and
    ``edge_weight`` (the connectome; messages flow from ``edge_index[0]`` to
    ``edge_index[1]``), ``spatial_edge_index`` and ``spatial_edge_weight``, ``pos`` (the
    coordinates in ``obsm["spatial"]``, when present) and ``z_spatial`` / ``z_connectome``
    (spacon's embeddings, when present).

    Examples
    --------
    >>> data = sp.tl.to_pyg(adata, use_rep="X_pca")
    >>> from torch_geometric.nn import GATConv
    >>> out = GATConv(data.num_features, 16)(data.x, data.edge_index)
    """
    from torch_geometric.data import Data

    check_adata(adata, allow_view=True)
    inputs = model_inputs(
        adata,
        feature_source(layer, use_rep),
        spatial_graph_key=spatial_graph_key,
        connectome_graph_key=connectome_graph_key,
        weighted_attention=False,
    )
    edge_index, edge_weight = _edges(inputs.connectome)
    spatial_index, spatial_weight = _edges(inputs.spatial)
    data = Data(
        x=torch.from_numpy(inputs.features.rows(slice(None))),
        edge_index=edge_index,
        edge_weight=edge_weight,
        spatial_edge_index=spatial_index,
        spatial_edge_weight=spatial_weight,
        num_nodes=adata.n_obs,
    )
    if Key.obsm.spatial in adata.obsm:
        data.pos = torch.as_tensor(np.asarray(adata.obsm[Key.obsm.spatial], dtype=np.float32))
    if embedding_key is not None:
        keys = Key.embedding(embedding_key)
        for name, key in (("z_spatial", keys.spatial), ("z_connectome", keys.connectome)):
            if key in adata.obsm:
                data[name] = torch.as_tensor(np.asarray(adata.obsm[key], dtype=np.float32))
    return data
