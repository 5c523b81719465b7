"""`BackboneConfig`: a backbone's hyper-parameters, validated once, with keras_hub's
serialisation and the parameter count.

`RobertaBackbone(...)` validates its constructor arguments by building one (typed errors
naming the argument, before anything is allocated); `get_config()` returns
`config.to_dict()` plus the live dtype policy, in keras_hub's key order. The parameter count
is that of the real module built on the meta device (no memory, no initialization), so there
is no second description of the architecture to keep in step.
"""

from __future__ import annotations

import dataclasses
import numbers

# Backbone classes register here by their Keras class name when they are defined
# (backbone.Backbone.__init_subclass__); presets and configs pick a class by that name.
BACKBONE_CLASSES: dict[str, type] = {}


def check_positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be a positive int; got {type(value).__name__} ({value!r}).")
    if value <= 0:
        raise ValueError(f"`{argument}` must be a positive int; got {value}.")
    return int(value)


def check_dropout(dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"`dropout` must be a float in [0, 1); got {dropout!r}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1); got {dropout}.")
    return float(dropout)


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """keras_hub's RobertaBackbone constructor arguments (the dtype policy aside), validated."""

    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    dropout: float = 0.1
    max_sequence_length: int = 512

    def __post_init__(self):
        for name in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "max_sequence_length"):
            object.__setattr__(self, name, check_positive_int(getattr(self, name), name))
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim`={self.hidden_dim} must be divisible by `num_heads`={self.num_heads} "
                f"(head size = hidden_dim / num_heads); e.g. use num_heads="
                f"{max(d for d in range(1, self.num_heads + 1) if self.hidden_dim % d == 0)}."
            )
        object.__setattr__(self, "dropout", check_dropout(self.dropout))

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def to_dict(self) -> dict:
        """The Keras config entries, in keras_hub's order (without "dtype")."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> "BackboneConfig":
        """From a Keras config (its other entries, e.g. "dtype", "name", ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in fields})

    def num_parameters(self) -> int:
        """keras_hub's `count_params()`: the backbone built on the meta device, counted."""
        if "RobertaBackbone" not in BACKBONE_CLASSES:
            raise RuntimeError("No backbone class is registered yet; import roberta_torch first.")
        model = BACKBONE_CLASSES["RobertaBackbone"](**self.to_dict(), device="meta")
        return sum(p.numel() for p in model.parameters())
