"""The ``spacon`` command line: ``spacon demo``, ``spacon run``.

User errors (a missing file, a matrix of the wrong shape, a bad option) print one line to
stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import warnings
from pathlib import Path

USER_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError)


#: Python argument names that the command line spells differently from ``--name-with-dashes``.
_FLAG_FOR = {"n_epochs": "--epochs", "random_state": "--seed", "fc": "--connectivity"}


def _error_message(error: BaseException, parser: argparse.ArgumentParser | None = None) -> str:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return message if parser is None else _name_flags(message, parser)


def _name_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """Say ``--regions-key`` where a message of the Python API says ``regions_key=``.

    A switch reads as itself: ``refine=True`` is ``--refine``; ``refine=False`` is "no
    ``--refine``" ("pass ``refine=False``" is "leave out ``--refine``"), or ``--no-x`` for
    an option defined with both forms. An option's ``None`` is the flag left out.
    """
    flags = dict(_FLAG_FOR)
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                flags.setdefault(action.dest, option)
    for action in parser._actions:
        if action.dest in flags and _is_switch(action):
            message = _name_switch(message, action.dest, flags[action.dest], action)
    for name, flag in flags.items():
        # an option's default of None is the flag left out
        message = re.sub(rf"\bpass `{name}=None`", f"leave out `{flag}`", message)
        message = re.sub(rf"`{name}=None`", f"no `{flag}`", message)
        # `name=value` -> `--flag value`; `name` -> `--flag`; a bare name= -> --flag
        message = re.sub(
            rf"`{name}=([^`]*)`",
            lambda m, flag=flag: f"`{flag} {m[1]}`" if m[1] else f"`{flag}`",
            message,
        )
        message = re.sub(rf"`{name}`", f"`{flag}`", message)
        message = re.sub(rf"(?<![\w.\-]){name}=", f"{flag} ", message)
    return message


def _is_switch(action: argparse.Action) -> bool:
    """Whether ``action`` is an option without a value (``--refine``, ``--x/--no-x``)."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return True
    return action.nargs == 0 and isinstance(action.const, bool)  # store_true, store_false


