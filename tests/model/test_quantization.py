"""int8 inference (`quantize("int8")`): every kernel computes the int8 function, the module swap
covers every linear layer, accuracy against float32 (a roberta-base-size model and the
sentence-transformers parity fixtures), padding-free / packed / padded agree, the refusals."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import roberta_torch
from roberta_torch import int8_kernels, quantization
from roberta_torch.quantization import Int8Linear, quantize_
from helpers.random_weights import randomize_
from helpers.subprocesses import run_python

RUNNABLE = [name for name in int8_kernels.KERNELS if int8_kernels.probe(name) is not None]
pytestmark = pytest.mark.skipif(not RUNNABLE, reason="no int8 kernel in this torch build")

TINY = dict(vocabulary_size=80, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=20)


def tiny_backbone(seed=0, cls=roberta_torch.RobertaBackbone):
    return randomize_(cls(**TINY), seed=seed, scale=0.3).eval()


def batch(vocab=80, lengths=(20, 13, 4, 1), seq=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), seq), generator=g)
    mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    return {"token_ids": torch.where(mask, ids, torch.ones_like(ids)), "padding_mask": mask}


def mean_pool(hidden, mask):
    mask = mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def reference_int8(x, layer: Int8Linear, setting):
    """The int8 function in float64 from the layer's own int8 weights and scales, as the
    kernel's setting on this machine runs it (7-bit weights or activations where 8 saturate)."""
    q, w_scale = layer.weight_int8, layer.weight_scale
    if setting.weight_bits == 7:
        q, w_scale = int8_kernels.narrow_weight(q, w_scale)
    scale, zero = int8_kernels.activation_qparams(x, setting.reduce_range)
    qx = int8_kernels.quantize_activation(x, scale, zero, setting.reduce_range)
    dx = (qx.double() - zero.double()) * scale.double()
    return dx @ (q.double() * w_scale.double()[:, None]).t() + layer.bias.double()


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_every_kernel_computes_the_int8_function(kernel):
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(48, 40)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(40, 48, generator=g) * 0.2)
        linear.bias.copy_(torch.randn(40, generator=g))
    x = torch.randn(2, 13, 48, generator=g)
    layer = Int8Linear.from_float(linear, kernel=kernel)
    with torch.no_grad(), int8_kernels.record_kernels() as calls:
        out = layer(x)
    assert calls == [(kernel, 48, 40)] and out.shape == (2, 13, 40) and out.dtype == torch.float32
    setting = int8_kernels.probe(kernel)
    expected = reference_int8(x.reshape(-1, 48), layer, setting).reshape(2, 13, 40)
    assert (out.double() - expected).abs().max() / expected.abs().max() < 1e-5
    exact = F.linear(x, linear.weight, linear.bias).detach()
    assert 1e-4 < (out - exact).norm() / exact.norm() < 0.03  # quantized, and close


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_epilogue_call_signature_and_dtypes(kernel):
    """layers.Linear's fused-epilogue call works on the int8 layer: GELU or the residual add
    on the int8 product (fused by the kernel where it can); any float input dtype, output in
    that dtype."""
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(32, 32)
    layer = Int8Linear.from_float(linear, kernel=kernel)
    x, residual = torch.randn(2, 5, 32, generator=g) * 3, torch.randn(2, 5, 32, generator=g)
    with torch.no_grad():
        plain = layer(x)
        torch.testing.assert_close(layer(x, activation="gelu"), F.gelu(plain), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x, residual=residual), plain + residual, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x, residual=residual.transpose(0, 1).contiguous().transpose(0, 1)),
                                   plain + residual, atol=1e-5, rtol=1e-5)  # a strided residual
        low = layer(x.bfloat16(), residual=residual.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain + residual, atol=0.05, rtol=0.02)
    with pytest.raises(ValueError, match="activation"), torch.no_grad():
        layer(x, activation="relu")
    with pytest.raises(ValueError, match="last dimension"), torch.no_grad():
        layer(torch.randn(3, 31))
    with pytest.raises(ValueError, match="residual"), torch.no_grad():
        layer(x, residual=residual[:, :3])


