"""Random operands for the tests: codes, and the packed, scaled operands of qmatmul."""

import torch

import apq_torch
from apq_torch import reference as ref

# Odd shapes from the foundation issue; K covers a partial word, a w tail vector
# (K <= 256, 700), several vectors and the chunked path (5000).
M_SIZES = (1, 3, 17, 64)
N_SIZES = (1, 7, 33)
K_SIZES = (1, 31, 255, 257, 1000)
POISON = -0x2A2A2A2A


def random_codes(rows, K, bits, gen, device="cpu"):
    return torch.randint(0, 2**bits, (rows, K), generator=gen, dtype=torch.int64).to(device)


def poison_allocator(device, nbytes=1 << 22):
    """Fill and free a block so that the next outputs likely reuse poisoned memory."""
    torch.full((nbytes // 4,), POISON, dtype=torch.int32, device=device)


def random_weight(N, K, bits, fmt, group_size, gen, device="cpu"):
    """Packed weights with per-group scales and the offsets their format implies."""
    G = ref.num_groups(K, group_size)
    codes = random_codes(N, K, bits, gen, device)
    planes, rowsum = apq_torch.pack(codes, bits, group_size)
    scale = (torch.rand(N, G, generator=gen) * 0.1 + 0.01).to(device)
    if fmt == "unsigned":
        offset = -torch.randint(0, 2**bits, (N, G), generator=gen).float().to(device)
    else:
        offset = torch.full((N, G), ref.format_offset(fmt, bits), device=device)
    return planes, rowsum, scale, offset


def random_activation(M, K, dtype, gen, device="cpu"):
    x = torch.randn(M, K, generator=gen) * 2 + 0.3
    return x.to(dtype).to(device)
