"""Hadamard matrices for sizes that are not powers of two, and the randomized rotations built
from them.

A Hadamard matrix H_n has entries +-1 and H H^T = n I; H_n / sqrt(n) is orthogonal with all
entries of equal magnitude, which is what spreads an outlier over every coordinate. Orders
exist only for 1, 2 and multiples of 4. We build them as Kronecker products

    H_n = H_m (x) H_{2^p},   n = m * 2^p,

with H_{2^p} Sylvester's (the fast Walsh-Hadamard transform, ``apq::hadamard``) and H_m a
small matrix from Paley's constructions, chosen as the smallest m that the size allows:
SmolLM2's 576 = 36 * 16 (Paley II, q = 17), 1536 = 12 * 128 (Paley I, q = 11); Llama's
11008 = 172 * 64 has no Paley order (QuaRot ships a Williamson H_172), so such sizes fall
back to a seeded random orthogonal m x m factor (still exact and orthogonal, less even).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sylvester(n: int, dtype=torch.float64) -> Tensor:
    """Sylvester's H_n (n a power of two): H_2k = [[H_k, H_k], [H_k, -H_k]], symmetric."""
    if not is_power_of_two(n):
        raise ValueError(f"Sylvester's construction needs a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> Tensor:
    """Q[i, j] = chi(j - i) for the prime field F_q, chi the quadratic character."""
    squares = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    return chi[(idx.view(1, -1) - idx.view(-1, 1)) % q]


def paley(n: int) -> Optional[Tensor]:
    """A Hadamard matrix of order n from Paley's constructions over a prime field, or None.

    Paley I:  n = q + 1, q = 3 mod 4:   H = I + [[0, 1^T], [-1, Q]]
    Paley II: n = 2 (q + 1), q = 1 mod 4: the symmetric conference matrix
              C = [[0, 1^T], [1, Q]] with 0 -> [[1, -1], [-1, -1]], +-1 -> +-[[1, 1], [1, -1]].
    """
    q = n - 1
    if _is_prime(q) and q % 4 == 3:
        s = torch.zeros(n, n, dtype=torch.float64)
        s[0, 1:], s[1:, 0], s[1:, 1:] = 1.0, -1.0, _jacobsthal(q)
        return torch.eye(n, dtype=torch.float64) + s
    q = n // 2 - 1
    if n % 2 == 0 and _is_prime(q) and q % 4 == 1:
        c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        c[0, 1:], c[1:, 0], c[1:, 1:] = 1.0, 1.0, _jacobsthal(q)
        one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(c, one) + torch.kron((c == 0).double(), zero)
    return None


# Largest Hadamard factor tried: the online transform costs m multiply-adds per element.
MAX_FACTOR = 256


def factor(n: int) -> tuple[int, Optional[Tensor]]:
    """(m, H_m): the smallest m <= MAX_FACTOR with n = m * 2^p and a Paley matrix H_m (None
    when m = 1); when none fits, m is the odd part of n and H_m is None."""
    if n < 1:
        raise ValueError(f"a transform size must be positive, got {n}")
    odd = n
    while odd % 2 == 0:
        odd //= 2
    if odd == 1:
        return 1, None
    m = odd
    while n % m == 0 and m <= MAX_FACTOR:
        h = paley(m) if m % 4 == 0 else None
        if h is not None:
            return m, h
        m *= 2
    return odd, None


def mix_matrix(n: int, seed: int = 0, dtype=torch.float32) -> Tensor:
    """The m x m factor M of the transform of size n: R = M (x) H_{2^p}/sqrt(2^p)
    (``apq::hadamard``'s ``mix`` argument, fp32). H_m/sqrt(m) from :func:`factor`, or a seeded
    random orthogonal matrix where no Hadamard order fits; [[1]] for a power of two."""
    m, h = factor(n)
    if m == 1:
        return torch.ones(1, 1, dtype=dtype)
    if h is None:
        return random_orthogonal(m, seed).to(dtype)
    return (h / math.sqrt(m)).to(dtype)


def random_orthogonal(n: int, seed: int) -> Tensor:
    """Haar-random orthogonal n x n (fp64): QR of a Gaussian matrix with the signs fixed."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r)).view(1, -1)).contiguous()


def dense_transform(mix: Tensor, n: int) -> Tensor:
    """fp64 [n, n] matrix R = mix (x) H_{2^p}/sqrt(2^p) that ``apq::hadamard`` applies:
    y = x @ R.T for rows x."""
    m = mix.shape[0]
    p = n // m
    return torch.kron(mix.double(), sylvester(p) / math.sqrt(p))


def random_hadamard(n: int, seed: int) -> Tensor:
    """fp64 orthogonal [n, n]: diag(random signs) @ H_n / sqrt(n) (the offline rotation),
    H_n = H_m (x) H_{2^p} from :func:`factor` (random orthogonal factor where no order fits)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
    return signs.view(-1, 1) * dense_transform(mix_matrix(n, seed + 1, torch.float64), n)
