"""benchmarks/fashion_patches.py end to end on a tiny grid (skips without the Fashion-MNIST files)."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
import datasets  # noqa: E402
import fashion_patches  # noqa: E402


def test_screen_reports_pixels_and_each_patch_setting(tmp_path, capsys):
    try:
        datasets.load_fashion_mnist()
    except datasets.DatasetMissing as e:
        pytest.skip(str(e))
    out = tmp_path / "R.md"
    argv = ["--rows", "300", "--filters", "8", "--pools", "2,3", "--bandwidths", "40", "--results", str(out)]
    assert fashion_patches.main(argv) == 0
    text = out.read_text()
    assert "## fashion_patches — " in text and "Command: `python benchmarks/fashion_patches.py --rows 300" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| raw pixels | 784 |")
    assert [r.split(" | ")[1] for r in rows[1:]] == ["32", "72"]  # 8 filters x 2x2 and 3x3 regions
    assert sum("**(best)**" in r for r in rows) == 1
    for r in rows:
        acc = float(r.rstrip(" |").split(": ")[-1])
        assert 0.5 < acc <= 1.0  # 10 classes: chance is 0.1
