"""The one switch/override mechanism and recorder for every backend decision
(roberta_torch/dispatch.py): override order, environment spellings, the recorder seeing
attention and dense decisions, and no graph break under fullgraph compile."""

import logging

import pytest
import torch
from torch._dynamo.utils import counters

from helpers.random_weights import randomize_
from helpers.subprocesses import run_python
from roberta_torch import RobertaBackbone, attention, cpu_choice, dense, dispatch, int8_kernels  # noqa: F401 (declares int8_kernel)

TINY = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=16)


@pytest.fixture(autouse=True)
def restore_defaults():
    """Every test leaves the process defaults as it found them."""
    saved = {name: dispatch.get_default(name) for name in dispatch.points()}
    yield
    for name, choice in saved.items():
        dispatch.set_default(name, choice)


def tiny(**kwargs):
    return randomize_(RobertaBackbone(**{**TINY, **kwargs}), seed=0).eval()


def batch(lengths=(11, 4, 7), seq=11):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, TINY["vocabulary_size"], (len(lengths), seq), generator=g)
    mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    return {"token_ids": ids, "padding_mask": mask}


def test_points_declared_by_the_modules_that_decide():
    points = dispatch.points()
    assert points["attention"].choices == ("auto", "triton", "sdpa")
    assert points["attention"].env_var == "ROBERTA_TORCH_ATTENTION"
    assert points["packed_sdpa"].choices == ("auto", "per_sequence", "repadded")
    assert points["dense_epilogue"].choices == ("auto", "fused", "plain", "fused_padded", "plain_padded")
    assert points["dense_epilogue"].env_var == "ROBERTA_TORCH_ONEDNN"
    assert points["int8_kernel"].choices == ("auto", "onednn", "fbgemm", "qlinear", "qnnpack")
    assert points["int8_kernel"].env_var == "ROBERTA_TORCH_INT8_KERNEL"


def test_override_order_call_model_scope_default():
    """call > model > scoped override (innermost) > process default > environment."""
    dispatch.set_default("attention", "triton")
    assert dispatch.requested("attention") == ("triton", "dispatch.set_default")
    with dispatch.override(attention="sdpa"):
        assert dispatch.requested("attention")[0] == "sdpa"
        with dispatch.override(attention="auto"):
            assert dispatch.requested("attention")[0] == "auto"  # the innermost block wins
        assert dispatch.requested("attention")[0] == "sdpa"
        assert dispatch.requested("attention", model="triton")[0] == "triton"  # model > scope
        assert dispatch.requested("attention", call="auto", model="triton")[0] == "auto"  # call > model
    assert dispatch.requested("attention")[0] == "triton"
    assert dispatch.set_default("attention", "auto") == "triton"  # returns the previous default


def test_override_order_reaches_the_model():
    """The model's `attention_backend`, a scoped override and the default, seen by the recorder."""
    model = tiny(padding_free=False)
    inputs = {"token_ids": batch()["token_ids"]}

    def backends(net):
        with torch.no_grad(), dispatch.record("attention") as decisions:
            net(inputs)
        return {(d.choice, d.why) for d in decisions}

    dispatch.set_default("attention", "sdpa")
    assert backends(model) == {("sdpa", "dispatch.set_default")}
    with dispatch.override(attention="auto"):
        assert backends(model) == {("sdpa", "auto: not a CUDA tensor")}
        model.attention_backend = "sdpa"
        assert backends(model) == {("sdpa", "the `backend` argument (the model's `attention_backend`)")}  # the model beats the scope
    with pytest.raises(ValueError, match="attention_backend"):
        model.attention_backend = "flash"


def test_scoped_overrides_close_out_of_order():
    first, second = dispatch.override(attention="sdpa"), dispatch.override(attention="triton")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the outer block closes first (e.g. generators)
    assert dispatch.requested("attention")[0] == "triton"
    second.__exit__(None, None, None)
    assert dispatch.requested("attention")[0] == dispatch.get_default("attention")