def linear_names(model):
    return sorted(name for name, m in model.named_modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("task", ["backbone", "RobertaTextClassifier", "RobertaTokenClassifier",
                                  "RobertaQuestionAnswerer", "RobertaMaskedLM", "XLMRobertaTextClassifier"])
def test_quantize_swaps_every_linear_and_stays_close(task):
    xlm = task.startswith("XLM")
    backbone = tiny_backbone(cls=roberta_torch.XLMRobertaBackbone if xlm else roberta_torch.RobertaBackbone)
    if task == "backbone":
        model = backbone
    else:
        kwargs = {"num_classes": 3} if "Classifier" in task else {}
        model = randomize_(getattr(roberta_torch, task)(backbone, **kwargs), seed=3, scale=0.3).eval()
    inputs = batch()
    with torch.no_grad():
        expected = model(inputs)
    before = linear_names(model)
    assert before  # the swap has something to do
    assert model.quantize("int8") is model
    assert linear_names(model) == []
    assert sorted(n for n, m in model.named_modules() if isinstance(m, Int8Linear)) == before
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        actual = model(inputs)
    pairs = zip(expected, actual) if isinstance(expected, tuple) else [(expected, actual)]
    for e, a in pairs:
        error = float((a - e).norm() / e.norm())
        assert 0 < error < 0.05, error


def test_roberta_base_size_accuracy():
    """Mean-pooled cosine >= 0.999 against float32 on a 12-layer roberta-base-size model
    (keras' 0.02 scale for weights and biases, random LayerNorm parameters); the
    classifier logits' relative error is reported in the assertion message."""
    backbone = roberta_torch.RobertaBackbone(vocabulary_size=1000, num_layers=12, num_heads=12, hidden_dim=768,
                                             intermediate_dim=3072, max_sequence_length=64, device="meta")
    backbone.to_empty(device="cpu")  # skips the slow truncated-normal init of 85M weights
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if "layer_norm" in name else 0.02))
    torch.manual_seed(0)  # the head's initializer draws from the global RNG
    model = roberta_torch.RobertaTextClassifier(backbone, num_classes=4).eval()
    inputs = batch(vocab=1000, lengths=(64, 40, 17, 5), seq=64)

    def hidden_and_logits():
        hidden = []
        hook = backbone.register_forward_hook(lambda module, args, output: hidden.append(output))
        with torch.no_grad():
            logits = model(inputs)
        hook.remove()
        return hidden[0], logits

    hidden32, logits32 = hidden_and_logits()
    model.quantize("int8")
    hidden8, logits8 = hidden_and_logits()
    mask = inputs["padding_mask"]
    cosine = F.cosine_similarity(mean_pool(hidden8, mask), mean_pool(hidden32, mask)).min()
    logits_error = float((logits8 - logits32).norm() / logits32.norm())
    assert cosine >= 0.999, f"cosine {cosine:.5f}, logits relative error {logits_error:.4f}"
    assert logits_error < 0.05, f"logits relative error {logits_error:.4f}"


def test_padding_free_and_packed_equal_padded():
    """Padding-free and packed inputs run the dense layers on the same tokens: identical. The
    padded path also quantizes the padding tokens' activations (per-tensor scales see them),
    so it agrees to int8 noise, as ONNX Runtime's int8 does between batchings."""
    model = tiny_backbone().quantize("int8")
    inputs = batch()
    with torch.no_grad():
        model.padding_free = True
        free = model(inputs)
        packed = model(roberta_torch.pack_padded_batch(inputs))
        model.padding_free = False
        padded = model(inputs)
    mask = inputs["padding_mask"]
    torch.testing.assert_close(packed, free[mask], atol=1e-6, rtol=0)
    assert F.cosine_similarity(mean_pool(padded, mask), mean_pool(free, mask)).min() > 0.999