def _name_switch(message: str, name: str, flag: str, action: argparse.Action) -> str:
    """Rewrite ``name=True`` / ``name=False`` of ``message`` as the switch ``flag``."""
    if isinstance(action, argparse.BooleanOptionalAction):
        negative = next(o for o in action.option_strings if o.startswith("--no-"))
        spelled = {"True": (f"`{flag}`", flag), "False": (f"`{negative}`", negative)}
    else:  # store_true (const True) or store_false (const False): one form only
        given, omitted = str(action.const), str(not action.const)
        spelled = {given: (f"`{flag}`", flag), omitted: (f"no `{flag}`", f"no {flag}")}
        message = re.sub(rf"\bpass `{name}={omitted}`", f"leave out `{flag}`", message)
    for value, (quoted, bare) in spelled.items():
        message = re.sub(rf"`{name}={value}`", quoted, message)
        message = re.sub(rf"(?<![\w.\-]){name}={value}\b", bare, message)
    return message


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` (its options name the flags in errors)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except for flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == "==SUPPRESS==":
            return action.help or ""
        return super()._get_help_string(action)


def _top_k(text: str) -> int | float:
    """Parse ``--top-k`` with the meaning of ``top_k`` in :func:`spacon.pp.connectivity`.

    An integer ("100") is a number of edges per cell, a decimal in (0, 1) ("0.1") a fraction
    of the cells; "1.0" and any other decimal >= 1 are refused as ambiguous.
    """
    from .pp._connectivity import top_k_fraction_error

    try:
        count = int(text)
    except ValueError:
        pass
    else:
        if count <= 0:
            raise argparse.ArgumentTypeError(
                f"must be a positive number of edges per cell or a fraction in (0, 1), got {text!r}"
            )
        return count
    try:
        fraction = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be an integer number of edges per cell (e.g. 100) or a fraction in (0, 1) "
            f"(e.g. 0.1), got {text!r}"
        ) from None
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(top_k_fraction_error(fraction, option="--top-k"))
    return fraction


def _n_clusters(text: str) -> int | str:
    """``--n-clusters``: a positive integer or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of domains (e.g. 8) or 'auto', got {text!r}"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'auto'), got {text!r}")
    return count


_TOP_K_HELP = (
    "edges kept per cell: an integer is a count (100), a decimal in (0, 1) a fraction of the "
    "cells (0.1); as `top_k` of spacon.pp.connectivity"
)
_THRESHOLD_HELP = "keep weights above this (default: every positive weight; negatives are dropped)"
_N_STEPS_HELP = "total optimisation steps of training; overrides --epochs (sp.tl.train's n_steps)"
_MAX_TIME_HELP = "training time budget in seconds: stop after the step that exceeds it"


def _add_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-steps", type=int, default=None, help=_N_STEPS_HELP)
    parser.add_argument("--max-time", type=float, default=None, help=_MAX_TIME_HELP)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--alpha", type=float, default=None,
                        help="0 = spatial, 1 = connectome (default: 1 with a connectome, "
                             "0 without)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--n-clusters",
        type=_n_clusters,
        default=None,
        help="number of domains, or 'auto' for the most stable in 3-15 (default: Leiden decides)",
    )
    group.add_argument(
        "--resolution", type=float, default=None, help="Leiden resolution (default: 1.0)"
    )
    parser.add_argument(
        "--method",
        choices=("auto", "leiden", "louvain", "kmeans", "gmm"),
        default="auto",
        help="clustering (auto: Gaussian mixture with --n-clusters, else Leiden)",
    )
    parser.add_argument(
        "--n-starts", type=int, default=None, help="mixture starts in the consensus (default: 8)"
    )
    parser.add_argument("--refine", action="store_true", help="majority-vote label refinement")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: sp.tl.train's)"
    )
    _add_budget(parser)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``spacon`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="spacon",
        description="Spatial domains from spatial transcriptomics + a connectome.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline on the built-in flatmap data",
        formatter_class=_HelpFormatter,
    )
    _add_common(demo)
    demo.add_argument("--n-spots", type=int, default=3372, help="size of the simulated flatmap")

    run = commands.add_parser(
        "run",
        help="run the whole pipeline on your .h5ad",
        description="Build the graphs, train, embed and cluster; write DIR/<data>_spacon.h5ad, "
        "the trained model DIR/model (for `sp.tl.embed(other, 'DIR/model')`) and figures.",
        formatter_class=_HelpFormatter,
    )
    run.add_argument("data", type=Path, help="AnnData file (.h5ad) with coordinates in obsm")
    run.add_argument(
        "--connectivity",
        type=Path,
        default=None,
        help="connectivity matrix (.npy, .npz or .csv); omit for spatial-only mode",
    )
    run.add_argument("--regions-key", default=None, help="obs column of regions (region-level fc)")
    run.add_argument("--spatial-key", default="spatial", help="obsm key of the coordinates")
    run.add_argument("--section-key", default=None, help="obs column of sections (3-D data)")
    run.add_argument(
        "--inter-section-radius",
        type=float,
        default=None,
        help="in-plane distance cut-off of edges between adjacent sections (required with "
        "--section-key when there are several sections; 0 links none)",
    )
    run.add_argument("--decay", type=float, default=0.0, help="distance weighting exp(decay*d)")
    run.add_argument("--threshold", type=float, default=None, help=_THRESHOLD_HELP)
    run.add_argument("--top-k", type=_top_k, default=None, help=_TOP_K_HELP)
    run.add_argument("--use-rep", default=None, help="obsm key of the input features (default: adata.X)")
    run.add_argument(
        "--hidden-dims", type=int, nargs="+", default=None, help="layer widths, e.g. 256 128 32"
    )
    _add_common(run)

    train = commands.add_parser(
        "train",
        help="train on your .h5ad and write the embeddings and the model (runs data-parallel "
        "under torchrun or srun)",
        description="Train spacon, embed every cell and write DIR/<data>_spacon.h5ad and the "
        "model DIR/model. Launched by `torchrun --nproc_per_node=N -m spacon train ...` (or "
        "srun), the processes train data-parallel and rank 0 writes the outputs.",
        formatter_class=_HelpFormatter,
    )
    train.add_argument("data", type=Path, help="AnnData file (.h5ad) with coordinates in obsm")
    train.add_argument(
        "--connectivity",
        type=Path,
        default=None,
        help="connectivity matrix (.npy, .npz or .csv); omit to use the connectome stored in "
        "the file, or for spatial-only mode",
    )
    train.add_argument("--regions-key", default=None, help="obs column of regions")
    train.add_argument("--spatial-key", default="spatial", help="obsm key of the coordinates")
    train.add_argument("--section-key", default=None, help="obs column of sections (3-D data)")
    train.add_argument(
        "--inter-section-radius",
        type=float,
        default=None,
        help="in-plane distance cut-off of edges between adjacent sections (required with "
        "--section-key when there are several sections; 0 links none)",
    )
    train.add_argument("--decay", type=float, default=0.0, help="distance weighting exp(decay*d)")
    train.add_argument("--threshold", type=float, default=None, help=_THRESHOLD_HELP)
    train.add_argument("--top-k", type=_top_k, default=None, help=_TOP_K_HELP)
    train.add_argument("--out", required=True, type=Path, help="output directory")
    train.add_argument("--epochs", type=int, default=None, help="training epochs")
    _add_budget(train)
    train.add_argument("--batch-size", type=int, default=None, help="seed cells per minibatch")
    train.add_argument("--lr", type=float, default=None, help="learning rate")
    train.add_argument(
        "--hidden-dims", type=int, nargs="+", default=None, help="layer widths, e.g. 256 128 32"
    )
    train.add_argument(
        "--num-neighbors", type=int, nargs="+", default=None, help="neighbours sampled per hop"
    )
    train.add_argument("--use-rep", default=None, help="obsm key of the input features")
    train.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--checkpoint-dir", type=Path, default=None, help="resumable checkpoints")
    train.add_argument("--checkpoint-every", type=int, default=1, help="epochs per checkpoint")
    train.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser


