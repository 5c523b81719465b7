"""Keras-style dtype policies mapped onto torch dtypes.

A policy has a variable dtype (what parameters are stored in) and a compute dtype (what the
matrix products run in). "mixed_*" policies keep float32 parameters and compute in the low
precision, exactly as Keras does. Softmax and LayerNorm always run in at least float32,
whatever the policy (see layers.py and attention.py). "float64" is Keras's name for a double
policy too; torch users get it from `model.double()`.
"""

from __future__ import annotations

import dataclasses

import torch

_POLICIES = {
    "float32": (torch.float32, torch.float32),
    "bfloat16": (torch.bfloat16, torch.bfloat16),
    "float16": (torch.float16, torch.float16),
    "float64": (torch.float64, torch.float64),
    "mixed_bfloat16": (torch.float32, torch.bfloat16),
    "mixed_float16": (torch.float32, torch.float16),
}
_TORCH_DTYPE_TO_NAME = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float64: "float64",
}
# Keras also accepts these spellings.
_ALIASES = {
    "fp32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp64": "float64",
    "double": "float64",
}


@dataclasses.dataclass(frozen=True)
class DTypePolicy:
    """A named pair of (variable dtype, compute dtype)."""

    name: str
    variable_dtype: torch.dtype
    compute_dtype: torch.dtype

    def to_keras_config(self) -> dict:
        """The `dtype` entry Keras writes into a layer config."""
        return {
            "module": "keras",
            "class_name": "DTypePolicy",
            "config": {"name": self.name},
            "registered_name": None,
        }


def known_policy_names() -> tuple[str, ...]:
    return tuple(_POLICIES)


def get_dtype_policy(dtype=None) -> DTypePolicy:
    """Parse every form Keras accepts for `dtype` into a DTypePolicy.

    Accepted: None (float32), a policy name ("float32", "bfloat16", "float16", "float64",
    "mixed_bfloat16", "mixed_float16"), a torch.dtype of those four floats, a DTypePolicy,
    or Keras's serialized policy dict {"class_name": "DTypePolicy", "config": {"name": ...}}.
    """
    if dtype is None:
        name = "float32"
    elif isinstance(dtype, DTypePolicy):
        return dtype
    elif isinstance(dtype, torch.dtype):
        if dtype not in _TORCH_DTYPE_TO_NAME:
            raise ValueError(
                f"`dtype`={dtype} is not supported; use one of torch.float32, torch.bfloat16, "
                f"torch.float16, torch.float64 or a policy name {known_policy_names()}."
            )
        name = _TORCH_DTYPE_TO_NAME[dtype]
    elif isinstance(dtype, dict):
        config = dtype.get("config")
        if not isinstance(config, dict) or "name" not in config:
            raise ValueError(
                f"`dtype` dict {dtype!r} is not a Keras DTypePolicy config; expected "
                '{"class_name": "DTypePolicy", "config": {"name": "float32"}}.'
            )
        return get_dtype_policy(config["name"])
    elif isinstance(dtype, str):
        name = _ALIASES.get(dtype, dtype)
    else:
        raise TypeError(
            f"`dtype` must be None, a str, a torch.dtype or a Keras DTypePolicy dict; "
            f"got {type(dtype).__name__} ({dtype!r})."
        )
    if name not in _POLICIES:
        raise ValueError(
            f"Unknown `dtype`={dtype!r}. Allowed policy names: {', '.join(known_policy_names())}."
        )
    variable_dtype, compute_dtype = _POLICIES[name]
    return DTypePolicy(name, variable_dtype, compute_dtype)


def policy_after_cast(policy: DTypePolicy, parameter_dtype: torch.dtype) -> DTypePolicy:
    """The policy of a model whose parameters now have `parameter_dtype` (after `.to(dtype)`,
    `.half()`, `load_state_dict(..., assign=True)`, ...).

    Parameters still in the policy's variable dtype keep the policy (a mixed policy survives
    `.float()` and `.to(device)`). Otherwise the parameters' dtype wins and becomes the plain
    policy of that dtype: `.half()` on a "mixed_bfloat16" model gives "float16", as torch users
    expect from `.half()` (float16 parameters, float16 compute).
    """
    if parameter_dtype == policy.variable_dtype:
        return policy
    if parameter_dtype not in _TORCH_DTYPE_TO_NAME:
        raise TypeError(
            f"Parameters of dtype {parameter_dtype} are not supported; cast the model to one of "
            f"{', '.join(str(d) for d in _TORCH_DTYPE_TO_NAME)}."
        )
    return get_dtype_policy(parameter_dtype)


class FollowsParameterDtype:
    """Mixin for an nn.Module with a `dtype_policy` that follows its parameters: after
    `.to(torch.bfloat16)`, `.half()`, `.double()`, ... a plain policy of the new dtype (see
    `policy_after_cast`); mixed policies survive `.float()` and `.to(device)`. Setting
    `model.dtype_policy = ...` casts the parameters to the policy's variable dtype.

    `_policy_parameter` names the submodule whose `weight` tells the parameters' dtype.
    """

    _policy_parameter = "token_embedding"

    @property
    def dtype_policy(self) -> DTypePolicy:
        policy = self._dtype_policy
        module = self._modules.get(self._policy_parameter)
        if module is not None and module.weight.dtype != policy.variable_dtype:
            # Parameters replaced without `_apply` (e.g. load_state_dict(assign=True)).
            policy = policy_after_cast(policy, module.weight.dtype)
        return policy

    @dtype_policy.setter
    def dtype_policy(self, value) -> None:
        self._dtype_policy = get_dtype_policy(value)
        if self._policy_parameter in self._modules:
            self.to(self._dtype_policy.variable_dtype)

    def _apply(self, fn, *args, **kwargs):
        # Every cast (.to, .half, .bfloat16, .float, .double, .cuda, ...) ends here.
        result = super()._apply(fn, *args, **kwargs)
        self._dtype_policy = self.dtype_policy
        return result