def test_bad_names_and_choices_name_the_source():
    with pytest.raises(ValueError, match="dispatch.override"):
        with dispatch.override(attention="flash"):
            pass
    with pytest.raises(ValueError, match="Unknown decision point 'attn'"):
        with dispatch.override(attn="sdpa"):
            pass
    with pytest.raises(ValueError, match="set_onednn_enabled|dispatch.set_default"):
        dispatch.set_default("dense_epilogue", "onednn")
    with pytest.raises(ValueError, match="the `backend` argument"):
        dispatch.requested("attention", call="flash")
    with pytest.raises(ValueError, match="already declared"):
        dispatch.declare("attention", ("auto", "other"))


@pytest.mark.parametrize(
    "raw, expected",
    [
        *[(v, "plain") for v in ("0", "false", "off", "no", "FALSE", " Off ")],
        *[(v, "auto") for v in ("1", "true", "on", "yes", "True", "YES")],
        ("fused", "fused"),
        ("Plain", "plain"),
        ("", "auto"),
    ],
)
def test_switch_spellings_of_the_onednn_variable(monkeypatch, raw, expected):
    monkeypatch.setenv("ROBERTA_TORCH_ONEDNN", raw)
    assert dispatch._from_environment(dispatch.points()["dense_epilogue"])[0] == expected


def test_a_bad_environment_value_logs_and_keeps_the_default(monkeypatch, caplog):
    monkeypatch.setenv("ROBERTA_TORCH_ONEDNN", "maybe")
    monkeypatch.setenv("ROBERTA_TORCH_ATTENTION", "1")  # attention has no on/off switch
    with caplog.at_level(logging.WARNING, logger="roberta_torch.dispatch"):
        assert dispatch._from_environment(dispatch.points()["dense_epilogue"])[0] == "auto"
        assert dispatch._from_environment(dispatch.points()["attention"])[0] == "auto"
    assert len(caplog.records) == 2
    assert "ROBERTA_TORCH_ONEDNN" in caplog.records[0].getMessage()


def test_environment_is_read_once_at_import():
    """Both variables, in fresh interpreters: ROBERTA_TORCH_ONEDNN=false disables the fused
    path, a bad value keeps "auto", and changing the environment later changes nothing."""
    script = (
        "import os, torch, roberta_torch; from roberta_torch import attention, dense;"
        "os.environ.update(ROBERTA_TORCH_ONEDNN='1', ROBERTA_TORCH_ATTENTION='triton');"
        "x, w = torch.randn(2, 4), torch.randn(3, 4); torch.set_grad_enabled(False);"
        "print(attention.default_backend(), attention.requested_backend(), *dense.epilogue_path(x, w))"
    )
    disabled = run_python(script, {"ROBERTA_TORCH_ONEDNN": "false", "ROBERTA_TORCH_ATTENTION": "SDPA"})
    assert disabled.split() == ["sdpa", "sdpa", "plain", "$ROBERTA_TORCH_ONEDNN"]
    bad = run_python(script, {"ROBERTA_TORCH_ONEDNN": "maybe", "ROBERTA_TORCH_ATTENTION": "flash"})
    # "auto" measures where oneDNN runs (the winner depends on the machine).
    assert bad.split()[:2] == ["auto", "auto"] and bad.split()[2] in ("fused", "plain")
    assert bad.split()[3] == ("measured:" if dense.ONEDNN_AVAILABLE else "this")


def test_legacy_switches_are_the_same_state():
    assert dense.set_onednn_enabled(False) is True
    assert dispatch.get_default("dense_epilogue") == "plain"
    assert dense.set_onednn_enabled(True) is False
    assert dispatch.get_default("dense_epilogue") == "auto"
    assert attention.set_default_backend("sdpa") == "auto"
    assert dispatch.get_default("attention") == "sdpa" == attention.default_backend()


