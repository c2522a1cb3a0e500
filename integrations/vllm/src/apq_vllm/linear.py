"""APQLinearMethod: a vLLM linear layer whose weight is apq_torch's packed planes, row sums,
scales and offsets (the checkpoint's tensors, sharded as vLLM asks), computed by
``torch.ops.apq.linear``.

Tensor parallelism. Activations are quantized per token over the whole row (K); the codes,
and so the outputs, must be the ones one device (and transformers) computes, whatever the
tensor parallel size. Hence every rank computes whole dot products:
- column-parallel layers (and merged ones: qkv, gate_up) take this rank's output rows N: planes
  along dim 1, row sums / scales / offsets along dim 0, through vLLM's own weight loaders
  (they know the q/k/v offsets and kv-head replication);
- row-parallel layers (o_proj, down_proj) would split K, which would change the activation
  codes (a scale per shard) or the float summation (partial sums added across ranks). This
  method instead gathers the input row, computes this rank's N / tp output rows over the whole
  K, and leaves zeros elsewhere. vLLM's RowParallelLinear all-reduces (sums) the ranks' outputs
  when tp > 1, which assembles the output exactly (x + 0 == x); with reduce_results=False its
  caller sums them later, which these zeros satisfy just as well. Any group_size works; N must
  divide by the tensor parallel size. The price, over a K-split layer: one all-gather of the
  layer's input (tokens x K) per row-parallel layer, and an all-reduce of tokens x N that is
  (tp - 1) / tp zeros (the same all-reduce a K-split layer needs). Weight memory and multiply
  work per rank are unchanged (N / tp rows of K).
So outputs are bit-identical across tensor parallel sizes.
"""

from __future__ import annotations

import torch
from torch.nn import Parameter
from vllm.distributed import tensor_model_parallel_all_gather
from vllm.model_executor.layers.linear import LinearMethodBase
from vllm.model_executor.utils import set_weight_attrs

from apq_torch import APQConfig, APQLinear, ops
from apq_torch.api.linear import activation_clip


class APQLinearMethod(LinearMethodBase):
    """Holds ``w_planes`` [w_bits, N, words], ``w_rowsum`` / ``w_scale`` / ``w_offset`` [N, G]
    (APQLinear's buffers, as vLLM parameters of this rank's output rows) and runs ``apq::linear``."""

    def __init__(self, config: APQConfig, prefix: str = ""):
        self.config, self.prefix = config, prefix

    def create_weights(self, layer: torch.nn.Module, input_size_per_partition: int, output_partition_sizes: list[int],
                       input_size: int, output_size: int, params_dtype: torch.dtype, **extra_weight_attrs):
        weight_loader = extra_weight_attrs.pop("weight_loader")
        rows = sum(output_partition_sizes)
        gather = input_size_per_partition != input_size  # a row-parallel layer: rank computes N / tp rows instead
        if gather:
            rows = n_shard_rows(self.prefix, output_size, layer.tp_size)
        layer.apq_K, layer.apq_gather = input_size, gather
        for name, (shape, dtype) in APQLinear.buffer_specs(input_size, rows, self.config).items():
            param = Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
            row_dim = 1 if name == "w_planes" else 0
            if gather:
                attrs = {"weight_loader": _rows_loader(row_dim, layer.tp_rank * rows, rows)}
            else:
                attrs = {"output_dim": row_dim, "weight_loader": weight_loader}
            layer.register_parameter(name, param)
            set_weight_attrs(param, {**attrs, **extra_weight_attrs})

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        pass  # the kernels read the checkpoint's layout as loaded: nothing is repacked or deleted

    def apply(self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if not layer.apq_gather:
            return ops.linear(x, layer.w_planes, layer.w_rowsum, layer.w_scale, layer.w_offset, layer.apq_K,
                              c.group_size, c.a_bits, c.a_format, bias, a_clip=activation_clip(c))
        # Row-parallel: vLLM passes the (whole) bias to rank 0 only, for a partial sum, and none
        # with skip_bias_add (it returns the bias to the caller). Here each rank owns whole
        # outputs, so it adds its own rows' bias, in the kernel as one device does.
        rows = layer.w_planes.shape[1]
        mine = slice(layer.tp_rank * rows, (layer.tp_rank + 1) * rows)
        own_bias = None if layer.bias is None or layer.skip_bias_add else layer.bias[mine]
        row = tensor_model_parallel_all_gather(x.contiguous(), dim=-1)
        y = ops.linear(row, layer.w_planes, layer.w_rowsum, layer.w_scale, layer.w_offset, layer.apq_K,
                       c.group_size, c.a_bits, c.a_format, own_bias, a_clip=activation_clip(c))
        out = y.new_zeros(*y.shape[:-1], rows * layer.tp_size)
        out[..., mine] = y
        return out


def n_shard_rows(prefix: str, N: int, tp_size: int) -> int:
    """Output rows per rank of a row-parallel layer (N / tp), or a clear error."""
    if N % tp_size:
        raise ValueError(f"apq: row-parallel layer {prefix!r} has {N} outputs, which do not divide into "
                         f"tensor_parallel_size={tp_size} equal parts (each rank computes N / tp whole outputs)")
    return N // tp_size


def _rows_loader(dim: int, start: int, rows: int):
    """Weight loader taking rows [start, start + rows) along ``dim`` of a full checkpoint tensor."""

    def load(param: Parameter, loaded_weight: torch.Tensor) -> None:
        fits = loaded_weight.dim() == param.dim() and loaded_weight.shape[dim] >= start + rows
        if not fits or loaded_weight.narrow(dim, start, rows).shape != param.shape:
            raise ValueError(f"apq: checkpoint tensor {list(loaded_weight.shape)} does not hold rows "
                             f"[{start}, {start + rows}) of a {list(param.shape)} shard")
        param.data.copy_(loaded_weight.narrow(dim, start, rows))

    return load
