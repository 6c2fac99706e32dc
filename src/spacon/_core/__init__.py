"""Private torch core: attention layers, the dual autoencoder, neighbour sampling, training.

Nothing in here knows about :class:`~anndata.AnnData`; :mod:`spacon.tl` moves data in and out.
The names below are what :mod:`spacon.tl` and ``benchmarks/`` may use; everything else in the
submodules is internal to the core.
"""

from ._checkpoint import Checkpointer
from ._distributed import DistContext, launch_env, synced_batchnorm
from ._distributed import init as init_distributed
from ._graph import CSR, GraphTensors, add_self_loops, remove_self_loops
from ._module import FUSIONS, SpaconNet
from ._sampler import NeighborSampler
from ._trainer import BatchTiming, FeatureMatrix, TrainConfig, TrainResult, infer, train_network

__all__ = [
    "BatchTiming",
    "CSR",
    "FUSIONS",
    "Checkpointer",
    "DistContext",
    "FeatureMatrix",
    "GraphTensors",
    "NeighborSampler",
    "SpaconNet",
    "TrainConfig",
    "TrainResult",
    "add_self_loops",
    "infer",
    "init_distributed",
    "launch_env",
    "remove_self_loops",
    "synced_batchnorm",
    "train_network",
]
