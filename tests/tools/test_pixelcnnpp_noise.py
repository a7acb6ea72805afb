"""tools.pixelcnnpp_noise: the noise share of a run's sample grid, read back from its PNG."""

from __future__ import annotations

import json

import torch
from torchvision.utils import save_image

from tools.pixelcnnpp_noise import colour_noise, grid_images, grids


def test_a_grids_noise_pixels_are_counted_per_image(tmp_path):
    images = torch.full((4, 3, 32, 32), 128.0)
    images[1, :, 0, :8] = torch.tensor([255.0, 0.0, 0.0])[:, None]  # 8 saturated red pixels
    images[2, :, 5, 5] = torch.tensor([255.0, 200.0, 150.0])  # at the edge, channels close
    path = tmp_path / "grid.png"
    save_image(images / 255, path, nrow=2, padding=1)  # as the likelihood task saves its grid
    assert torch.equal(grid_images(path), images)
    assert colour_noise(images).sum() == 8
    report = grids([path], tmp_path / "noise.json")
    entry = report["grids"]["grid.png"]
    assert entry["per_image"] == [0.0, round(8 / 1024, 4), 0.0, 0.0]
    assert entry["noise_pixels"] == 8 / 4096
    assert json.loads((tmp_path / "noise.json").read_text())["grids"] == report["grids"]
