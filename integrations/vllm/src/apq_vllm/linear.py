"""APQLinearMethod: a vLLM linear layer whose weight is apq_torch's packed planes, row sums,
scales and offsets (the checkpoint's tensors, sharded as vLLM asks), computed by
``torch.ops.apq``.

Tensor parallelism:
- column-parallel layers (and merged ones: qkv, gate_up) split the output rows N: planes along
  dim 1, row sums / scales / offsets along dim 0, through vLLM's own weight loaders (they know
  the q/k/v offsets and kv-head replication);
- row-parallel layers split K. Every rank then holds whole K-groups: K / tp must be a multiple
  of group_size (of 64 for per-channel scales, group_size 0); other layouts are refused when
  the model is built. Activations are quantized per token over the *whole* row, as on one
  device: the rank gathers the row, quantize_pack's it once, and multiplies its own K slice
  (qmatmul); vLLM then sums the ranks' outputs. So every rank reads the same activation codes
  as transformers and a single device do; only the float summation order of the partial
  outputs differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn import Parameter
from vllm.distributed import tensor_model_parallel_all_gather
from vllm.model_executor.layers.linear import LinearMethodBase
from vllm.model_executor.utils import set_weight_attrs

from apq_torch import APQConfig, APQLinear, ops
from apq_torch.ops.layout import GROUP_QUANTUM, padded_words

WORD_BITS = 32


class APQLinearMethod(LinearMethodBase):
    """Holds ``w_planes`` [w_bits, N, words], ``w_rowsum`` / ``w_scale`` / ``w_offset`` [N, G]
    (APQLinear's buffers, as vLLM parameters of this rank's shard) and runs ``apq::linear``."""

    def __init__(self, config: APQConfig, prefix: str = ""):
        self.config, self.prefix = config, prefix

    def create_weights(self, layer: torch.nn.Module, input_size_per_partition: int, output_partition_sizes: list[int],
                       input_size: int, output_size: int, params_dtype: torch.dtype, **extra_weight_attrs):
        weight_loader = extra_weight_attrs.pop("weight_loader")
        K, N = input_size_per_partition, sum(output_partition_sizes)
        k_split = K != input_size
        if k_split:
            check_k_shard(self.prefix, input_size, K, self.config.group_size)
        layer.apq_K, layer.apq_k_split = K, k_split
        for name, (shape, dtype) in APQLinear.buffer_specs(K, N, self.config).items():
            param = Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
            attrs = {"output_dim": 1 if name == "w_planes" else 0, "weight_loader": weight_loader}
            if k_split and name == "w_planes":
                attrs["weight_loader"] = _k_shard_planes_loader(layer.tp_rank, K)
            elif k_split and self.config.group_size:
                attrs["input_dim"] = 1  # whole groups: vLLM's loader takes this rank's G columns
            # (k_split, per channel: scale and offset are per row, loaded whole; the row sums are
            # recomputed for this rank's K slice after loading)
            layer.register_parameter(name, param)
            set_weight_attrs(param, {**attrs, **extra_weight_attrs})

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        # The planes stay as loaded (no repacking, nothing deleted); only a per-channel layer
        # split along K needs the row sums of its own slice.
        if layer.apq_k_split and self.config.group_size == 0:
            codes = ops.unpack(layer.w_planes.data, layer.apq_K)
            layer.w_rowsum.data.copy_(codes.sum(1, keepdim=True, dtype=torch.int32))

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if not layer.apq_k_split:
            return ops.linear(x, layer.w_planes, layer.w_rowsum, layer.w_scale, layer.w_offset, layer.apq_K,
                              c.group_size, c.a_bits, c.a_format, bias)
        K_shard = layer.apq_K
        row = tensor_model_parallel_all_gather(x.contiguous(), dim=-1)
        row = row.reshape(-1, row.shape[-1])
        span = c.group_size or K_shard  # row sums per group, or per rank slice for per-channel
        planes, rowsum, scale, offset = ops.quantize_pack(row, c.a_bits, c.a_format, span)
        words, groups = K_shard // WORD_BITS, K_shard // span
        planes = planes[:, :, layer.tp_rank * words:(layer.tp_rank + 1) * words]
        planes = F.pad(planes, (0, padded_words(K_shard) - words)).contiguous()
        rowsum = rowsum[:, layer.tp_rank * groups:(layer.tp_rank + 1) * groups].contiguous()
        y = ops.qmatmul(planes, rowsum, scale, offset, layer.w_planes, layer.w_rowsum, layer.w_scale, layer.w_offset,
                        K_shard, c.group_size, bias, x.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def check_k_shard(prefix: str, K: int, K_shard: int, group_size: int) -> None:
    """Refuse a row-parallel split of K that cuts a K-group (or, per channel, a 64-bit word)."""
    quantum = group_size or GROUP_QUANTUM
    if K_shard % quantum:
        need = f"group_size={group_size}" if group_size else f"{GROUP_QUANTUM} (per-channel scales)"
        raise ValueError(f"apq: row-parallel layer {prefix!r} splits K={K} into shards of {K_shard}; each tensor "
                         f"parallel rank must hold whole K-groups, so K / tensor_parallel_size must be a multiple "
                         f"of {need}. Use another tensor_parallel_size, or quantize with a group_size that divides "
                         f"K / tensor_parallel_size.")


def _k_shard_planes_loader(rank: int, K_shard: int):
    """Weight loader of a row-parallel layer's planes: this rank's K_shard columns of the full
    packed row (whole 32-bit words), zero-padded to its own 256-bit multiple."""
    words = K_shard // WORD_BITS

    def load(param: Parameter, loaded_weight: torch.Tensor) -> None:
        if loaded_weight.shape[:2] != param.shape[:2] or loaded_weight.shape[2] < (rank + 1) * words:
            raise ValueError(f"apq: packed planes {list(loaded_weight.shape)} do not fit a K shard of {K_shard} "
                             f"columns ({list(param.shape)}) on rank {rank}")
        param.data.zero_()
        param.data[:, :, :words].copy_(loaded_weight.narrow(2, rank * words, words))

    return load
