"""Every module is what its name says (issue 20, items 1-2).

A linear module computes x W^T + b and nothing else: GELU and residual adds run in the
blocks, so forward hooks, PEFT adapters and torchao see and replace exactly a linear map.
The fused oneDNN epilogue still runs where nothing can tell (layers.epilogue_is_unobservable).
"""

import copy

import peft
import pytest
import torch
import torch.nn.functional as F
from helpers.random_weights import randomize_
from torch.utils._pytree import tree_leaves

import roberta_torch
from roberta_torch import dense, dispatch, layers

TINY = dict(vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24,
            max_sequence_length=20)
ATTENTION_PROJECTIONS = ("query", "key", "value", "output")


def backbone(seed=0, dropout=0.0):
    return randomize_(roberta_torch.RobertaBackbone(**TINY, dropout=dropout), seed=seed).eval()


def batch(seed=0, lengths=(12, 7, 3), seq=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY["vocabulary_size"], (len(lengths), seq), generator=g)
    mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    return {"token_ids": torch.where(mask, ids, torch.ones_like(ids)), "padding_mask": mask}


def mlm_batch():
    return {**batch(), "mask_positions": torch.tensor([[1, 4], [2, 5], [1, 2]])}


MODELS = {
    "backbone": (lambda: backbone(), batch),
    "text_classifier": (lambda: roberta_torch.RobertaTextClassifier(backbone(), num_classes=3), batch),
    "masked_lm": (lambda: roberta_torch.RobertaMaskedLM(backbone()), mlm_batch),
    "token_classifier": (lambda: roberta_torch.RobertaTokenClassifier(backbone(), num_classes=4), batch),
    "question_answerer": (lambda: roberta_torch.RobertaQuestionAnswerer(backbone()), batch),
}


def build(name, seed=1):
    make, inputs = MODELS[name]
    return randomize_(make(), seed=seed).eval(), inputs()


def outputs(model, inputs):
    return torch.cat([t.reshape(-1) for t in tree_leaves(model(inputs)) if isinstance(t, torch.Tensor)])


def relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# -- the modules -----------------------------------------------------------------------------


def test_attention_has_the_projections_peft_and_transformers_name():
    attention = backbone().layers[0].attention
    for name in ATTENTION_PROJECTIONS:
        assert type(getattr(attention, name)) is layers.Linear
        assert getattr(attention, name).weight.shape == (16, 16)
    assert not hasattr(attention, "qkv")
    assert layers.Linear.forward.__code__.co_argcount == 2  # forward(self, x): nothing else


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_hooks_on_every_linear_see_exactly_the_linear_map(name, mode):
    model, inputs = build(name)
    model.train(mode == "train")
    seen = []

    def check(module, args, output):
        seen.append(type(module).__name__)
        torch.testing.assert_close(output, F.linear(args[0], module.weight, module.bias), rtol=1e-6, atol=1e-6)

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(check) for m in linears]
    with dispatch.override(dense_epilogue="fused"), torch.no_grad():
        hooked = outputs(model, inputs)
    for handle in handles:
        handle.remove()
    assert len(seen) == len(linears) >= 2 * 6  # 6 linears per encoder layer, heads on top
    if mode == "eval":  # without hooks the fused epilogue runs, to the same outputs
        with dispatch.override(dense_epilogue="fused"), torch.no_grad(), dense.record_paths() as paths:
            fused = outputs(model, inputs)
        assert ("fused", torch.float32) in paths
        assert relative_error(fused, hooked) < 1e-5


def test_a_hook_that_replaces_the_output_is_honoured():
    model, inputs = build("backbone")
    intermediate = model.layers[1].feedforward.intermediate
    with torch.no_grad():
        before = model(inputs)
        handle = intermediate.register_forward_hook(lambda m, args, y: y * 0.5)
        halved = model(inputs)
        handle.remove()
        # The same function, by hand: gelu applies to the hook's output.
        reference = copy.deepcopy(model)
        reference.layers[1].feedforward.intermediate.weight.mul_(0.5)
        reference.layers[1].feedforward.intermediate.bias.mul_(0.5)
        expected = reference(inputs)
    assert relative_error(halved, before) > 1e-3
    torch.testing.assert_close(halved, expected, rtol=1e-5, atol=1e-6)


def test_global_hooks_and_parametrizations_turn_the_fused_epilogue_off():
    model, _ = build("backbone")
    linear = model.layers[0].feedforward.intermediate
    assert layers.epilogue_is_unobservable(linear)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, y: None)
    try:
        assert not layers.epilogue_is_unobservable(linear)
    finally:
        handle.remove()
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", torch.nn.Identity())
    assert not layers.epilogue_is_unobservable(linear)


# -- PEFT LoRA -------------------------------------------------------------------------------


def lora_model(model, target_modules, seed=5):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, lora_dropout=0.0)
    wrapped = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # lora_B starts at zero: make the adapters do something
        for param_name, param in wrapped.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return wrapped.eval()


def hand_merged(model, wrapped):
    """`model` with W + scale * B A on every adapted linear, computed here (not by PEFT)."""
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    count = 0
    for name, module in wrapped.base_model.model.named_modules():
        if isinstance(module, peft.tuners.lora.Linear):
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            with torch.no_grad():
                modules[name].weight.add_(delta)
            count += 1
    return merged, count


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("targets", ["all-linear", ("query", "value")])
def test_lora_merge_equals_unmerged_and_the_hand_merged_model(name, targets):
    model, inputs = build(name)
    original = copy.deepcopy(model)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    with torch.no_grad():
        base = outputs(model, inputs)
    wrapped = lora_model(model, list(targets) if isinstance(targets, tuple) else targets)
    reference, adapted = hand_merged(original, wrapped)
    # ["query", "value"]: two per layer; "all-linear": every linear, the heads' included.
    assert adapted == (2 * 2 if isinstance(targets, tuple) else linears)
    with torch.no_grad():
        unmerged = outputs(wrapped, inputs)
        expected = outputs(reference, inputs)
        merged = outputs(wrapped.merge_and_unload(), inputs)
    assert relative_error(unmerged, base) > 1e-3  # the adapters change the outputs
    assert relative_error(unmerged, expected) < 1e-5
    assert relative_error(merged, unmerged) < 1e-5


# -- torchao ---------------------------------------------------------------------------------


def test_torchao_weight_only_int8_runs_and_matches_the_dequantized_model():
    quantization = pytest.importorskip("torchao.quantization")
    model, inputs = build("backbone")
    quantized = copy.deepcopy(model)
    quantization.quantize_(quantized, quantization.Int8WeightOnlyConfig())
    weight = quantized.layers[0].feedforward.intermediate.weight
    assert type(weight) is not torch.nn.Parameter and not layers.epilogue_is_unobservable(
        quantized.layers[0].feedforward.intermediate)
    dequantized = copy.deepcopy(model)
    with torch.no_grad():
        for (name, module), ao in zip(dequantized.named_modules(), quantized.modules()):
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(ao.weight.dequantize())
        actual, expected = quantized(inputs), dequantized(inputs)
    assert relative_error(actual, expected) < 1e-2  # int8 activations are not involved: weights only
