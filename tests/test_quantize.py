"""Int8 linear layers (models/quantize.py): exact int8 arithmetic, per-row scales, whole-model swap."""

from __future__ import annotations

import pytest
import torch

from whisper_flamingo.models.quantize import Int8Linear, int8_supported, quantize_int8
from whisper_flamingo.models.whisper import ModelDimensions, Whisper

pytestmark = pytest.mark.skipif(not int8_supported(), reason="this torch build has no CPU torch._int_mm")


def _layer(n_in: int = 64, n_out: int = 48, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out)


def test_int8_product_equals_the_dequantised_product():
    lin = _layer()
    q = Int8Linear.from_linear(lin)
    x = torch.randn(5, 7, 64)
    rows = x.reshape(-1, 64)
    scale = rows.abs().amax(1, keepdim=True) / 127
    deq = torch.round(rows / scale).clamp(-127, 127) * scale  # what the int8 rows stand for
    weight = q.weight_int8.float() * q.weight_scale  # (in, out): the dequantised weight
    expect = (deq @ weight + lin.bias).reshape(5, 7, 48)
    torch.testing.assert_close(q(x), expect, rtol=1e-5, atol=1e-5)
    # and it is close to the float layer: about 1 % relative error for 8 bits on both sides
    ref = lin(x)
    assert float((q(x) - ref).norm() / ref.norm()) < 0.02


def test_scales_are_per_row_so_a_loud_row_does_not_flatten_a_quiet_one():
    lin = _layer()
    q = Int8Linear.from_linear(lin)
    quiet = torch.randn(1, 64) * 0.01
    loud = torch.randn(1, 64) * 100.0
    alone = q(quiet)
    together = q(torch.cat([quiet, loud]))[:1]
    assert torch.equal(alone, together)  # a row's output does not depend on its batch
    ref = lin(quiet) - lin.bias
    assert float((alone - lin.bias - ref).norm() / ref.norm()) < 0.03
    # one scale for the whole tensor (what quantize_dynamic does) would leave the quiet row almost nothing
    scale = torch.cat([quiet, loud]).abs().max() / 127
    assert int(torch.round(quiet / scale).abs().max()) <= 1


def test_quantize_int8_swaps_every_linear_and_the_vocabulary_projection():
    dims = ModelDimensions(n_mels=80, n_audio_ctx=150, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=300, n_text_ctx=32, n_text_state=64, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    model = Whisper(dims).eval()
    mel = torch.randn(2, 80, 300)
    tokens = torch.randint(0, 300, (2, 6))
    with torch.no_grad():
        ref = model(mel, tokens)
        q = quantize_int8(model)
        out = q(mel, tokens)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    assert isinstance(q.decoder.output_projection, Int8Linear)
    assert float((out - ref).norm() / ref.norm()) < 0.05
    assert float((out.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.75


def test_empty_input_and_dtype_are_kept():
    q = Int8Linear.from_linear(_layer())
    assert q(torch.zeros(0, 64)).shape == (0, 48)
    assert q(torch.randn(3, 64, dtype=torch.float64)).dtype == torch.float64
