"""fastervit.plotting: the house style, the column-sized figures and the shared plots."""

import struct

import matplotlib
import numpy as np
import pytest
import torch

from fastervit import plotting


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    return struct.unpack(">II", header[16:24])


def test_style_is_set_on_import():
    # figures are drawn at the screen's 96 dpi, so that an inch of figure is an inch of page,
    # and saved at twice that
    assert matplotlib.rcParams["figure.dpi"] == 96
    assert matplotlib.rcParams["savefig.dpi"] == 192
    assert matplotlib.rcParams["figure.figsize"][0] == pytest.approx(plotting.COLUMN_WIDTH)


def test_subplots_span_a_fraction_of_the_column():
    fig, axes = plotting.subplots(1, 2, height=2.0, width=0.5)
    assert fig.get_size_inches() == pytest.approx((plotting.COLUMN_WIDTH / 2, 2.0))
    assert len(axes) == 2
    with pytest.raises(ValueError, match="fraction of the column"):
        plotting.subplots(width=1.5)


def test_saved_figure_is_column_wide_at_192_dpi_without_version_stamp(tmp_path):
    fig, ax = plotting.subplots(height=2.0)
    ax.plot([0, 1], [0, 1])
    path = tmp_path / "figure.png"
    plotting.save(fig, path)
    width, height = png_size(path)
    assert (width, height) == (round(plotting.COLUMN_WIDTH * 192), round(2.0 * 192))
    # 150 dpi or more where the book shows it at the column's width
    assert width / (plotting.COLUMN_WIDTH * 96) * 96 >= 150
    assert b"matplotlib version" not in path.read_bytes()


def test_show_images_lays_out_a_grid_and_leaves_empty_cells_empty():
    maps = [torch.rand(8, 8), None, np.random.rand(3, 8, 8), torch.rand(8, 8, 3)]
    fig = plotting.show_images(maps, ["a", "", "b", "c"], ncols=2, title="t")
    axes = fig.axes
    assert len(axes) == 4
    assert [len(ax.images) for ax in axes] == [1, 0, 1, 1]
    assert axes[2].images[0].get_array().shape == (8, 8, 3), "channels-first was not moved last"
    low, high = axes[0].images[0].get_clim()
    assert 0 <= low < high <= 1


def test_show_images_rejects_bad_input():
    with pytest.raises(ValueError, match="titles"):
        plotting.show_images([torch.rand(4, 4)], ["a", "b"])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        plotting.show_images([torch.rand(2, 2, 4, 4)])
    with pytest.raises(ValueError, match="at least one"):
        plotting.show_images([])


def test_log_axis_labels_ticks_with_plain_numbers():
    fig, ax = plotting.subplots()
    plotting.log_axis(ax, [224, 448, 1024])
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["224", "448", "1024"]
    with pytest.raises(ValueError, match="'x' or 'y'"):
        plotting.log_axis(ax, [1, 10], axis="z")


def test_token_spotlight_tints_and_labels_only_the_keys():
    fig, ax = plotting.subplots()
    weights = torch.full((4, 4), float("nan"))
    weights[:2, :2] = torch.tensor([[0.1, 0.2], [0.3, 0.4]])  # one 2x2 window of keys
    plotting.token_spotlight(ax, torch.rand(1, 64, 64), weights, query=(1, 1), window=(0, 0, 2))
    assert sorted(t.get_text() for t in ax.texts) == ["0.10", "0.20", "0.30", "0.40"]
    tint = ax.images[1].get_array()  # (64, 64): each token's weight over its 16x16 pixels
    assert tint.shape == (64, 64)
    assert tint[20, 5] == pytest.approx(0.3) and tint.mask[40, 40]  # a key; no key
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width()) == (-0.5, -0.5, 32)


def test_annotated_matrix_writes_values_and_shows_zeros_on_a_log_scale():
    fig, ax = plotting.subplots()
    values = torch.tensor([[1e-4, 0.0], [0.5, 1.0]])
    im = plotting.annotated_matrix(ax, values, "{:.0e}", log=True, vmin=1e-5, vmax=1)
    assert [t.get_text() for t in ax.texts] == ["1e-04", "0", "5e-01", "1e+00"]
    assert isinstance(im.norm, matplotlib.colors.LogNorm)
    assert im.get_array().mask[0, 1] and not im.get_array().mask[0, 0]
    with pytest.raises(ValueError, match=r"\(rows, cols\)"):
        plotting.annotated_matrix(ax, torch.ones(3))