def test_text_embedder_quantize_on_sentence_transformers_fixtures(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir

    directory = sentence_transformers_dir(tmp_path, "roberta", pooling="mean", normalize=True)
    expected = st.SentenceTransformer(str(directory), device="cpu").encode(TEXTS)
    embedder = roberta_torch.TextEmbedder.from_preset(str(directory))
    assert embedder.quantize("int8") is embedder
    actual = embedder.encode(TEXTS)
    cosine = (actual * expected).sum(1)  # both normalized
    assert cosine.min() >= 0.999 and np.abs(actual - expected).max() > 1e-5  # close, and really int8
    with pytest.raises(ValueError, match="int8-quantized"):
        embedder.save_to_preset(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_save_to_preset_refuses_and_state_dict_round_trips(tmp_path):
    model = tiny_backbone(seed=0).quantize("int8")
    with pytest.raises(ValueError, match="int8-quantized.*quantize\\('int8'\\) after loading"):
        model.save_to_preset(tmp_path / "backbone")
    classifier = roberta_torch.RobertaTextClassifier(tiny_backbone(), num_classes=2).quantize("int8")
    with pytest.raises(ValueError, match="int8-quantized"):
        classifier.save_to_preset(tmp_path / "task")
    assert not any(tmp_path.iterdir())

    inputs = batch()
    with torch.no_grad():
        expected = model(inputs)
    torch.save(model.state_dict(), tmp_path / "int8.pt")
    state = torch.load(tmp_path / "int8.pt", weights_only=True)
    assert state["layers.0.attention.query.weight_int8"].dtype == torch.int8
    other = tiny_backbone(seed=5).quantize("int8")  # different weights until loaded
    with torch.no_grad():
        assert not torch.equal(other(inputs), expected)
        other.load_state_dict(state)
        torch.testing.assert_close(other(inputs), expected, atol=0, rtol=0)  # repacked after the load
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            torch.testing.assert_close(clone(inputs), expected, atol=0, rtol=0)


def test_training_gradients_and_devices_refuse():
    model = tiny_backbone().quantize("int8")
    inputs = batch()
    model.train()
    with pytest.raises(RuntimeError, match="inference-only.*model.eval"):
        model(inputs)
    model.eval()
    model(inputs)  # grad mode on, nothing requires grad (quantize froze the parameters): fine
    model.token_embedding.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="no gradient"):
        model(inputs)
    layer = Int8Linear.from_float(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="CPU only.*meta"):
        layer(torch.empty(2, 8, device="meta"))
    with pytest.raises(ValueError, match="CPU only"):
        quantize_(tiny_backbone().to("meta"))


def test_mode_and_kernel_validation():
    model = tiny_backbone()
    for mode in ("int4", "float8"):
        with pytest.raises(ValueError, match="not supported by roberta_torch"):
            model.quantize(mode)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        model.quantize("int16")
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        model.quantize("int8", kernel="mkl")
    with pytest.raises(TypeError, match="Int8Linear.from_float"):
        quantize_(nn.Linear(4, 4))
    assert linear_names(model)  # nothing was changed by the refused calls


def test_forced_kernel_that_cannot_run_is_refused():
    missing = [name for name in int8_kernels.KERNELS if name not in RUNNABLE]
    if not missing:
        pytest.skip("every int8 kernel runs here")
    with pytest.raises(ValueError, match="does not run correctly on this machine.*kernels that do"):
        Int8Linear.from_float(nn.Linear(8, 4), kernel=missing[0])


def test_auto_choice_is_cached_timed_and_overridable():
    int8_kernels.forget_choices()
    Int8Linear.from_float(nn.Linear(24, 40))
    Int8Linear.from_float(nn.Linear(24, 40))
    timed = [c for c in int8_kernels.choices() if c[:2] == (24, 40)]
    assert len(timed) == 1 and timed[0][3].kernel in RUNNABLE  # one timing per shape, a runnable kernel
    forced = RUNNABLE[-1]
    previous = int8_kernels.set_default_kernel(forced)
    try:
        layer = Int8Linear.from_float(nn.Linear(24, 40))
        with torch.no_grad(), int8_kernels.record_kernels() as calls:
            layer(torch.randn(3, 24))
        assert calls == [(forced, 24, 40)]
    finally:
        int8_kernels.set_default_kernel(previous)


def test_saturating_kernels_fall_back_to_7_bit_activations():
    """With every library capped to AVX2 (no VNNI), u8 x s8 products saturate in 16 bits: the
    probe sees it and the kernels get 7-bit weights (not 7-bit activations), staying accurate."""
    script = """
import torch, torch.nn as nn
from roberta_torch import int8_kernels
from roberta_torch.quantization import Int8Linear
settings = {n: int8_kernels.probe(n) for n in int8_kernels.KERNELS}
g = torch.Generator().manual_seed(0)
linear = nn.Linear(256, 64)
with torch.no_grad():
    linear.weight.copy_(torch.rand(64, 256, generator=g) * 0.1)  # same-sign weights: worst case
x = torch.rand(32, 256, generator=g) + 0.5
exact = linear(x).detach()
for name, setting in settings.items():
    if setting is not None:
        with torch.no_grad():
            out = Int8Linear.from_float(linear, kernel=name)(x)
        print(name, setting.weight_bits, setting.reduce_range, float((out - exact).norm() / exact.norm()))
"""
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
           "ATEN_CPU_CAPABILITY": "avx2"}
    lines = [line.split() for line in run_python(script, env).strip().splitlines()]
    assert lines, "no int8 kernel ran under the AVX2 caps"
    for name, weight_bits, reduce_range, error in lines:
        assert float(error) < 0.01, (name, weight_bits, reduce_range, error)
    # Native, these kernels do not saturate (VNNI / AMX) or saturate the same way; capped to
    # AVX2 at least one needs the narrowed weights, and none falls back to 7-bit activations.
    assert any(weight_bits == "7" for _, weight_bits, _, _ in lines) or not int8_kernels.probe("fbgemm")
    assert all(reduce_range == "False" for _, _, reduce_range, _ in lines)
