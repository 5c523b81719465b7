"""Choosing CPU paths by measurement (roberta_torch/cpu_choice.py) and `from_preset(quantize=)`.

The chooser is made deterministic with injected timings; candidates are compared against the
plain path on fresh random weights (biases and LayerNorm parameters included)."""

import json

import numpy as np
import pytest
import torch

import roberta_torch
from roberta_torch import cpu_choice, dense, dispatch, int8_kernels, quantization
from helpers.random_weights import randomize_

TINY = dict(vocabulary_size=80, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=20)
INT8 = any(int8_kernels.probe(name) is not None for name in int8_kernels.KERNELS)
needs_int8 = pytest.mark.skipif(not INT8, reason="no int8 kernel in this torch build")


def batch(lengths=(20, 13, 4), seq=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 80, (len(lengths), seq), generator=g)
    mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    return {"token_ids": torch.where(mask, ids, torch.ones_like(ids)), "padding_mask": mask}


@pytest.fixture(scope="module")
def backbone_preset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("preset") / "tiny"
    randomize_(roberta_torch.RobertaBackbone(**TINY), seed=0, scale=0.3).save_to_preset(directory, "safetensors")
    return directory


needs_onednn = pytest.mark.skipif(not dense.ONEDNN_AVAILABLE, reason="torch built without oneDNN")
PATHS = dense.EPILOGUE_PATHS[1:]
OPS = {"linear": {}, "linear+gelu": {"activation": "gelu"}, "linear+add": {"residual": True}}


def operands(dtype, rows=(2, 13), in_features=48, out_features=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*rows, in_features, generator=g)
    weight = torch.randn(out_features, in_features, generator=g) * 0.2
    bias = torch.randn(out_features, generator=g)
    residual = torch.randn(*rows, out_features, generator=g)
    return [t.to(dtype) for t in (x, weight, bias, residual)]


def raise_if_timed(point, key, name, run):
    raise AssertionError(f"{point} {key}: measured, but must not be")


def fake_timer(seconds: dict):
    """A timer giving each candidate fixed seconds (ignoring the key), counting its calls."""
    calls = []

    def timer(point, key, name, run):
        calls.append((point, key, name))
        return seconds[name]

    timer.calls = calls
    return timer


# ---------------------------------------------------------------------------- the dense epilogue


