"""Tools: train the model, embed cells, cluster domains, export graphs."""

from ._cluster import cluster
from ._composition import domain_composition
from ._embed import embed
from ._model import SpaconModel
from ._predict import predict_connectivity
from ._pyg import to_pyg
from ._refine import refine
from ._spacon import spacon
from ._sweep import alpha_sweep
from ._train import train

__all__ = [
    "SpaconModel",
    "alpha_sweep",
    "cluster",
    "domain_composition",
    "embed",
    "predict_connectivity",
    "refine",
    "spacon",
    "to_pyg",
    "train",
]
