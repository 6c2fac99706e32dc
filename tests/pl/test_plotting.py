"""Tests of spacon.pl on fabricated labels, coordinates and embeddings."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import spacon as sp  # noqa: E402
from spacon import Key  # noqa: E402
from spacon.tl._sweep import match_labels as _align  # noqa: E402

N_PER_SECTION = 100


@pytest.fixture
def adata() -> ad.AnnData:
    """Three sections of a 10 x 10 grid, four domains as quadrants, planted embeddings."""
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2).astype(float)
    quadrant = (xy[:, 0] >= 5).astype(int) + 2 * (xy[:, 1] >= 5)
    n = 3 * N_PER_SECTION
    labels = np.tile(quadrant, 3)
    halves = np.tile((xy[:, 0] >= 5).astype(int), 3)
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {
                Key.obs.domains: pd.Categorical(labels.astype(str)),
                "section": pd.Categorical(np.repeat(["s1", "s2", "s3"], N_PER_SECTION)),
            },
            index=[f"c{i}" for i in range(n)],
        ),
        obsm={
            Key.obsm.spatial: np.tile(xy, (3, 1)),
            Key.obsm.spatial_embedding: rng.normal(scale=8, size=(4, 6))[labels]
            + rng.normal(size=(n, 6)),
            Key.obsm.connectome_embedding: rng.normal(scale=8, size=(2, 6))[halves]
            + rng.normal(size=(n, 6)),
        },
    )
    adata.uns[Key.uns.train] = {"loss": np.array([5.0, 3.0, 2.0, 1.5])}
    return adata


@pytest.fixture(autouse=True)
def _close_figures():
    """Plots are pyplot figures (as scanpy's): close what a test left open."""
    yield
    plt.close("all")


def _fig(axes) -> Figure:
    """The figure of what a plot returned with ``show=False`` (an axes or a list of axes)."""
    return (axes[0] if isinstance(axes, list) else axes).figure


def _n_panels(axes) -> int:
    return len(_fig(axes).axes)


def test_domains_single_panel_and_save(adata, tmp_path):
    n_open = len(plt.get_fignums())
    out = tmp_path / "sub" / "domains.png"
    ax = sp.pl.domains(adata, show=False, save=out)
    assert isinstance(ax, Axes)  # scanpy: one panel -> the axes
    fig = ax.figure
    assert _n_panels(ax) == 1 and ax.get_title() == Key.obs.domains
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1", "2", "3"]
    assert out.exists() and out.stat().st_size > 0
    assert len(plt.get_fignums()) == n_open  # saved, then closed in pyplot (as scanpy)
    # the legend lies right of the panel, not over it
    renderer = fig._get_renderer()
    fig.draw(renderer)
    legend_box = fig.legends[0].get_window_extent(renderer)
    assert legend_box.x0 >= ax.get_window_extent(renderer).x1


def test_domains_one_panel_per_section(adata):
    axes = sp.pl.domains(adata, section_key="section", ncols=2, show=False, title="my title")
    assert isinstance(axes, list) and len(axes) == 3  # scanpy: several panels -> a list
    fig = _fig(axes)
    assert [a.get_title() for a in axes] == ["s1", "s2", "s3"]
    assert len(fig.legends) == 1 and fig._suptitle.get_text() == "my title"
    axes = sp.pl.domains(adata, section_key="section", sections=["s3", "s1"], show=False)
    assert [a.get_title() for a in axes] == ["s3", "s1"]
    # each panel holds that section's cells only
    assert all(len(a.collections[0].get_offsets()) == N_PER_SECTION for a in axes)


def test_show_follows_scanpy_autoshow(adata, monkeypatch):
    import scanpy as sc

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    before = sc.settings.autoshow
    try:
        sc.settings.autoshow = True
        assert sp.pl.domains(adata) is None  # show=None -> autoshow -> plt.show(), None
        assert sp.pl.loss(adata) is None
        assert len(shown) == 2
        sc.settings.autoshow = False
        assert isinstance(sp.pl.domains(adata), Axes)
        assert sp.pl.domains(adata, show=True) is None
        assert len(shown) == 3
    finally:
        sc.settings.autoshow = before


def test_dpi_sets_figure_and_file_resolution(adata, tmp_path):
    from PIL import Image

    ax = sp.pl.loss(adata, figsize=(4.0, 3.0), dpi=50, show=False)
    assert ax.figure.dpi == 50
    sp.pl.loss(adata, figsize=(4.0, 3.0), dpi=50, show=False, save=tmp_path / "low.png")
    sp.pl.loss(adata, figsize=(4.0, 3.0), dpi=200, show=False, save=tmp_path / "high.png")
    sp.pl.loss(adata, figsize=(4.0, 3.0), show=False, save=tmp_path / "default.png")
    low = Image.open(tmp_path / "low.png").size[0]
    high = Image.open(tmp_path / "high.png").size[0]
    default = Image.open(tmp_path / "default.png").size[0]
    assert 3.5 < high / low < 4.5
    assert default > 4 * 140  # at least 150 dpi by default, as scanpy's dpi_save
    with pytest.raises(ValueError, match="dpi"):
        sp.pl.domains(adata, dpi=0, show=False)


def test_old_parameter_names_are_deprecated_aliases(adata):
    with pytest.warns(FutureWarning, match="`key` is deprecated.*`color`"):
        ax = sp.pl.domains(adata, key="section", show=False)
    assert ax.get_title() == "section"
    with pytest.warns(FutureWarning, match="`point_size` is deprecated.*`size`"):
        ax = sp.pl.domains(adata, point_size=7.0, show=False)
    np.testing.assert_allclose(ax.collections[0].get_sizes(), [7.0])
    with pytest.warns(FutureWarning, match="`key`"):
        sp.pl.highlight(adata, key="section", show=False)
    with pytest.warns(FutureWarning, match="`key`"):
        sp.pl.sections_3d(adata, key=Key.obs.domains, section_key="section", show=False)
    with pytest.raises(TypeError, match="both `key` and `color`"):
        sp.pl.domains(adata, key="section", color="section", show=False)


def test_legend_below_user_axes_does_not_run_under_the_next_panel(adata):
    adata.obs["long"] = pd.Categorical(
        np.where(adata.obs[Key.obs.domains] == "0", "Internal Capsule Caudoputamen", "Layer 2-3")
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    sp.pl.domains(adata, color="long", ax=axes[0], show=False)
    sp.pl.domains(adata, color=Key.obs.domains, ax=axes[1], show=False)
    renderer = fig._get_renderer()
    fig.draw(renderer)
    left_legend = axes[0].get_legend().get_window_extent(renderer)
    assert left_legend.x1 <= axes[1].get_window_extent(renderer).x0
    assert left_legend.y1 <= axes[0].get_window_extent(renderer).y0 + 1  # below the panel


def test_backed_adata_is_plotted(adata, tmp_path):
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        ax = sp.pl.domains(backed, show=False)
        assert len(ax.collections[0].get_offsets()) == backed.n_obs
        assert isinstance(sp.pl.loss(backed, show=False), Axes)
    finally:
        backed.file.close()


def test_domains_colors_follow_uns_and_palette(adata):
    stored = ["#ff0000", "#00ff00", "#0000ff", "#000000"]
    adata.uns[f"{Key.obs.domains}_colors"] = stored
    ax = sp.pl.domains(adata, show=False)
    face = ax.collections[0].get_facecolors()
    codes = adata.obs[Key.obs.domains].cat.codes.to_numpy()
    # the cell drawn first is cell 0 (no background cells)
    np.testing.assert_allclose(face[0], matplotlib.colors.to_rgba(stored[codes[0]]))
    np.testing.assert_allclose(face[-1], matplotlib.colors.to_rgba(stored[codes[-1]]))
    ax = sp.pl.domains(adata, palette={"0": "k", "1": "r", "2": "g", "3": "b"}, show=False)
    assert isinstance(ax, Axes)
    with pytest.raises(ValueError, match="no colour"):
        sp.pl.domains(adata, palette={"0": "k"}, show=False)


def test_domains_into_axes_and_errors(adata):
    fig, ax = plt.subplots()
    try:
        out = sp.pl.domains(adata, section_key="section", sections="s2", ax=ax, show=False)
        assert out is ax and len(ax.collections) == 1
        with pytest.raises(ValueError, match="single panel"):
            sp.pl.domains(adata, section_key="section", ax=ax, show=False)
    finally:
        plt.close(fig)
    with pytest.raises(KeyError, match="sp.tl.cluster"):
        sp.pl.domains(adata, key="missing", show=False)
    with pytest.raises(ValueError, match="not found"):
        sp.pl.domains(adata, section_key="section", sections=["s9"], show=False)
    with pytest.raises(KeyError, match="spatial"):
        sp.pl.domains(adata, spatial_key="nope", show=False)


def test_highlight_panels(adata, tmp_path):
    axes = sp.pl.highlight(adata, show=False, save=tmp_path / "hl.pdf")
    assert len(axes) == 4
    assert axes[0].get_title() == "0 (75 cells)"
    assert (tmp_path / "hl.pdf").stat().st_size > 0
    axes = sp.pl.highlight(
        adata, groups=["1", "3"], section_key="section", sections=["s1", "s2"], show=False
    )
    assert len(axes) == 4
    titles = [a.get_title() for a in axes]
    assert titles == ["1 | s1 (25)", "1 | s2 (25)", "3 | s1 (25)", "3 | s2 (25)"]
    with pytest.raises(ValueError, match="not found"):
        sp.pl.highlight(adata, groups=["7"], show=False)


def test_sections_3d(adata, tmp_path):
    ax = sp.pl.sections_3d(adata, section_key="section", show=False, save=tmp_path / "s3d.png")
    assert isinstance(ax, Axes) and ax.name == "3d"
    z = ax.collections[0]._offsets3d[2]
    assert sorted(set(np.asarray(z).tolist())) == [0.0, 1.0, 2.0]
    assert ax.get_zlabel() == "section"
    assert ax.yaxis_inverted()  # y flipped as in pl.domains, so sections are not mirrored
    assert (tmp_path / "s3d.png").stat().st_size > 0
    ax = sp.pl.sections_3d(adata, section_key="section", max_cells=50, show=False)
    assert len(ax.collections[0]._offsets3d[0]) == 50
    with pytest.raises(ValueError, match="section_key"):
        sp.pl.sections_3d(adata, show=False)
    z = np.repeat([0.0, 5.0, 10.0], N_PER_SECTION)
    adata.obsm["xyz"] = np.column_stack([adata.obsm["spatial"], z])
    ax = sp.pl.sections_3d(adata, spatial_key="xyz", show=False)
    assert ax.name == "3d" and ax.get_zlabel() == "z"
    ax = sp.pl.sections_3d(adata, spatial_key="xyz", invert_yaxis=False, show=False)
    assert not ax.yaxis_inverted()


def test_sections_3d_saved_png_keeps_the_whole_box(adata, tmp_path):
    """The saved image has a white margin all round: no corner of the 3-D box is cut."""
    from PIL import Image

    sp.pl.sections_3d(adata, section_key="section", legend=False, show=False,
                      save=tmp_path / "s3d.png", dpi=60)  # fmt: skip
    img = np.asarray(Image.open(tmp_path / "s3d.png").convert("L"))
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert (border > 250).all()


def test_alpha_sweep_clusters_with_the_defaults_of_the_tools():
    import inspect

    plot = inspect.signature(sp.pl.alpha_sweep).parameters
    sweep = inspect.signature(sp.tl.alpha_sweep).parameters
    cluster = inspect.signature(sp.tl.cluster).parameters
    shared = set(plot) & set(sweep)
    assert {"expression_hops", "n_starts", "hops", "n_pcs", "expression_weight"} <= shared
    for name in shared:
        assert plot[name].default == sweep[name].default, name
    for name in (set(sweep) & set(cluster)) - {"key_added"}:
        assert sweep[name].default == cluster[name].default, name


def test_alpha_sweep_leaves_adata_unchanged(adata, tmp_path):
    before = adata.copy()
    axes = sp.pl.alpha_sweep(
        adata,
        alphas=(0.0, 1.0),
        n_clusters=4,
        hops=None,  # the fixture has no spatial graph: the mix alone, as tl.cluster(hops=None)
        section_key="section",
        section="s2",
        show=False,
        save=tmp_path / "sweep.png",
    )
    assert len(axes) == 2
    titles = [a.get_title() for a in axes]
    assert titles[0] == "alpha=0 (f=0.00): 4 domains | section s2"
    assert titles[1].startswith("alpha=1 (f=1.00)")
    # alpha=0 recovers the four planted quadrants: four colours in the panel
    assert len(np.unique(axes[0].collections[0].get_facecolors(), axis=0)) == 4
    assert all(len(a.collections[0].get_offsets()) == N_PER_SECTION for a in axes)
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert list(adata.obs.columns) == list(before.obs.columns)
    assert sorted(adata.obsm) == sorted(before.obsm) and sorted(adata.obsp) == sorted(before.obsp)
    assert sorted(adata.uns) == sorted(before.uns)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    with pytest.raises(ValueError, match="alpha"):
        sp.pl.alpha_sweep(adata, alphas=(0.0, 2.0), show=False)
    del adata.obsm[Key.obsm.spatial_embedding]
    with pytest.raises(KeyError, match="train"):
        sp.pl.alpha_sweep(adata, show=False)


def test_align_matches_overlapping_clusters():
    ref = np.array([0, 0, 1, 1, 2, 2])
    lab = np.array([1, 1, 0, 0, 0, 3])  # 1<->0, 0<->1; 3 best matches 2
    np.testing.assert_array_equal(_align(lab, ref), [0, 0, 1, 1, 1, 2])
    lab = np.array([0, 0, 0, 0, 1, 2])  # 3 clusters vs 3, one split
    out = _align(lab, ref)
    assert out[0] == 0 and out[4] != out[5]


def test_loss(adata, tmp_path):
    ax = sp.pl.loss(adata, show=False, save=tmp_path / "loss.svg", log_scale=True)
    line = ax.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(line.get_ydata(), [5.0, 3.0, 2.0, 1.5])
    assert ax.get_yscale() == "log"
    assert (tmp_path / "loss.svg").stat().st_size > 0
    del adata.uns[Key.uns.train]
    with pytest.raises(KeyError, match=r"sp\.tl\.train"):
        sp.pl.loss(adata, show=False)


def test_plots_accept_views(adata):
    view = adata[adata.obs["section"] == "s1"]
    assert view.is_view
    ax = sp.pl.domains(view, show=False)
    assert isinstance(ax, Axes) and len(ax.collections[0].get_offsets()) == 100
    assert isinstance(sp.pl.highlight(view, groups="2", show=False), Axes)
    assert view.is_view  # plots only read: the view is not made actual
