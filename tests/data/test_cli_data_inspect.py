from PIL import Image

from craft_vla.data.inspect import inspect


def test_inspect_prints_summary_and_writes_grid(libero_dir, tmp_path, capsys):
    out_png = tmp_path / "grid.png"
    summary = inspect(libero_dir, out_png, num_images=4)
    printed = capsys.readouterr().out
    assert "episodes: 5  total steps: 28" in printed
    assert "2 x Pick up the black bowl" in printed and "open the drawer" in printed
    assert "action  q99" in printed and "proprio mask [1, 1, 1, 1, 1, 1, 1, 1]" in printed
    assert summary["episodes"] == 5 and summary["steps"] == 28
    assert summary["statistics"]["action"]["mask"] == [True] * 6 + [False]
    with Image.open(out_png) as grid:
        assert grid.size == (2 * 128, 4 * 128)