def _cluster_options(args: argparse.Namespace) -> dict:
    options: dict = {"alpha": args.alpha, "refine": args.refine, "random_state": args.seed}
    if args.n_clusters is not None:
        options["n_clusters"] = args.n_clusters
    if args.resolution is not None:
        options["resolution"] = args.resolution
    cluster_kwargs: dict = {"method": args.method}
    if args.n_starts is not None:
        cluster_kwargs["n_starts"] = args.n_starts
    options["cluster_kwargs"] = cluster_kwargs
    train_kwargs = {"device": args.device}
    if args.epochs is not None:
        train_kwargs["n_epochs"] = args.epochs
    for name in ("n_steps", "max_time"):
        if getattr(args, name) is not None:
            train_kwargs[name] = getattr(args, name)
    options["train_kwargs"] = train_kwargs
    return options


def _check_out(out: Path) -> None:
    """Fail before any computation when the output folder cannot be created."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; pass a folder (it is created if missing).")


def _write_outputs(adata, out: Path, *, key: str, stem: str, alpha: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import pl
    from ._io import atomic_write_h5ad

    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_h5ad(adata, out / f"{stem}.h5ad")]
    figures = {
        "domains.png": lambda path: pl.domains(
            adata, color=key, title=f"{key}, alpha = {alpha:g}", show=False, save=path
        ),
        "loss.png": lambda path: pl.loss(adata, show=False, save=path),
    }
    for name, draw in figures.items():
        draw(out / name)
        plt.close("all")
        written.append(out / name)
    return written


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from . import datasets, tl
    from ._constants import Key

    _check_out(args.out)
    adata = datasets.flatmap(n_spots=args.n_spots, random_state=args.seed)
    fc = adata.obsp.pop("functional_connectivity")
    if args.alpha is None:
        args.alpha = 1.0  # the demo has a connectome
    options = _cluster_options(args)
    if args.n_clusters is None and args.resolution is None:
        truth = "network" if args.alpha >= 0.5 else "area"
        options["n_clusters"] = adata.obs[truth].nunique()
    tl.spacon(
        adata,
        fc,
        connectivity_kwargs={"decay": 0.006, "threshold": 0.8, "top_k": 0.1},
        **options,
    )
    key = Key.refined(Key.obs.domains) if args.refine else Key.obs.domains
    for truth in ("area", "network"):
        ari = adjusted_rand_score(adata.obs[truth], adata.obs[key])
        print(f"ARI of alpha={args.alpha:g} domains vs simulated {truth}s: {ari:.3f}")
    written = _write_outputs(adata, args.out, key=key, stem="flatmap_spacon", alpha=args.alpha)
    n_domains = int(np.unique(adata.obs[key]).size)
    print(f"{adata.n_obs} spots, {n_domains} domains; wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import anndata as ad

    from . import tl
    from ._constants import Key

    if not args.data.exists():
        raise FileNotFoundError(f"Data file {str(args.data)!r} does not exist.")
    if args.connectivity is not None and not args.connectivity.exists():
        raise FileNotFoundError(f"Connectivity file {str(args.connectivity)!r} does not exist.")
    _check_out(args.out)
    try:
        adata = ad.read_h5ad(args.data)
    except OSError as err:
        raise ValueError(
            f"Cannot read {str(args.data)!r} as an AnnData .h5ad file ({err}). Write it with "
            "`adata.write_h5ad(path)`."
        ) from None
    connectivity_kwargs: dict = {"decay": args.decay}
    if args.threshold is not None:
        connectivity_kwargs["threshold"] = args.threshold
    if args.top_k is not None:
        connectivity_kwargs["top_k"] = args.top_k
    if args.regions_key is not None:
        connectivity_kwargs["regions_key"] = args.regions_key
    options = _cluster_options(args)
    for name in ("use_rep", "hidden_dims"):
        if getattr(args, name) is not None:
            options["train_kwargs"][name] = getattr(args, name)
    model_dir = args.out / "model"
    if args.inter_section_radius is not None:
        options["spatial_graph_kwargs"] = {"inter_section_radius": args.inter_section_radius}
    tl.spacon(
        adata,
        None if args.connectivity is None else str(args.connectivity),
        spatial_key=args.spatial_key,
        section_key=args.section_key,
        connectivity_kwargs=connectivity_kwargs,
        model_dir=model_dir,
        **options,
    )
    key = Key.refined(Key.obs.domains) if args.refine else Key.obs.domains
    alpha = adata.uns[Key.obs.domains]["params"]["alpha"]  # as resolved by the one-liner
    written = _write_outputs(adata, args.out, key=key, stem=args.data.stem + "_spacon", alpha=alpha)
    written.insert(1, model_dir)
    print(f"{adata.n_obs} cells, {adata.obs[key].nunique()} domains; wrote:")
    for path in written:
        print(f"  {path}")
    return 0


class _Terminated(Exception):
    """SIGTERM arrived (torchrun stops the other processes when one fails)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _train(args: argparse.Namespace) -> int:
    import anndata as ad
    import scanpy as sc

    from . import pp, tl
    from ._constants import Key
    from ._core._distributed import launch_env
    from ._io import atomic_write_h5ad
    from .tl._inputs import connectome_key_or_spatial
    from .tl._spacon import _rebuild_reason

    found = launch_env()
    rank, world_size = (0, 1) if found is None else found[:2]
    distributed = world_size > 1
    if rank > 0:
        sc.settings.verbosity = "error"  # one log is enough: rank 0's
    if not args.data.exists():
        raise FileNotFoundError(f"Data file {str(args.data)!r} does not exist.")
    if args.connectivity is not None and not args.connectivity.exists():
        raise FileNotFoundError(f"Connectivity file {str(args.connectivity)!r} does not exist.")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {str(args.out)!r} is a file; pass a folder.")
    try:
        adata = ad.read_h5ad(args.data)
    except OSError as err:
        raise ValueError(f"Cannot read {str(args.data)!r} as an AnnData .h5ad file ({err}).") from None

    # as sp.tl.spacon: a --section-key the stored graph was not built with rebuilds it
    graph_kwargs = None
    if args.inter_section_radius is not None:
        if args.section_key is None:
            raise ValueError("--inter-section-radius needs --section-key (the obs column of sections).")
        graph_kwargs = {"inter_section_radius": args.inter_section_radius}
    rebuild = _rebuild_reason(adata, None, args.section_key)
    if graph_kwargs is not None and rebuild is None:
        record = adata.uns.get(Key.neighbors(Key.obsm.spatial))
        params = record.get("params", {}) if hasattr(record, "get") else {}
        built_with = params.get("inter_section_radius") if hasattr(params, "get") else None
        if Key.obsp.spatial_connectivities in adata.obsp and built_with != args.inter_section_radius:
            rebuild = (
                f"--inter-section-radius {args.inter_section_radius:g} was given and the graph "
                f"was built with {built_with!r}"
            )
    if rebuild is not None and rank == 0:  # every rank rebuilds; one says so
        warnings.warn(
            _name_flags(
                f"Rebuilding the spatial graph stored in {str(args.data)!r} because "
                f"{rebuild}. Leave out --section-key and --inter-section-radius to reuse it.",
                _command_parser(build_parser(), "train"),
            ),
            UserWarning,
            stacklevel=2,
        )
    if rebuild is not None or Key.obsp.spatial_connectivities not in adata.obsp:
        pp.spatial_graph(
            adata,
            spatial_key=args.spatial_key,
            section_key=args.section_key,
            **(graph_kwargs or {}),
        )
    if args.connectivity is not None:
        options: dict = {"decay": args.decay, "spatial_key": args.spatial_key}
        if args.threshold is not None:
            options["threshold"] = args.threshold
        if args.top_k is not None:
            options["top_k"] = args.top_k
        if args.regions_key is not None:
            options["regions_key"] = args.regions_key
        pp.connectivity(adata, str(args.connectivity), **options)
    connectome_key = connectome_key_or_spatial(adata, fc_given=args.connectivity is not None)

    train_kwargs: dict = {
        "device": args.device,
        "random_state": args.seed,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
        "distributed": distributed,
    }
    optional = {
        "n_epochs": args.epochs,
        "n_steps": args.n_steps,
        "max_time": args.max_time,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden_dims": args.hidden_dims,
        "num_neighbors": args.num_neighbors,
        "use_rep": args.use_rep,
    }
    train_kwargs.update({k: v for k, v in optional.items() if v is not None})
    # trains, then embeds every cell (data-parallel too when launched so)
    model = tl.train(adata, connectome_graph_key=connectome_key, **train_kwargs)
    if rank > 0:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    written = atomic_write_h5ad(adata, args.out / f"{args.data.stem}_spacon.h5ad")
    model.save(args.out / "model", overwrite=True)
    where = f" on {world_size} processes" if distributed else ""
    print(f"trained on {adata.n_obs} cells{where}; wrote:")
    print(f"  {written}\n  {args.out / 'model'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spacon`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import scanpy as sc

    sc.settings.verbosity = "warning" if args.quiet else "info"
    commands = {"demo": _demo, "run": _run, "train": _train}
    launch = None
    if args.command == "train":
        from ._core._distributed import launch_env

        launch = launch_env()  # (rank, world size, local rank) of a torchrun/srun launch
    distributed = launch is not None and launch[1] > 1
    rank = launch[0] if launch is not None else 0
    if distributed:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return commands[args.command](args)
    except _Terminated:
        print(
            f"spacon: error: rank {rank} was stopped (SIGTERM), usually because "
            "another process of the job failed (see its error above); no output was written.",
            file=sys.stderr,
        )
        return 143
    except RuntimeError as error:
        if not distributed:
            raise
        # first sentence of the backend's message, without its source-file prefix
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        detail = re.sub(r"^\[[^\]]*\]\s*", "", detail).split(". ")[0]
        print(
            f"spacon: error: rank {rank}: the distributed job failed ({detail}); "
            "another process probably died (see its error above); no output was written.",
            file=sys.stderr,
        )
        return 1
    except USER_ERRORS as error:
        command = _command_parser(parser, args.command)
        print(f"spacon: error: {_error_message(error, command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spacon: interrupted; no output file was left half-written.", file=sys.stderr)
        return 130
