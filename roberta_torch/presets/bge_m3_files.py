"""bge-m3's sparse and ColBERT heads next to the encoder (FlagEmbedding's layout).

FlagEmbedding saves each head as `<head>.pt` (a torch.save'd state dict {"weight", "bias"})
and loads it with torch.load. roberta_torch writes each head twice: `<head>.safetensors`,
which it reads first and which needs no pickle, and `<head>.pt` (plain tensors), so that
FlagEmbedding's BGEM3FlagModel loads the directory too (sentence-transformers reads
neither). Reading a `.pt` is a pickle and needs `allow_pickle=True` (torch.load with
weights_only=True, on a torch without a known bypass: files.check_pickle_loader); a
`.pt`-only head without it is refused with an error that says so, never skipped.
"""

from __future__ import annotations

import io
import pathlib

from . import files, names


def _head_files(head: str) -> tuple[str, str]:
    return names.BGE_M3_SAFETENSORS.format(head=head), names.BGE_M3_PICKLE.format(head=head)


def _read_head(preset, head: str):
    """(file name, {"weight", "bias"}) of one head, or None when the preset has neither file."""
    safetensors_name, pickle_name = _head_files(head)
    path = preset.file(safetensors_name)
    if path is not None:
        try:
            state = files.import_safetensors().torch.load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own SafetensorError for bad headers
            if isinstance(error, (ImportError, MemoryError)):
                raise
            raise ValueError(f"Cannot read safetensors file {path}: corrupt or truncated ({error}).") from error
        return safetensors_name, state
    path = preset.file(pickle_name)
    if path is None:
        return None
    if not preset.allow_pickle:
        raise ValueError(
            f"{pickle_name} in {preset.source.describe()!r} is a pickle (bge-m3's {head} head as FlagEmbedding "
            "saves it), which is not read by default. Pass allow_pickle=True to read it with "
            "torch.load(weights_only=True), or save the model once with TextEmbedder.save_to_preset, which "
            f"writes {safetensors_name}."
        )
    return pickle_name, files.read_pickle(path)


def _check_linear(name: str, state, hidden_dim: int, out_features: int | None) -> dict:
    import torch

    if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{name!r} must hold exactly the tensors 'weight' and 'bias'; found {found}.")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{name!r}: {key!r} must be a floating-point tensor; got {type(value).__name__}.")
    weight, bias = state["weight"], state["bias"]
    out = weight.shape[0] if weight.ndim == 2 else -1
    expected = (out_features or max(out, 1), hidden_dim)
    if tuple(weight.shape) != expected or tuple(bias.shape) != (expected[0],):
        raise ValueError(
            f"{name!r}: 'weight' {tuple(weight.shape)} / 'bias' {tuple(bias.shape)} do not fit a "
            f"Linear({hidden_dim}, {expected[0]}): expected {expected} / ({expected[0]},)."
        )
    return {"weight": weight.float(), "bias": bias.float()}


def read_heads(preset, hidden_dim: int) -> dict | None:
    """{"sparse_linear": {"weight", "bias"}, "colbert_linear": {...}} when the preset has both
    heads, None when it has neither; a lone head is an error naming the missing one."""
    found = {head: _read_head(preset, head) for head in names.BGE_M3_HEADS}
    if not any(found.values()):
        return None
    missing = [_head_files(head)[1] for head, value in found.items() if value is None]
    if missing:
        raise FileNotFoundError(f"bge-m3 heads in {preset.source.describe()!r} are incomplete: {missing} missing.")
    return {
        head: _check_linear(name, state, hidden_dim, out_features=1 if head == "sparse_linear" else None)
        for head, (name, state) in found.items()
    }


def write_heads(directory: pathlib.Path, heads: dict) -> None:
    """Write each head (name -> nn.Linear) as <head>.safetensors and <head>.pt."""
    import torch

    save_file = files.import_safetensors().torch.save_file
    for head, module in heads.items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        safetensors_name, pickle_name = _head_files(head)
        with files.atomic_output(directory / safetensors_name) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        files.write_bytes(directory / pickle_name, buffer.getvalue())