@needs_onednn
@pytest.mark.parametrize("dtype", dense.FUSED_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_every_epilogue_path_computes_the_same_function(dtype, op):
    """Each forced path against float64 (rows 26: not a multiple of ROW_MULTIPLE, so the
    padded paths pad), and the timing candidates against the plain one on their own inputs."""
    x, weight, bias, residual = operands(dtype)
    args = dict(OPS[op], residual=residual if op == "linear+add" else None)
    reference = torch.nn.functional.linear(x.double(), weight.double(), bias.double())
    reference = torch.nn.functional.gelu(reference) if op == "linear+gelu" else reference
    reference = reference + residual.double() if op == "linear+add" else reference
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad(), dispatch.record("dense_epilogue") as decisions:
        for path in PATHS:
            with dispatch.override(dense_epilogue=path):
                y = dense.linear(x, weight, bias, **args)
            assert y.dtype == dtype and y.shape == reference.shape
            assert (y.double() - reference).abs().max() / reference.abs().max() < tolerance, path
    assert [d.choice for d in decisions] == list(PATHS)
    # The candidates cpu_choice times (fresh random inputs, new row counts each call).
    key = (str(dtype).removeprefix("torch."), op, 40, 48, 256, torch.get_num_threads())
    names = PATHS if dtype in dense.HALF_DTYPES else ("plain", "fused")
    with torch.no_grad():
        runs = {name: [run() for _ in range(4)] for name, run in dense._candidates(key, names, dtype).items()}
    assert [y.shape[0] for y in runs["plain"]] == [64, 63, 62, 61]  # a new row count per call
    for name in names:
        for y, expected in zip(runs[name], runs["plain"]):
            assert (y.double() - expected.double()).abs().max() / expected.double().abs().max() < tolerance, name


@needs_onednn
def test_auto_takes_what_measures_faster_by_the_margin():
    x, weight, bias, residual = operands(torch.float32)
    cases = [
        ({"plain": 1.0, "fused": 0.5}, "fused", "measured: fused 2.00x"),
        ({"plain": 1.0, "fused": 0.9}, "fused", "measured: fused 1.11x"),
        ({"plain": 1.0, "fused": 0.97}, "fused", "measured: fused 1.03x"),  # faster at all (no margin)
        ({"plain": 1.0, "fused": 1.0}, "plain", "measured: plain (fused 1.00x)"),  # a tie keeps plain
        ({"plain": 1.0, "fused": 1.3}, "plain", "measured: plain (fused 0.77x)"),
    ]
    for seconds, choice, why in cases:
        timer = fake_timer(seconds)
        with cpu_choice.use_timer(timer), torch.no_grad(), dispatch.record("dense_epilogue") as decisions:
            for _ in range(3):
                dense.linear(x, weight, bias, activation="gelu")
        assert [(d.choice, d.why) for d in decisions] == [(choice, why)] * 3
        key = ("float32", "linear+gelu", 40, 48, 32, torch.get_num_threads())  # 26 rows: bucket (16, 32]
        assert timer.calls == [("dense_epilogue", key, "plain"), ("dense_epilogue", key, "fused")]  # once
    # Another row-count bucket, epilogue or thread count is another measurement.
    timer = fake_timer({"plain": 1.0, "fused": 0.5})
    with cpu_choice.use_timer(timer), torch.no_grad():
        dense.linear(x, weight, bias, activation="gelu")
        dense.linear(x[:1, :5], weight, bias, activation="gelu")
        dense.linear(x, weight, bias, residual=residual)
    assert [key[1:5] for _, key, name in timer.calls if name == "plain"] == [
        ("linear+gelu", 40, 48, 32), ("linear+gelu", 40, 48, 8), ("linear+add", 40, 48, 32),
    ]


@pytest.mark.skipif(torch.bfloat16 not in dense.FUSED_DTYPES, reason="no oneDNN bfloat16 here")
def test_half_precision_measures_the_padded_paths_too():
    x, weight, bias, _ = operands(torch.bfloat16)
    timer = fake_timer({"plain": 1.0, "fused": 0.8, "fused_padded": 0.5, "plain_padded": 0.9})
    with cpu_choice.use_timer(timer), torch.no_grad(), dispatch.record("dense_epilogue") as decisions:
        y = dense.linear(x, weight, bias)
    assert {name for _, _, name in timer.calls} == set(PATHS)
    assert [(d.choice, d.why) for d in decisions] == [("fused_padded", "measured: fused_padded 2.00x")]
    with torch.no_grad(), dispatch.override(dense_epilogue="plain"):
        torch.testing.assert_close(y, dense.linear(x, weight, bias), rtol=2e-2, atol=2e-2)


@needs_onednn
def test_forcing_a_path_or_switching_measuring_off_measures_nothing():
    x, weight, bias, _ = operands(torch.float32)
    with cpu_choice.use_timer(raise_if_timed), torch.no_grad():
        for path in ("fused", "plain"):
            with dispatch.override(dense_epilogue=path), dispatch.record("dense_epilogue") as decisions:
                dense.linear(x, weight, bias)
            assert [(d.choice, d.why) for d in decisions] == [(path, "dispatch.override")]
        previous = dense.set_onednn_enabled(False)  # the legacy switch: "plain"
        try:
            assert not dense.uses_fused_cpu_path(x, weight)
        finally:
            dense.set_onednn_enabled(previous)
        previous = cpu_choice.set_enabled(False)
        try:
            with dispatch.record("dense_epilogue") as decisions:
                dense.linear(x, weight, bias)
        finally:
            cpu_choice.set_enabled(previous)
    assert [(d.choice, d.why) for d in decisions] == [("plain", "measuring off (cpu_choice.set_enabled)")]
    with pytest.raises(TypeError, match="enabled"):
        cpu_choice.set_enabled("off")


def test_measuring_switch_in_the_environment(monkeypatch):
    for raw, expected in [("off", (False, "$ROBERTA_TORCH_CPU_CHOICE")), ("1", (True, "$ROBERTA_TORCH_CPU_CHOICE")),
                          ("maybe", (True, "the built-in default")), ("", (True, "the built-in default"))]:
        monkeypatch.setenv(cpu_choice.ENABLE_ENV_VAR, raw)
        assert cpu_choice._enabled_from_environment() == expected


@needs_onednn
def test_nothing_is_measured_while_tracing():
    # torch.compile puts the product into the graph as roberta_torch::cpu_linear, which
    # measures and chooses when it runs (never while dynamo traces); torch.jit.trace records
    # the plain path.
    x, weight, bias, _ = operands(torch.float32)
    timed_while_tracing = []

    def timer(point, key, name, run):
        timed_while_tracing.append(torch.compiler.is_compiling())
        return {"plain": 1.0, "fused": 0.5}[name]

    def gelu_dense(inp):
        return dense.linear(inp, weight, bias, activation="gelu")

    torch._dynamo.reset()
    with cpu_choice.use_timer(timer), torch.no_grad():
        compiled = torch.compile(gelu_dense, backend="eager", fullgraph=True)
        with dispatch.record("dense_epilogue") as decisions:
            y = compiled(x)
        traced = torch.jit.trace(gelu_dense, x, check_trace=False)
        with dispatch.record("dense_epilogue") as traced_decisions:
            traced = torch.jit.trace(gelu_dense, x, check_trace=False)
        z = traced(x)
    assert timed_while_tracing and not any(timed_while_tracing)  # measured when the op ran
    # (The op's own run-time note does not reach the list: dynamo replays the recorder's
    # traced appends over the list after the graph has run.)
    assert [(d.choice, d.why) for d in decisions] == [
        ("auto", "compiled: roberta_torch::cpu_linear chooses when it runs"),
    ]
    assert [m[2].choice for m in cpu_choice.measurements() if m[0] == "dense_epilogue"][-1] == "fused"
    assert {d.choice for d in traced_decisions} == {"plain"}
    with torch.no_grad(), dispatch.override(dense_epilogue="plain"):
        reference = gelu_dense(x)
    torch.testing.assert_close(y, reference)
    torch.testing.assert_close(z, reference)


@needs_onednn
def test_compiled_model_runs_the_measured_cpu_products_and_equals_eager():
    model = randomize_(roberta_torch.RobertaBackbone(**TINY), seed=1, scale=0.3).eval()
    inputs = batch()
    torch._dynamo.reset()
    with torch.no_grad():
        expected = model(inputs)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with dispatch.record("dense_epilogue") as decisions:
            out = compiled(inputs)
        with dispatch.override(dense_epilogue="plain"), dispatch.record("dense_epilogue") as plain:
            forced_plain = compiled(inputs)  # the override is guarded: a retrace with F.linear
    valid = inputs["padding_mask"]
    for result in (out, forced_plain):
        torch.testing.assert_close(result[valid], expected[valid], rtol=1e-5, atol=1e-5)
    assert "compiled: roberta_torch::cpu_linear chooses when it runs" in {d.why for d in decisions}
    assert {d.choice for d in decisions} - {"auto"} <= {"plain", "fused"}  # the op's run-time choices
    assert {(d.choice, d.why) for d in plain} == {("plain", "dispatch.override")}
    # Training keeps F.linear (the op has no autograd formula): gradients flow.
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(inputs)[valid].square().sum().backward()
    assert model.layers[0].attention.query.weight.grad is not None


# ---------------------------------------------------------------------------- the mechanism


def test_choose_validates_and_keeps_choices_per_key():
    runs = []
    candidates = {"a": lambda: runs.append("a"), "b": lambda: runs.append("b")}
    with pytest.raises(ValueError, match="default"):
        cpu_choice.choose("point", ("k",), ("a", "b"), lambda: candidates, default="c")
    with pytest.raises(ValueError, match="not the names"):
        with cpu_choice.use_timer(fake_timer({"a": 1, "b": 1})):
            cpu_choice.choose("point", ("k",), ("a", "b", "c"), lambda: candidates, default="a")
    # The real timer: warm-up + REPEATS interleaved calls of each candidate, once per key.
    first = cpu_choice.choose("test_point", ("real",), ("a", "b"), lambda: candidates, default="a")
    again = cpu_choice.choose("test_point", ("real",), ("a", "b"), lambda: candidates, default="a")
    calls = (len(runs) - 2) // (2 * cpu_choice.REPEATS)  # per sample, the same for both
    assert 1 <= calls <= cpu_choice.MAX_CALLS_PER_SAMPLE
    before = len(runs)
    rounds = [["a"] * calls + ["b"] * calls, ["b"] * calls + ["a"] * calls]  # ABBA
    expected = ["a", "b"] + sum((rounds[r % 2] for r in range(cpu_choice.REPEATS)), [])
    assert first is again and runs == expected
    assert set(first.timings) == {"a", "b"} and first.reason.startswith("measured: ")
    assert any(point == "test_point" and spent > 0 for point, _, _, spent in cpu_choice.measurements())
    # Past the budget at a point, new keys take the default without measuring.
    cpu_choice._spent["test_point"] = cpu_choice.BUDGET_SECONDS
    try:
        late = cpu_choice.choose("test_point", ("late",), ("a", "b"), lambda: candidates, default="b")
        with cpu_choice.use_timer(fake_timer({"a": 0.1, "b": 1.0})):  # injected timings: no budget
            assert cpu_choice.choose("test_point", ("late",), ("a", "b"), lambda: candidates, default="b").choice == "a"
    finally:
        cpu_choice.forget("test_point")
    assert late.choice == "b" and late.reason.startswith("measuring budget spent") and len(runs) == before
    assert cpu_choice.pick({"a": 1.0, "b": 0.8, "c": 0.7}, "a") == "c"
    assert cpu_choice.pick({"a": 1.0, "b": 0.9}, "a") == "a"


def test_persistent_cache_is_keyed_by_machine_and_versions(tmp_path, monkeypatch):
    path = tmp_path / "choices.json"
    assert cpu_choice.cache_path() is None  # off by default
    monkeypatch.setenv(cpu_choice.CACHE_ENV_VAR, str(path))
    names, make = ("a", "b"), lambda: {"a": lambda: None, "b": lambda: None}
    with cpu_choice.use_timer(fake_timer({"a": 1.0, "b": 0.5})):
        assert cpu_choice.choose("test_point", ("cached", 1), names, make, default="a").choice == "b"
    data = json.loads(path.read_text())
    machine = cpu_choice.machine_key()
    assert torch.__version__ in machine and roberta_torch.__version__ in machine
    assert data["machines"][machine]["test_point ('cached', 1)"]["choice"] == "b"
    with cpu_choice.use_timer(raise_if_timed):  # a new process (nothing kept): read from the file
        cached = cpu_choice.choose("test_point", ("cached", 1), names, make, default="a")
    assert cached.choice == "b" and "cached in" in cached.reason
    monkeypatch.setattr(cpu_choice, "machine_key", lambda: "another CPU [avx2] torch 0 roberta_torch 0")
    timer = fake_timer({"a": 1.0, "b": 2.0})
    with cpu_choice.use_timer(timer):  # another machine or version: measured again
        assert cpu_choice.choose("test_point", ("cached", 1), names, make, default="a").choice == "a"
    assert len(timer.calls) == 2 and len(json.loads(path.read_text())["machines"]) == 2
    monkeypatch.setenv(cpu_choice.CACHE_ENV_VAR, "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_choice.cache_path() == tmp_path / "xdg" / "roberta_torch" / "cpu_choice.json"


# ---------------------------------------------------------------------------- int8 kernels


@needs_int8
def test_int8_kernel_choice_goes_through_the_same_mechanism_and_recorder():
    runnable = [name for name in int8_kernels.KERNELS if int8_kernels.probe(name) is not None]
    fastest = runnable[-1]
    seconds = {name: (0.1 if name == fastest else 1.0) for name in runnable}
    int8_kernels.forget_choices()
    timer = fake_timer(seconds)
    try:
        with cpu_choice.use_timer(timer):
            layer = quantization.Int8Linear.from_float(torch.nn.Linear(24, 40))
            x = torch.randn(3, 24)
            with torch.no_grad(), dispatch.record() as decisions, int8_kernels.record_kernels() as calls:
                layer(x)
            # dispatch's override reaches int8 layers; the layer's own request beats it.
            other = runnable[0]
            with torch.no_grad(), dispatch.override(int8_kernel=other), dispatch.record("int8_kernel") as forced:
                layer(x)
                quantization.Int8Linear.from_float(torch.nn.Linear(24, 40), kernel=fastest)(x)
    finally:
        int8_kernels.forget_choices()
    assert {key for _, key, _ in timer.calls} == {(24, 40, int8_kernels.TIMING_TOKENS, "1 thread")}
    expected_why = f"measured: {fastest} 10.00x" if len(runnable) > 1 else f"measured: {fastest} (the only candidate)"
    int8_decisions = [d for d in decisions if d.point == "int8_kernel"]
    assert [(d.choice, d.case, d.why) for d in int8_decisions] == [(fastest, (24, 40), expected_why)]
    assert calls == [(fastest, 24, 40)]
    assert [(d.choice, d.why) for d in forced] == [(other, "dispatch.override"), (fastest, "the layer's `kernel`")]


# ---------------------------------------------------------------------------- from_preset(quantize=)


@needs_int8
def test_backbone_from_preset_quantize_int8(backbone_preset):
    float_model = roberta_torch.RobertaBackbone.from_preset(backbone_preset)
    model = roberta_torch.RobertaBackbone.from_preset(backbone_preset, quantize="int8")
    assert quantization.is_quantized(model) and not quantization.is_quantized(float_model)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        expected, actual = float_model(batch()), model(batch())
    mask = batch()["padding_mask"]
    cosine = torch.nn.functional.cosine_similarity(actual[mask], expected[mask], dim=-1)
    assert cosine.min() > 0.99 and (actual - expected)[mask].abs().max() > 1e-6  # close, really int8


@needs_int8
def test_task_from_preset_quantize_int8(backbone_preset):
    float_task = roberta_torch.RobertaTextClassifier.from_preset(backbone_preset, num_classes=3)
    task = roberta_torch.RobertaTextClassifier.from_preset(backbone_preset, num_classes=3, quantize="int8")
    linears = [m for m in task.modules() if isinstance(m, torch.nn.Linear)]
    assert quantization.is_quantized(task) and not linears, f"left float: {linears}"  # the head too
    assert not task.training
    with torch.no_grad():
        assert task(batch()).shape == float_task(batch()).shape == (3, 3)


@needs_int8
def test_text_embedder_from_preset_quantize_int8(tmp_path):
    pytest.importorskip("sentence_transformers")
    from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir

    directory = sentence_transformers_dir(tmp_path, "roberta", pooling="mean", normalize=True)
    expected = roberta_torch.TextEmbedder.from_preset(str(directory)).encode(TEXTS)
    embedder = roberta_torch.TextEmbedder.from_preset(str(directory), quantize="int8")
    assert quantization.is_quantized(embedder)
    actual = embedder.encode(TEXTS)
    assert (actual * expected).sum(1).min() >= 0.999 and np.abs(actual - expected).max() > 1e-5


@pytest.mark.parametrize(
    "load",
    [
        lambda path, **kw: roberta_torch.RobertaBackbone.from_preset(path, **kw),
        lambda path, **kw: roberta_torch.RobertaTextClassifier.from_preset(path, num_classes=2, **kw),
        lambda path, **kw: roberta_torch.TextEmbedder.from_preset(path, **kw),
    ],
    ids=["backbone", "task", "embedder"],
)
def test_from_preset_quantize_is_validated_before_loading(tmp_path, load):
    missing = tmp_path / "does-not-exist"  # loading would raise FileNotFoundError
    with pytest.raises(ValueError, match="`quantize` must be None or one of"):
        load(missing, quantize="int4")
    with pytest.raises(ValueError, match="`quantize` must be None or one of"):
        load(missing, quantize=True)
    with pytest.raises(ValueError, match="runs on CPU only"):
        load(missing, quantize="int8", device="meta")


def test_candidates_are_timed_on_one_thread_and_the_thread_count_is_restored():
    threads = torch.get_num_threads()
    seen = []
    candidates = {"a": lambda: seen.append(torch.get_num_threads()), "b": lambda: seen.append(torch.get_num_threads())}
    try:
        torch.set_num_threads(2)
        cpu_choice.choose("test_point", ("threads",), ("a", "b"), lambda: candidates, default="a")
        assert torch.get_num_threads() == 2 and set(seen) == {cpu_choice.TIMING_THREADS}
    finally:
        cpu_choice.forget("test_point")
        torch.set_num_threads(threads)


def test_epilogue_timing_runs_each_new_row_count_as_a_forward_pass_does(monkeypatch):
    # oneDNN builds a primitive per new row count and a forward pass reuses it in every layer:
    # a timing that charged the primitive to every call ranked oneDNN 0.6-0.8x where it ran
    # 1.05-1.3x in the model (AMD EPYC, benchmarks/README.md).
    seen = []
    real = dense._run_path
    monkeypatch.setattr(dense, "_run_path", lambda path, x, *rest: seen.append(x.shape[0]) or real(path, x, *rest))
    top, reuse = dense.MAX_TIMING_ROWS, dense.row_count_reuse("linear")
    assert reuse == 3 * dense.MIN_LAYERS and dense.row_count_reuse("linear+gelu") == dense.MIN_LAYERS
    for bucket, expected in [
        (dense.AMORTIZED_ROWS, [top] * reuse + [top - 1] * reuse),  # a new row count per forward
        (dense.AMORTIZED_ROWS + 1, [top] * 2 * reuse),  # large batches: creation amortized away
    ]:
        seen.clear()
        key = ("float32", "linear", 40, 48, bucket, torch.get_num_threads())
        with torch.no_grad():
            run = dense._candidates(key, ("plain", "fused"), torch.float32)["plain"]
            run(), run()
        assert seen == expected, bucket


@needs_onednn
def test_row_counts_above_the_timing_cap_share_one_measurement():
    assert dense.row_bucket(5) == 8 and dense.row_bucket(64) == 64
    assert dense.row_bucket(65) == dense.row_bucket(256) == dense.AMORTIZED_ROWS
    assert dense.row_bucket(257) == dense.row_bucket(40000) == dense.AMORTIZED_ROWS + 1
    x, weight, bias, _ = operands(torch.float32)
    timer = fake_timer({"plain": 1.0, "fused": 0.5})
    with cpu_choice.use_timer(timer), torch.no_grad():
        for rows in (300, 700, 3000):
            dense.linear(torch.randn(rows, weight.shape[1]), weight, bias)
    assert len(timer.calls) == 2  # plain and fused, once


@pytest.mark.parametrize("op", ["linear+gelu", "linear+add"])
def test_plain_epilogue_in_place_touches_only_its_own_output(op):
    # The plain path applies GELU / the residual add in place on F.linear's fresh output at
    # inference (one allocation less), and out of place where autograd needs the values.
    x, weight, bias, residual = operands(torch.float32)
    args = {"activation": "gelu"} if op == "linear+gelu" else {"residual": residual}
    inputs = [t.clone() for t in (x, weight, bias, residual)]
    reference = torch.nn.functional.linear(x.double(), weight.double(), bias.double())
    reference = torch.nn.functional.gelu(reference) if op == "linear+gelu" else reference + residual.double()
    with dispatch.override(dense_epilogue="plain"):
        with torch.inference_mode():
            y = dense.linear(x, weight, bias, **args)
        assert all(torch.equal(a, b) for a, b in zip((x, weight, bias, residual), inputs))
        assert (y.double() - reference).abs().max() < 1e-5
        leaf = x.clone().requires_grad_(True)
        dense.linear(leaf, weight, bias, **args).square().sum().backward()
    expected = x.double().requires_grad_(True)
    out = torch.nn.functional.linear(expected, weight.double(), bias.double())
    out = torch.nn.functional.gelu(out) if op == "linear+gelu" else out + residual.double()
    out.square().sum().backward()
    assert (leaf.grad.double() - expected.grad).abs().max() / expected.grad.abs().max() < 1e-5
