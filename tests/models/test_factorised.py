"""models.factorised: the calibration model's likelihood normalises and its samples follow it."""

import torch

from models.factorised import Factorised


def test_probabilities_over_all_values_sum_to_one():
    model = Factorised((1, 2, 2), levels=2)
    torch.nn.init.normal_(model.logits)
    # all 2^4 binary images of a 2x2 picture
    images = torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)]).float()
    total = torch.exp(-model(images.view(16, 1, 2, 2))).sum()
    assert total.item() == torch.tensor(1.0).item() or abs(total.item() - 1) < 1e-6


def test_samples_follow_the_frequencies():
    x = torch.tensor([[0, 255]] * 3 + [[255, 255]], dtype=torch.uint8).view(4, 1, 1, 2)
    model = Factorised((1, 1, 2), levels=2, init="data", pseudo_count=0.0)
    model.init_from_data(x)
    draws = model.sample(4000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 1, 1, 2)
    assert abs(draws[:, 0, 0, 0].mean().item() - 0.25) < 0.03
    assert draws[:, 0, 0, 1].min().item() == 1.0
