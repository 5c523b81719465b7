"""Small random transformers RobertaModel / XLMRobertaModel references, and the batches
they are compared on (valid ids avoid the pad id, as a tokenizer's output does)."""

from __future__ import annotations

import torch

PAD = 1  # pad_token_id of every real RoBERTa / XLM-R checkpoint


def random_transformers_model(
    model_type: str = "roberta",
    seed: int = 0,
    attn_implementation: str = "eager",
    add_pooling_layer: bool = False,
    **overrides,
):
    """A transformers model with every tensor random (LayerNorm and biases included), eval mode.
    `overrides` change the config (e.g. type_vocab_size=2)."""
    import transformers

    roberta = model_type == "roberta"
    config_cls = transformers.RobertaConfig if roberta else transformers.XLMRobertaConfig
    model_cls = transformers.RobertaModel if roberta else transformers.XLMRobertaModel
    config = dict(
        vocab_size=61,
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=20,
        max_position_embeddings=16 + PAD + 1,
        layer_norm_eps=1e-5,
        type_vocab_size=1,
        pad_token_id=PAD,
    )
    config.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**config), add_pooling_layer=add_pooling_layer)
    model.config._attn_implementation = attn_implementation
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(noise * (0.2 if "LayerNorm" in name else 0.5) + ("LayerNorm.weight" in name))
    return model.eval()


def padded_batch(vocab_size: int, lengths, seq: int, side: str = "right", seed: int = 0):
    """(token_ids, mask) int64 (batch, seq): row b has lengths[b] valid tokens on the left
    (side="right" padding) or on the right (side="left"); padded ids are PAD."""
    generator = torch.Generator().manual_seed(seed)
    token_ids = torch.randint(PAD + 1, vocab_size, (len(lengths), seq), generator=generator)
    columns = torch.arange(seq)[None, :]
    lengths = torch.tensor(lengths)[:, None]
    mask = columns < lengths if side == "right" else columns >= seq - lengths
    token_ids[~mask] = PAD
    return token_ids, mask.long()
