"""One switch and one recorder for every backend decision.

A *decision point* is a place where the package picks one of several ways to compute the same
function: the attention backend, the CPU dense epilogue, how SDPA runs packed batches. Each
point has a name, a fixed tuple of choices whose first is "auto" (the code at the point
decides from the call: device, dtype, shapes, tracing; on CPU some points also time their
candidates once on this machine, see cpu_choice.py), and optionally an environment
variable. What is requested at a point comes from the first of these that names a choice:

1. the call            e.g. `attention.self_attention(..., backend="sdpa")`
2. the model           e.g. `RobertaBackbone(..., attention_backend="sdpa")`
3. a scoped override   `with dispatch.override(attention="sdpa"): ...` (innermost wins)
4. the process default `dispatch.set_default("attention", "sdpa")`, which starts as
5. the environment     the point's variable (e.g. `ROBERTA_TORCH_ATTENTION=sdpa`), read once at
                       import; unset means "auto", a bad value is logged once and ignored.

What a forced choice does where it cannot run is the point's own rule (documented with it):
attention raises a ValueError for "triton" on a CPU tensor; the dense epilogue falls back
to the plain path where oneDNN cannot run.

`with dispatch.record() as decisions:` lists every decision taken inside the block as
`Decision(point, choice, case, why)`; `record("attention")` only that point's.

Under torch.compile and torch.export all of this is Python state read while tracing: no
tensor data is read, so there is no host sync and no graph break; dynamo guards on the state,
so changing a default or entering an override recompiles. The state is process-wide (like
torch's own `sdpa_kernel` context manager), not per thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Callable, NamedTuple

logger = logging.getLogger(__name__)

AUTO = "auto"
# The usual spellings of an on/off environment switch (compared lower-cased).
SWITCH_ON = ("1", "true", "on", "yes")
SWITCH_OFF = ("0", "false", "off", "no")


@dataclasses.dataclass(frozen=True)
class DecisionPoint:
    """A named decision and its choices (see the module docstring).

    name:       a Python identifier, so `override(name=...)` works.
    choices:    ("auto", ...): the strings a caller may request.
    env_var:    the environment variable giving the process default, or None.
    switch:     (choice for "on", choice for "off") when env_var also takes on/off
                spellings (1/true/on/yes, 0/false/off/no), or None.
    call_name / model_name: how the call and model levels are spelled, for error messages.
    """

    name: str
    choices: tuple
    env_var: str | None = None
    switch: tuple | None = None
    call_name: str = "the call"
    model_name: str = "the model"

    def check(self, choice: Any, source: str) -> str:
        if not isinstance(choice, str) or choice not in self.choices:
            raise ValueError(
                f"{self.name!r} choice {choice!r} (from {source}) is not one of {self.choices}."
            )
        return choice


class Decision(NamedTuple):
    """One decision taken at a point: what was chosen, for what, and why.

    case: what the decision was about, as the point defines it (attention: the layout
          "padded" / "masked" / "packed"; packed_sdpa and dense_epilogue: the dtype).
    why:  where a forced choice came from ("the call", "$ROBERTA_TORCH_ATTENTION", ...) or,
          for "auto" and fallbacks, the reason (e.g. "no gradient, oneDNN has this dtype").
    """

    point: str
    choice: str
    case: Any
    why: str


@dataclasses.dataclass(eq=False)
class _Recorder:
    points: frozenset | None  # None = every point
    decisions: list
    convert: Callable[[Decision], Any]


_points: dict[str, DecisionPoint] = {}
_defaults: dict[str, tuple] = {}  # name -> (choice, where it came from)
_overrides: list[dict] = []  # scoped overrides, innermost last
_recorders: list[_Recorder] = []  # active recorders; empty in normal runs


def declare(
    name: str,
    choices: tuple,
    env_var: str | None = None,
    switch: tuple | None = None,
    call_name: str = "the call",
    model_name: str = "the model",
) -> DecisionPoint:
    """Declare a decision point (once, at the import of the module that decides there) and read
    its environment variable. Returns the point."""
    point = DecisionPoint(name, tuple(choices), env_var, switch, call_name, model_name)
    if not name.isidentifier() or not point.choices or point.choices[0] != AUTO:
        raise ValueError(f"Decision point {name!r}: needs an identifier name and choices ('auto', ...).")
    if switch is not None and not all(choice in point.choices for choice in switch):
        raise ValueError(f"Decision point {name!r}: switch {switch} names unknown choices.")
    known = _points.get(name)
    if known is not None:
        if known != point:
            raise ValueError(f"Decision point {name!r} is already declared as {known}.")
        return known
    _points[name] = point
    _defaults[name] = _from_environment(point)
    return point


def _from_environment(point: DecisionPoint) -> tuple:
    default = (AUTO, "the built-in default")
    raw = os.environ.get(point.env_var) if point.env_var else None
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    source = f"${point.env_var}"
    if value in point.choices:
        return value, source
    if point.switch is not None and value in SWITCH_ON:
        return point.switch[0], source
    if point.switch is not None and value in SWITCH_OFF:
        return point.switch[1], source
    # A bad value must not break `import roberta_torch`: say so (once: read once) and go on.
    accepted = point.choices + (SWITCH_ON + SWITCH_OFF if point.switch else ())
    logger.warning("Ignoring $%s=%r: not one of %s; using 'auto'.", point.env_var, raw, accepted)
    return default


def points() -> dict:
    """The declared decision points by name (a copy)."""
    return dict(_points)


def _point(name: str) -> DecisionPoint:
    try:
        return _points[name]
    except KeyError:
        raise ValueError(f"Unknown decision point {name!r}; known: {sorted(_points)}.") from None


def get_default(name: str) -> str:
    """The process default at point `name` (from set_default, else the environment)."""
    _point(name)
    return _defaults[name][0]


def set_default(name: str, choice: str, *, source: str = "dispatch.set_default") -> str:
    """Set the process default at point `name`; returns the previous one. Overrides the
    environment variable (which is read once, at import)."""
    point = _point(name)
    previous = _defaults[name][0]
    _defaults[name] = (point.check(choice, source), source)
    return previous


@contextlib.contextmanager
def override(**choices):
    """Within the block, request these choices (`point=choice`; None leaves a point alone)
    unless the call or the model names one. Nests: the innermost block wins."""
    scope = {
        name: _point(name).check(choice, "dispatch.override")
        for name, choice in choices.items()
        if choice is not None
    }
    _overrides.append(scope)
    try:
        yield
    finally:
        _remove(_overrides, scope)


def requested(name: str, call: str | None = None, model: str | None = None) -> tuple:
    """(choice, where it came from) at point `name`: the first of call, model, the innermost
    scoped override, the process default (see the module docstring). Values are checked."""
    if call is None and model is None and not _overrides:  # the common case, kept cheap
        default = _defaults.get(name)
        if default is not None:
            return default
    point = _point(name)
    if call is not None:
        return point.check(call, point.call_name), point.call_name
    if model is not None:
        return point.check(model, point.model_name), point.model_name
    for scope in reversed(_overrides):
        choice = scope.get(name)
        if choice is not None:
            return choice, "dispatch.override"
    return _defaults[name]


@contextlib.contextmanager
def record(*names: str):
    """Within the block, every decision (at the named points, or all) is appended to the
    yielded list as a `Decision`. For tests, debugging and benchmarks; nests."""
    with _recording(names, lambda decision: decision) as decisions:
        yield decisions


@contextlib.contextmanager
def _recording(names, convert):
    """`record`, with each Decision converted before it is listed (the legacy recorders)."""
    recorder = _Recorder(frozenset(_point(n).name for n in names) or None, [], convert)
    _recorders.append(recorder)
    try:
        yield recorder.decisions
    finally:
        _remove(_recorders, recorder)


def note(name: str, choice: str, case: Any, why: str) -> None:
    """Report a decision taken at point `name` to the active recorders (cheap when none)."""
    for recorder in _recorders:
        if recorder.points is None or name in recorder.points:
            recorder.decisions.append(recorder.convert(Decision(name, choice, case, why)))


def _remove(stack: list, item) -> None:
    """Remove `item` itself (not an equal one) from `stack`: blocks may close out of order."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is item:
            del stack[index]
            return
