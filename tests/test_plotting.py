"""Tests of spacon.pl on fabricated labels, coordinates and embeddings."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
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


def _n_panels(fig: Figure) -> int:
    return len(fig.axes)


def test_domains_single_panel_and_save(adata, tmp_path):
    n_open = len(plt.get_fignums())
    out = tmp_path / "sub" / "domains.png"
    fig = sp.pl.domains(adata, show=False, save=out)
    assert isinstance(fig, Figure)
    assert _n_panels(fig) == 1 and fig.axes[0].get_title() == Key.obs.domains
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1", "2", "3"]
    assert out.exists() and out.stat().st_size > 0
    assert len(plt.get_fignums()) == n_open  # show=False leaves nothing open in pyplot


def test_domains_one_panel_per_section(adata):
    fig = sp.pl.domains(adata, section_key="section", ncols=2, show=False, title="my title")
    assert _n_panels(fig) == 3
    assert [a.get_title() for a in fig.axes] == ["s1", "s2", "s3"]
    assert len(fig.legends) == 1 and fig._suptitle.get_text() == "my title"
    fig = sp.pl.domains(adata, section_key="section", sections=["s3", "s1"], show=False)
    assert [a.get_title() for a in fig.axes] == ["s3", "s1"]
    # each panel holds that section's cells only
    assert all(len(a.collections[0].get_offsets()) == N_PER_SECTION for a in fig.axes)


def test_domains_colors_follow_uns_and_palette(adata):
    stored = ["#ff0000", "#00ff00", "#0000ff", "#000000"]
    adata.uns[f"{Key.obs.domains}_colors"] = stored
    fig = sp.pl.domains(adata, show=False)
    face = fig.axes[0].collections[0].get_facecolors()
    codes = adata.obs[Key.obs.domains].cat.codes.to_numpy()
    # the cell drawn first is cell 0 (no background cells)
    np.testing.assert_allclose(face[0], matplotlib.colors.to_rgba(stored[codes[0]]))
    np.testing.assert_allclose(face[-1], matplotlib.colors.to_rgba(stored[codes[-1]]))
    fig = sp.pl.domains(adata, palette={"0": "k", "1": "r", "2": "g", "3": "b"}, show=False)
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="no colour"):
        sp.pl.domains(adata, palette={"0": "k"}, show=False)


def test_domains_into_axes_and_errors(adata):
    fig, ax = plt.subplots()
    try:
        out = sp.pl.domains(adata, section_key="section", sections="s2", ax=ax, show=False)
        assert out is fig and len(ax.collections) == 1
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
    fig = sp.pl.highlight(adata, show=False, save=tmp_path / "hl.pdf")
    assert _n_panels(fig) == 4
    assert fig.axes[0].get_title() == "0 (75 cells)"
    assert (tmp_path / "hl.pdf").stat().st_size > 0
    fig = sp.pl.highlight(
        adata, groups=["1", "3"], section_key="section", sections=["s1", "s2"], show=False
    )
    assert _n_panels(fig) == 4
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["1 | s1 (25)", "1 | s2 (25)", "3 | s1 (25)", "3 | s2 (25)"]
    with pytest.raises(ValueError, match="not found"):
        sp.pl.highlight(adata, groups=["7"], show=False)


def test_sections_3d(adata, tmp_path):
    fig = sp.pl.sections_3d(adata, section_key="section", show=False, save=tmp_path / "s3d.png")
    assert isinstance(fig, Figure) and fig.axes[0].name == "3d"
    z = fig.axes[0].collections[0]._offsets3d[2]
    assert sorted(set(np.asarray(z).tolist())) == [0.0, 1.0, 2.0]
    assert (tmp_path / "s3d.png").stat().st_size > 0
    fig = sp.pl.sections_3d(adata, section_key="section", max_cells=50, show=False)
    assert len(fig.axes[0].collections[0]._offsets3d[0]) == 50
    with pytest.raises(ValueError, match="section_key"):
        sp.pl.sections_3d(adata, show=False)
    z = np.repeat([0.0, 5.0, 10.0], N_PER_SECTION)
    adata.obsm["xyz"] = np.column_stack([adata.obsm["spatial"], z])
    fig = sp.pl.sections_3d(adata, spatial_key="xyz", show=False)
    assert fig.axes[0].name == "3d"


def test_alpha_sweep_leaves_adata_unchanged(adata, tmp_path):
    before = adata.copy()
    fig = sp.pl.alpha_sweep(
        adata,
        alphas=(0.0, 1.0),
        n_clusters=4,
        hops=None,  # the fixture has no spatial graph: the mix alone, as tl.cluster(hops=None)
        section_key="section",
        section="s2",
        show=False,
        save=tmp_path / "sweep.png",
    )
    assert _n_panels(fig) == 2
    titles = [a.get_title() for a in fig.axes]
    assert titles[0] == "alpha=0 (f=0.00): 4 domains | section s2"
    assert titles[1].startswith("alpha=1 (f=1.00)")
    # alpha=0 recovers the four planted quadrants: four colours in the panel
    assert len(np.unique(fig.axes[0].collections[0].get_facecolors(), axis=0)) == 4
    assert all(len(a.collections[0].get_offsets()) == N_PER_SECTION for a in fig.axes)
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
    fig = sp.pl.loss(adata, show=False, save=tmp_path / "loss.svg", log_scale=True)
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(line.get_ydata(), [5.0, 3.0, 2.0, 1.5])
    assert fig.axes[0].get_yscale() == "log"
    assert (tmp_path / "loss.svg").stat().st_size > 0
    del adata.uns[Key.uns.train]
    with pytest.raises(KeyError, match=r"sp\.tl\.train"):
        sp.pl.loss(adata, show=False)


def test_plots_accept_views_and_default_show_is_off_in_scripts(adata):
    view = adata[adata.obs["section"] == "s1"]
    assert view.is_view
    fig = sp.pl.domains(view)  # show=None: matplotlib is not interactive here
    assert isinstance(fig, Figure) and len(fig.axes[0].collections[0].get_offsets()) == 100
    assert isinstance(sp.pl.highlight(view, groups="2"), Figure)
