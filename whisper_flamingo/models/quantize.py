"""Int8 CPU inference: linear layers with int8 weights and per-row dynamic int8 activations.

:class:`Int8Linear` keeps a linear layer's weight as int8 with one scale per output channel and, at
each call, quantises every input row (token) with its own scale (absmax / 127), multiplies in int8
with int32 accumulation (``torch._int_mm``: oneDNN's VNNI kernels on x86 CPUs) and rescales.  One
scale per row, not one per tensor (what ``torch.ao.quantization.quantize_dynamic`` does), is what
keeps Whisper's encoder usable in int8: its activations hold rows of very different magnitude, and a
per-tensor scale flattens the quiet rows to a few levels (measured on tiny.en: the encoder under
``quantize_dynamic`` raised the synthetic benchmark set's WER from 28.8 to 83.7 %).  Rows are
quantised independently, so a row's output does not depend on the rest of its batch.

:func:`quantize_int8` swaps every ``nn.Linear`` of a model for an :class:`Int8Linear` and gives a
Whisper text decoder an int8 copy of its tied output projection (the vocabulary matrix, the largest
matrix multiply of a decoding step).  Convolutions, embeddings, attention products and LayerNorms stay
float32.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from whisper_flamingo.models.whisper import TextDecoder

log = logging.getLogger(__name__)

_QMAX = 127.0


def _quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(int8 rows, float32 scales (R, 1))`` of a float matrix ``x (R, K)``: symmetric, absmax per row."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(_QMAX)
    return torch.round(x / scale).clamp_(-_QMAX, _QMAX).to(torch.int8), scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` in int8 (per output channel) and ``x`` quantised per row at run time."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        w = weight.detach().float()
        self.in_features, self.out_features = int(w.shape[1]), int(w.shape[0])
        q, scale = _quantize_rows(w)
        # (K, N) contiguous: the layout torch._int_mm takes as its second operand
        self.register_buffer("weight_int8", q.t().contiguous())
        self.register_buffer("weight_scale", scale.reshape(1, -1))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        if rows.shape[0] == 0:
            return x.new_zeros(*shape[:-1], self.out_features)
        q, scale = _quantize_rows(rows)
        y = torch._int_mm(q, self.weight_int8).float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)


def int8_supported() -> bool:
    """Whether this PyTorch build multiplies int8 matrices on the CPU (``torch._int_mm``)."""
    try:
        a = torch.ones(2, 8, dtype=torch.int8)
        return bool(torch._int_mm(a, a.t().contiguous()).sum() == 32)
    except (RuntimeError, AttributeError):
        return False


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace (in place) every ``nn.Linear`` by :class:`Int8Linear` and give every Whisper text decoder
    an int8 output projection (``output_projection``); returns ``model`` in eval mode.  CPU only."""
    if not int8_supported():
        raise RuntimeError("this PyTorch build has no CPU int8 matrix multiply (torch._int_mm); "
                           "run without int8 quantisation")
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear.from_linear(child))
                swapped += 1
        if isinstance(parent, TextDecoder):
            parent.output_projection = Int8Linear(parent.token_embedding.weight)
    log.info("int8: %d linear layers quantised (int8 weights per channel, int8 activations per row)", swapped)
    return model.eval()


__all__ = ["Int8Linear", "quantize_int8", "int8_supported"]