def test_one_recorder_sees_attention_and_dense_decisions():
    model = tiny()
    fused_twice_as_fast = {"plain": 2.0, "fused": 1.0}  # deterministic "measured" choice
    with cpu_choice.use_timer(lambda point, key, name, run: fused_twice_as_fast[name]), torch.no_grad():
        with dispatch.record() as decisions, attention.record_dispatch() as calls, dense.record_paths() as paths:
            model(batch())  # 36 % padding: padding-free
    by_point = {}
    for decision in decisions:
        by_point.setdefault(decision.point, []).append(decision)
    assert [(d.choice, d.case) for d in by_point["attention"]] == [("sdpa", "packed")] * 2 == calls
    assert {(d.choice, d.why) for d in by_point["packed_sdpa"]} == {("per_sequence", "auto: eager")}
    expected_dense = "fused" if torch.float32 in dense.FUSED_DTYPES else "plain"
    assert [(d.choice, d.case) for d in by_point["dense_epilogue"]] == [(expected_dense, torch.float32)] * 12 == paths  # 6 dense layers x 2
    if dense.ONEDNN_AVAILABLE:
        assert {d.why for d in by_point["dense_epilogue"]} == {"measured: fused 2.00x"}
    # A scoped override reaches the dense point, with its source as the reason.
    with torch.no_grad(), dispatch.override(dense_epilogue="plain"), dispatch.record("dense_epilogue") as plain:
        model(batch())
    assert {(d.choice, d.why) for d in plain} == {("plain", "dispatch.override")}


def test_forced_packed_sdpa_ways_agree_in_eager():
    model = tiny()
    inputs, valid = batch(), batch()["padding_mask"]
    outputs = {}
    for way in ("per_sequence", "repadded"):
        with torch.no_grad(), dispatch.override(packed_sdpa=way), dispatch.record("packed_sdpa") as decisions:
            outputs[way] = model(inputs)
        assert {d.choice for d in decisions} == {way}
    torch.testing.assert_close(outputs["repadded"][valid], outputs["per_sequence"][valid], rtol=1e-5, atol=1e-6)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_fullgraph_compile_with_recorder_inactive_and_an_override(fresh_dynamo):
    """Decisions are Python state read while tracing: no graph break, recorder off or on."""
    model = tiny(num_layers=1)
    inputs, valid = batch(), batch()["padding_mask"]
    with torch.no_grad():
        expected = model(inputs)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(inputs)
        # The guards see the override and the recorder: one retrace, still one graph.
        with dispatch.override(dense_epilogue="plain", attention="sdpa"), dispatch.record() as decisions:
            overridden = compiled(inputs)
    assert not counters["graph_break"]
    for result in (out, overridden):
        torch.testing.assert_close(result[valid], expected[valid], rtol=1e-5, atol=1e-6)
    assert {(d.point, d.choice, d.why) for d in decisions} == {
        ("attention", "sdpa", "dispatch.override"),
        ("packed_sdpa", "repadded", "auto: traced, no dropout"),
        ("dense_epilogue", "plain", "dispatch.override"),
    }


@pytest.mark.parametrize("way, dropout", [("per_sequence", 0.0), ("repadded", 0.0), ("repadded", 0.2)])
def test_packed_sdpa_overrides_reach_compiled_graphs(fresh_dynamo, way, dropout):
    model = tiny(num_layers=1)
    inputs, valid = batch(), batch()["padding_mask"]
    for layer in model.layers:
        layer.attention.dropout = dropout  # attention-probability dropout only
    model.train(dropout > 0)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad(), dispatch.override(packed_sdpa=way):
        with dispatch.record("packed_sdpa") as decisions:
            out = compiled(inputs)
        expected = model(inputs)
    assert not counters["graph_break"]
    if dropout:
        assert {(d.choice, d.why) for d in decisions} == {
            ("per_sequence", "traced with dropout: the op draws its mask per sequence")
        }
        assert torch.isfinite(out).all()
    else:
        assert {(d.choice, d.why) for d in decisions} == {(way, "dispatch.override")}
        torch.testing.assert_close(out[valid], expected[valid], rtol=1e-5, atol=1e-6)
