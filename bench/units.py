"""One unit system for likelihood tables: nats per image, bits per dimension, and the offset that
turns a continuous density on rescaled data into a bound on the 8-bit data's NLL.

For D dimensions and 8-bit data x in {0..255}^D:
- discrete models: bits/dim = NLL_nats / (D ln 2); a uniform model scores exactly 8;
- a continuous density p on y = (x + u) / 256, u ~ U[0,1)^D:
  -log P(x) <= E_u[-log p(y)] + D ln 256, so the data's NLL bound is the density's NLL plus
  D ln 256 nats, i.e. bits/dim = E_u[-log p(y)] / (D ln 2) + 8;
- binary images: nats per image, bits/dim = nats / (D ln 2).
"""

from __future__ import annotations

import math

LN2 = math.log(2)


def bits_per_dim(nats: float, dims: int) -> float:
    """NLL in nats per image -> bits per dimension."""
    return nats / (dims * LN2)


def dequantization_nats(dims: int, scale: float = 1 / 256) -> float:
    """Nats to add to -log p(y), y = scale (x + u), to bound -log P(x): D ln(1/scale).

    The change of variables y = scale (x + u) has Jacobian scale^D, so
    p_x(x + u) = p_y(y) scale^D and -log p_x = -log p_y - D ln scale.
    """
    return -dims * math.log(scale)


def bits_per_dim_of_loglik(loglik: float, dims: int) -> float:
    """A continuous log-likelihood of y = (x + u) / 256, in nats, as bits/dim of the 8-bit x."""
    # bits/dim = (D ln 256 - loglik) / (D ln 2) = 8 - loglik / (D ln 2)
    return bits_per_dim(dequantization_nats(dims) - loglik, dims)


# Conversions a spec may apply to a published number (`[[derived]]`, `via = NAME`): the function
# of (published value, D) and the formula the table prints beside the derived value.
CONVERSIONS = {
    "bits_per_dim_of_loglik": (bits_per_dim_of_loglik, "8 - loglik / (D ln 2)"),
}
