"""save_figure: palette PNG, provenance inside, written atomically, smaller than matplotlib's own PNG."""

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from mlff.plotting import compact_png, figure_provenance, save_figure  # noqa: E402


def _busy_figure() -> Figure:
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for k in range(8):
        ax.plot(np.cumsum(rng.normal(size=800)), lw=0.7, label=f"line {k}")
    ax.legend()
    return fig


def test_palette_png_with_provenance(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    reference = io.BytesIO()
    fig = _busy_figure()
    fig.savefig(reference, format="png", dpi=100)
    save_figure(fig, path, dpi=100)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left behind
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.size == Image.open(reference).size
    prov = figure_provenance(path)
    assert prov["versions"]["mlff"] and prov["created_utc"]
    assert path.stat().st_size < 0.6 * len(reference.getvalue())


def test_colours_survive(tmp_path):
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    ax.fill_between([0, 1], 0, 1, color="#1f77b4")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    save_figure(fig, tmp_path / "blue.png", dpi=50)
    with Image.open(tmp_path / "blue.png") as image:
        centre = image.convert("RGB").getpixel((50, 50))
    assert max(abs(a - b) for a, b in zip(centre, (0x1F, 0x77, 0xB4))) <= 2


def test_compact_png_keeps_text_chunks(tmp_path):
    from PIL import PngImagePlugin

    path = tmp_path / "old.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", '{"command": "an older writer"}')
    fig = _busy_figure()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    buffer.seek(0)
    Image.open(buffer).save(path, pnginfo=info)
    before = path.stat().st_size
    compact_png(path)
    assert figure_provenance(path) == {"command": "an older writer"}
    with Image.open(path) as image:
        assert image.mode == "P"
    assert path.stat().st_size < before
