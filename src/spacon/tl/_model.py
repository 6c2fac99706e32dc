"""The user-facing model object: the trained network, its configuration, and its inference.

:class:`SpaconModel` owns everything that needs the network: reading its input from an
AnnData (through :mod:`spacon.tl._inputs`), computing the latent representation
(:meth:`SpaconModel.get_latent_representation`), saving and loading. :func:`spacon.tl.embed`
only writes what the model computes. There is no hidden registry: a model is the object
:func:`spacon.tl.train` returns, or a folder written by :meth:`SpaconModel.save`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._core import DistContext, SpaconNet, infer, init_distributed
from .._io import atomic_write
from .._utils import check_memory_budget
from ._inputs import ModelInputs, describe_source, get_features, model_inputs

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.pt"
_FORMAT_VERSION = 1


class Latent(NamedTuple):
    """What :meth:`SpaconModel.get_latent_representation` returns (numpy ``float32``)."""

    #: spatial-encoder bottleneck, ``n_obs x d``
    spatial: np.ndarray
    #: connectome-encoder bottleneck, ``n_obs x d``
    connectome: np.ndarray
    #: decoder output, ``n_obs x n_features``, when asked for
    reconstruction: np.ndarray | None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else must name a usable device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'cpu'.")
    return dev


# --------------------------------------------------------------------------------- model


class SpaconModel:
    """A trained spacon network with the configuration needed to use it again.

    Returned by :func:`spacon.tl.train`. It computes the latent representation of any
    AnnData with the same features and graphs (:meth:`get_latent_representation`, which
    :func:`spacon.tl.embed` writes to ``adata``); :meth:`save` it to a folder and
    :meth:`load` it (or pass the folder to :func:`spacon.tl.embed`) in another session.

    Attributes
    ----------
    module
        The torch network (:class:`torch.nn.Module`).
    config
        JSON-serialisable configuration: ``hidden_dims``, ``fusion``, ``dropout``,
        ``use_weights``, ``features`` (source of the input), ``feature_names``,
        ``n_features``, graph keys, ``train_params`` and the ``loss`` history.

    Examples
    --------
    >>> model = sp.tl.train(adata)
    >>> model.save("spacon_model")
    >>> sp.tl.embed(other, "spacon_model")  # or SpaconModel.load("spacon_model", other)
    """

    def __init__(self, module: SpaconNet, config: dict[str, Any]) -> None:
        self.module = module
        self.config = dict(config)
        self.config.setdefault("model_id", uuid.uuid4().hex)

    # -- small accessors
    @property
    def model_id(self) -> str:
        return self.config["model_id"]

    @property
    def hidden_dims(self) -> list[int]:
        return list(self.config["hidden_dims"])

    @property
    def history(self) -> np.ndarray:
        """Training loss per epoch."""
        return np.asarray(self.config.get("loss", []), dtype=np.float64)

    def __repr__(self) -> str:
        src = describe_source(self.config["features"])
        return (
            f"SpaconModel(hidden_dims={self.hidden_dims}, fusion={self.config['fusion']!r}, "
            f"features={src}, epochs_trained={len(self.history)})"
        )

    # -- input
    def inputs(self, adata: AnnData) -> ModelInputs:
        """The model's input from ``adata`` (features and both graphs), checked against the
        model: same number, names and order of features, usable graph weights."""
        cfg = self.config
        inputs = model_inputs(
            adata,
            cfg["features"],
            spatial_graph_key=cfg["spatial_graph_key"],
            connectome_graph_key=cfg["connectome_graph_key"],
            weighted_attention=bool(cfg["use_weights"]),
        )
        self._check_features(inputs.n_features, inputs.feature_names, inputs.where)
        return inputs

    def check_adata(self, adata: AnnData) -> None:
        """Fail with the fix named unless ``adata`` holds the features the model was trained on."""
        data, names = get_features(adata, self.config["features"])
        self._check_features(int(data.shape[1]), names, describe_source(self.config["features"]))

    def _check_features(self, n_features: int, names: list[str] | None, where: str) -> None:
        expected = int(self.config["n_features"])
        if n_features != expected:
            raise ValueError(
                f"The model was trained on {expected} features but {where} has "
                f"{n_features}. Use the AnnData the model was trained on (same genes, "
                "same order) or train a new model with `sp.tl.train(adata)`."
            )
        saved = self.config.get("feature_names")
        if saved is not None and names is not None and list(saved) != list(names):
            diff = [i for i, (a, b) in enumerate(zip(saved, names)) if a != b]
            i = diff[0]
            raise ValueError(
                f"{where} has different features than the model was trained on "
                f"({len(diff)} of {expected} differ; first at position {i}: "
                f"{names[i]!r} instead of {saved[i]!r}). Subset/reorder the genes to match, "
                "e.g. `adata = adata[:, model.config['feature_names']].copy()`."
            )

    # -- inference
    def get_latent_representation(
        self,
        adata: AnnData,
        *,
        batch_size: int = 8192,
        device: str | torch.device = "auto",
        reconstruction: bool = False,
        distributed: bool | DistContext = False,
        progress: bool = True,
    ) -> Latent:
        """Embed every cell of ``adata`` with both encoders, using all neighbours of both graphs.

        Inference runs layer by layer over all cells (eval mode: no dropout, BatchNorm
        running statistics), ``batch_size`` cells at a time, each encoder on its own graph,
        so memory stays bounded by the layer widths and one chunk's edges. Nothing is
        written to ``adata``; :func:`spacon.tl.embed` stores the result.

        Parameters
        ----------
        adata
            The annotated data (same features and graph keys as for training); may be
            backed (``anndata.read_h5ad(path, backed="r")``): ``X`` is then read from disk
            ``batch_size`` cells at a time.
        batch_size
            Cells per inference chunk.
        device
            ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        reconstruction
            Also run the decoder (a dense ``n_obs x n_features`` array; fails fast, before
            computing anything, when it would not fit the memory budget).
        distributed
            Share the work between the processes of a ``torchrun``/``srun`` launch (see
            :func:`spacon.tl.embed`).
        progress
            Show a progress bar (also needs scanpy's verbosity at ``info`` or above).

        Returns
        -------
        The spatial and connectome bottlenecks and, when asked, the reconstruction.

        Examples
        --------
        >>> latent = model.get_latent_representation(adata)
        >>> latent.spatial.shape
        """
        return self.latent_of(
            self.inputs(adata),
            batch_size=batch_size,
            device=device,
            reconstruction=reconstruction,
            distributed=distributed,
            progress=progress,
        )

    def latent_of(
        self,
        inputs: ModelInputs,
        *,
        batch_size: int = 8192,
        device: str | torch.device = "auto",
        reconstruction: bool = False,
        distributed: bool | DistContext = False,
        progress: bool = True,
    ) -> Latent:
        """:meth:`get_latent_representation` of inputs already read (by :func:`spacon.tl.train`)."""
        dev = resolve_device(device)
        n_obs, n_features = inputs.n_obs, inputs.n_features
        widths = sum(int(d) for d in self.hidden_dims[1:])
        per_cell = 2 * widths + (widths + 2 * n_features if reconstruction else 0)
        check_memory_budget(
            4 * n_obs * per_cell,
            f"Embedding {n_obs} cells"
            + (f" with the {n_features}-feature reconstruction" if reconstruction else ""),
            "Pass `reconstruction=False` (the embeddings alone need far less)."
            if reconstruction
            else "Embed a subset of the cells (`adata[mask].copy()`) or use a narrower model.",
        )
        ctx = None
        if isinstance(distributed, DistContext):
            ctx = distributed
        elif distributed:
            ctx = init_distributed(dev)
        if ctx is not None:
            dev = ctx.device
            if n_obs < ctx.world_size:
                raise ValueError(
                    f"{n_obs} cells are too few for {ctx.world_size} processes; run fewer."
                )
        start = logg.info(f"embedding {n_obs} cells with spacon (device {dev})")
        home = next(self.module.parameters()).device
        try:
            z_con, z_spa, x_hat = infer(
                self.module,
                inputs.features,
                inputs.connectome,
                inputs.spatial,
                chunk_size=batch_size,
                device=dev,
                use_weights=bool(self.config["use_weights"]),
                reconstruction=reconstruction,
                progress=progress and sc.settings.verbosity >= 2 and (ctx is None or ctx.is_main),
                dist=ctx,
            )
        finally:
            self.module.to(home)
        if not (np.isfinite(z_con).all() and np.isfinite(z_spa).all()):
            raise ValueError(
                "The embeddings contain NaN or infinite values: the model's weights or the "
                "input are not finite (training diverged?). Retrain with "
                "`sp.tl.train(adata, lr=...)` using a lower learning rate, and check the "
                "features for extreme values."
            )
        logg.info("    finished", time=start)
        return Latent(
            spatial=np.ascontiguousarray(z_spa, dtype=np.float32),
            connectome=np.ascontiguousarray(z_con, dtype=np.float32),
            reconstruction=x_hat,
        )

    # -- persistence
    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the weights and a JSON configuration to the folder ``dir_path``.

        Both files are written to temporary names first and then moved into place.

        Parameters
        ----------
        dir_path
            Folder to write (created when missing).
        overwrite
            Replace a model already saved there.

        Examples
        --------
        >>> model.save("spacon_model", overwrite=True)
        """
        path = Path(dir_path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{str(path)!r} exists and is not a folder; pass a folder path.")
        targets = [path / _CONFIG_FILE, path / _WEIGHTS_FILE]
        if not overwrite and any(t.exists() for t in targets):
            raise FileExistsError(
                f"A model is already saved in {str(path)!r}; pass `overwrite=True` to replace it."
            )
        path.mkdir(parents=True, exist_ok=True)
        config = {"format_version": _FORMAT_VERSION, **self.config}
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        text = json.dumps(config, indent=1, default=_json_default)
        atomic_write(targets[1], lambda tmp: torch.save(state, tmp))
        atomic_write(targets[0], lambda tmp: tmp.write_text(text))

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> SpaconModel:
        """Rebuild a model written by :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder given to :meth:`save`.
        adata
            When given, check that its features match the model's (clear error if not).
        device
            Where to put the weights.

        Examples
        --------
        >>> model = sp.tl.SpaconModel.load("spacon_model", adata)
        """
        path = Path(dir_path)
        config_file, weights_file = path / _CONFIG_FILE, path / _WEIGHTS_FILE
        if not config_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(
                f"No saved spacon model in {str(path)!r} (expected {_CONFIG_FILE} and "
                f"{_WEIGHTS_FILE}); save one with `model.save({str(path)!r})`."
            )
        config = json.loads(config_file.read_text())
        version = config.pop("format_version", None)
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} holds a model in format {version}, this spacon reads "
                f"format {_FORMAT_VERSION}; retrain it with `sp.tl.train`."
            )
        net = SpaconNet(config["hidden_dims"], fusion=config["fusion"], dropout=config["dropout"])
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.to(resolve_device(device))
        net.eval()
        model = cls(net, config)
        if adata is not None:
            model.check_adata(adata)
        return model


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in the model configuration")
