"""The user-facing model object: the trained network plus what is needed to use it again."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
import torch
from anndata import AnnData

from .._core._module import SpaconNet

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.pt"
_FORMAT_VERSION = 1
_REGISTRY_SIZE = 8
_REGISTRY: OrderedDict[str, SpaconModel] = OrderedDict()


def register(model: SpaconModel) -> None:
    """Remember ``model`` (the last few only) so that :func:`spacon.tl.embed` finds it by id."""
    _REGISTRY[model.model_id] = model
    _REGISTRY.move_to_end(model.model_id)
    while len(_REGISTRY) > _REGISTRY_SIZE:
        _REGISTRY.popitem(last=False)


def lookup(model_id: str) -> SpaconModel | None:
    return _REGISTRY.get(model_id)


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


# ------------------------------------------------------------------------------ features


def feature_source(layer: str | None, use_rep: str | None) -> dict[str, str]:
    if layer is not None and use_rep is not None:
        raise ValueError("Pass at most one of `layer` and `use_rep`.")
    if layer is not None:
        return {"source": "layer", "key": str(layer)}
    if use_rep is not None:
        return {"source": "obsm", "key": str(use_rep)}
    return {"source": "X"}


def describe_source(source: dict[str, str]) -> str:
    if source["source"] == "layer":
        return f"adata.layers[{source['key']!r}]"
    if source["source"] == "obsm":
        return f"adata.obsm[{source['key']!r}]"
    return "adata.X"


def get_features(
    adata: AnnData, source: dict[str, str]
) -> tuple[np.ndarray | sp_sparse.spmatrix, list[str] | None]:
    """The feature matrix named by ``source`` (validated: numeric, finite) and its names."""
    where = describe_source(source)
    if source["source"] == "layer":
        if source["key"] not in adata.layers:
            raise KeyError(
                f"Layer {source['key']!r} not found in `adata.layers` "
                f"(available: {list(adata.layers.keys())}). Pass an existing `layer=`, "
                "or leave it out to use `adata.X`."
            )
        data, names = adata.layers[source["key"]], list(map(str, adata.var_names))
    elif source["source"] == "obsm":
        if source["key"] not in adata.obsm:
            raise KeyError(
                f"{where} not found (available: {list(adata.obsm.keys())}). "
                f"Compute it first, e.g. `sc.pp.pca(adata)` for 'X_pca', or pass another "
                "`use_rep=`."
            )
        data = adata.obsm[source["key"]]
        names = None
        if isinstance(data, pd.DataFrame):
            names = list(map(str, data.columns))
            data = data.to_numpy()
    else:
        if adata.X is None:
            raise ValueError("`adata.X` is empty; pass `layer=` or `use_rep=`.")
        data, names = adata.X, list(map(str, adata.var_names))
    if not sp_sparse.issparse(data):
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"{where} must be 2-dimensional, got shape {data.shape}.")
    if data.shape[1] == 0:
        raise ValueError(f"{where} has no features (0 columns).")
    values = data.data if sp_sparse.issparse(data) else data
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool) or np.iscomplexobj(
        values
    ):
        raise TypeError(f"{where} must hold real numbers, got dtype {values.dtype}.")
    if values.ndim == 2:
        step = max(1, 2**24 // max(1, values.shape[1]))
        finite = all(np.isfinite(values[i : i + step]).all() for i in range(0, len(values), step))
    else:
        finite = bool(np.isfinite(values).all())
    if not finite:
        raise ValueError(
            f"{where} contains NaN or infinite values; fix or drop them before training "
            "(e.g. `sc.pp.log1p` on raw counts, then check for NaN)."
        )
    return data, names


# --------------------------------------------------------------------------------- model


class SpaconModel:
    """A trained spacon network with the configuration needed to use it again.

    Returned by :func:`spacon.tl.train`; pass it to :func:`spacon.tl.embed`, or
    :meth:`save` it and :meth:`load` it in another session.

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
    >>> model = sp.tl.SpaconModel.load("spacon_model", adata)
    >>> sp.tl.embed(adata, model=model)
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

    # -- checks
    def check_adata(self, adata: AnnData) -> tuple[np.ndarray | sp_sparse.spmatrix, list | None]:
        """Return the model's input features from ``adata``, or fail if they don't match."""
        data, names = get_features(adata, self.config["features"])
        where = describe_source(self.config["features"])
        expected = int(self.config["n_features"])
        if data.shape[1] != expected:
            raise ValueError(
                f"The model was trained on {expected} features but {where} has "
                f"{data.shape[1]}. Use the AnnData the model was trained on (same genes, "
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
        return data, names

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
        _atomic_write(targets[1], lambda f: torch.save(state, f))
        _atomic_write(
            targets[0],
            lambda f: f.write(json.dumps(config, indent=1, default=_json_default).encode()),
        )

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
        register(model)
        return model

    def embed(self, adata: AnnData, **kwargs: Any) -> AnnData | None:
        """Shortcut for ``sp.tl.embed(adata, model=self, **kwargs)``."""
        from ._embed import embed

        return embed(adata, model=self, **kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in the model configuration")


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
