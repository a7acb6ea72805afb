"""What every cached sampler of a logistic-mixture model must do (PixelCNN++, PixelSNAIL)."""

import torch


def assert_cached_params_equal_full_pass(model, x, y=None) -> None:
    """The parameters computed at each pixel from the sampler's caches, pixel after pixel in
    raster order, equal the full pass's at that pixel (float64: to 1e-12)."""
    full = model.params(x, y)
    state = model.sampling_state(x.shape[0])
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            cached = model.pixel_params(state, i, j, y)
            torch.testing.assert_close(cached, full[:, :, i, j], rtol=0, atol=1e-12)
            model.pixel_drawn(state, x, i, j, y)
