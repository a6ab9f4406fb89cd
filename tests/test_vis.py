"""Image grids (gangealing.vis)."""
import numpy as np
import pytest
import torch

from gangealing.data.images import read_image
from gangealing.vis import make_grid, save_grid


def test_make_grid_layout():
    x = torch.full((5, 3, 4, 6), -1.0)
    x[4] = 1.0
    g = make_grid(x, nrow=3, padding=1)
    assert g.shape == (2 * 5 + 1, 3 * 7 + 1, 3) and g.dtype == np.uint8
    assert g[0, 0, 0] == 255  # padding is white
    assert g[1, 1, 0] == 0  # first tile black
    assert g[6, 1 + 7, 0] == 255  # fifth image: second row, second column
    assert g[6, 1 + 14, 0] == 255  # the empty sixth cell stays padding


def test_save_grid_gray(tmp_path):
    p = save_grid(torch.zeros(4, 1, 3, 3), tmp_path / "g.png")
    assert read_image(p, "L").shape == (9, 9, 1)
    with pytest.raises(ValueError):
        make_grid(torch.zeros(3, 4, 4))
