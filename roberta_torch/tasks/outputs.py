"""What a task model returns when it is given labels: `TaskOutput`, a dict with attribute access.

Without labels a task returns keras_hub's output (a tensor, or QA's (start, end) tuple). With
`labels=` it returns `TaskOutput(loss=..., logits=...)` (QA: `loss`, `start_logits`,
`end_logits`), in that key order. A dict is what HF `Trainer` reads with no glue: it takes
`outputs["loss"]` to train and, in `evaluate` / `predict`, every other value in order as the
predictions (one tensor, or QA's (start, end) pair), exactly as for transformers' own
`ModelOutput` (also a dict). A tuple would not do: Trainer would read `outputs[1:]` as the
predictions, which for a plain tensor drops a row of every batch.

It is registered as a pytree node (like transformers' ModelOutput), so torch.compile,
torch.export, FSDP and accelerate see the tensors inside it.
"""

from __future__ import annotations

import torch.utils._pytree as pytree


class TaskOutput(dict):
    """{"loss": scalar, "logits": ...} (or QA's "start_logits", "end_logits"), also readable
    as attributes (`out.loss`, `out.logits`)."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"TaskOutput has no {name!r}; it holds {', '.join(self)}."
            ) from None

    def to_tuple(self) -> tuple:
        """The values in order: (loss, logits) or (loss, start_logits, end_logits)."""
        return tuple(self.values())

    def __reduce__(self):
        return (type(self), (dict(self),))


def _flatten(output: TaskOutput):
    return list(output.values()), list(output.keys())


def _unflatten(values, keys) -> TaskOutput:
    return TaskOutput(zip(keys, values))


def _flatten_with_keys(output: TaskOutput):
    return [(pytree.MappingKey(k), v) for k, v in output.items()], list(output.keys())


pytree.register_pytree_node(
    TaskOutput,
    _flatten,
    _unflatten,
    serialized_type_name=f"{__name__}.TaskOutput",
    flatten_with_keys_fn=_flatten_with_keys,
)
