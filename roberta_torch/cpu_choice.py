"""Choose among equivalent CPU paths by timing them on this machine, once per key.

Which of two ways to compute the same function is faster on a CPU depends on the CPU (AVX2,
AVX-512, AMX), the thread count, the dtype and the shapes: oneDNN's fused dense epilogue is
slower than F.linear + F.gelu on an AMD EPYC (AVX2) and faster on other shapes elsewhere; an
int8 kernel that wins with AMX loses without it. A fixed rule measured on one machine is
wrong on the next, so the decision points that have such candidates time them here:

    chosen = cpu_choice.choose("dense_epilogue", key, ("plain", "fused"),
                               lambda: {"plain": run_plain, "fused": run_fused}, default="plain")

`choose` runs every candidate once (warm-up; on TIMING_THREADS threads), then `repeats` rounds in which each candidate
runs for one sample (the same number of calls for all, enough for MIN_SAMPLE_SECONDS),
interleaved (so a busy machine slows them alike), and keeps the median per call. A candidate replaces the default only if it is at least MARGIN faster (timing
noise must not flip a tie); among those, the fastest wins. The result is kept for the
process under (point, key): the key says what the timing stands for (dtype, op, shapes, a
row-count bucket, threads), and the candidates' callables must run representative inputs
for it (for row counts that vary call to call, several fresh row counts per run, so that
per-shape setup costs such as oneDNN's primitive creation are paid as in real use).

Every candidate must compute the same function (tests check each point's candidates).

- Visible: the reason of a measured choice reads "measured: fused 1.23x" (the chosen
  candidate's speed-up over the default) or "measured: plain (fused 0.91x)"; decision points
  pass it to `dispatch.note`, so `dispatch.record()` shows it; each measurement is logged
  at DEBUG level and listed by `measurements()`.
- Off switch: $ROBERTA_TORCH_CPU_CHOICE=off (read once, at import) or `set_enabled(False)`
  make every point take its default without measuring (reason "measuring off: ...").
  Forcing a choice at a decision point (dispatch's override / set_default / environment
  variable) skips measuring too: the points only call `choose` for "auto".
- Persistent cache, off by default: $ROBERTA_TORCH_CPU_CHOICE_CACHE=1 keeps choices in
  ~/.cache/roberta_torch/cpu_choice.json (or $XDG_CACHE_HOME), any other non-empty value
  is the file to use. Entries are keyed by CPU model, kernel flags, torch and roberta_torch
  version, so a file copied to another machine or kept across an upgrade is not trusted.
- Bounded: once measuring at a point has taken BUDGET_SECONDS in the process, new keys
  there take the default (reason "measuring budget spent").
- Never while tracing (torch.compile / export / jit.trace): `choose` returns the default
  there without running anything (timing inside a trace would record the candidates).
- Tests make the timings deterministic with `with cpu_choice.use_timer(timer):`, where
  `timer(point, key, name, run)` returns seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import statistics
import threading
import time
from typing import Callable

import torch

from . import cpu_features, dispatch
from .tracing import is_compiling

logger = logging.getLogger(__name__)

ENABLE_ENV_VAR = "ROBERTA_TORCH_CPU_CHOICE"
CACHE_ENV_VAR = "ROBERTA_TORCH_CPU_CHOICE_CACHE"
# A candidate replaces the default only when at least this much faster.
MARGIN = 0.15
REPEATS = 3
# A timed sample calls a candidate often enough to last about this long (at most
# MAX_CALLS_PER_SAMPLE calls): a single sub-millisecond call on a busy machine times the
# scheduler, not the kernel.
MIN_SAMPLE_SECONDS = 0.004
MAX_CALLS_PER_SAMPLE = 32
# Measuring stops at a point once it has cost this much in the process (a server seeing many
# row-count buckets must not keep paying): later keys take the default.
BUDGET_SECONDS = 2.0
# Candidates are timed on one thread: on a busy machine a parallel region waits for its
# descheduled threads, and the ranking then follows the other jobs, not the kernels (measured
# here: with other jobs running, 2-thread MKL F.linear at 128 rows took 24 ms against 1.8 ms
# quiet, and "fused" measured 2-3x faster; quiet, it measured 0.8x). Keys still hold the
# thread count the model runs with.
TIMING_THREADS = 1
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Choice:
    """A decision: the candidate chosen, why (see the module docstring), and the median
    seconds per candidate ({} when nothing was measured)."""

    choice: str
    reason: str
    timings: dict


_choices: dict = {}  # (point, key) -> Choice, for the process
_measurements: list = []  # (point, key, Choice, seconds spent measuring) of this process
_spent: dict = {}  # point -> seconds spent measuring there
_timer: list = []  # an injected timer (tests), innermost last
_lock = threading.Lock()


def _enabled_from_environment() -> tuple:
    raw = os.environ.get(ENABLE_ENV_VAR, "").strip().lower()
    if not raw:
        return True, "the built-in default"
    if raw not in dispatch.SWITCH_ON + dispatch.SWITCH_OFF:
        # A bad value must not break `import roberta_torch`: say so (once: read once) and go on.
        logger.warning("Ignoring $%s=%r: not one of %s; measuring.", ENABLE_ENV_VAR, raw, dispatch.SWITCH_ON + dispatch.SWITCH_OFF)
        return True, "the built-in default"
    return raw in dispatch.SWITCH_ON, f"${ENABLE_ENV_VAR}"


_enabled = _enabled_from_environment()


def set_enabled(enabled: bool) -> bool:
    """Measure (True, the default) or take every point's default (False); returns the previous
    setting. Overrides $ROBERTA_TORCH_CPU_CHOICE (read once, at import)."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be a bool; got {enabled!r}.")
    previous, _enabled = _enabled[0], (enabled, "cpu_choice.set_enabled")
    return previous


def is_enabled() -> bool:
    return _enabled[0]


@contextlib.contextmanager
def use_timer(timer: Callable):
    """Within the block, `timer(point, key, name, run) -> seconds` replaces the measurement
    (tests: deterministic timings). The block starts with no kept choices and its own are
    dropped at its end."""
    _timer.append(timer)
    saved = dict(_choices)
    _choices.clear()  # choices measured before must not hide the injected timings
    try:
        yield
    finally:
        _timer.remove(timer)
        _choices.clear()
        _choices.update(saved)


def choose(point: str, key: tuple, names: tuple, make_candidates: Callable[[], dict], default: str, *,
           margin: float = MARGIN, repeats: int = REPEATS, timing_threads: int | None = TIMING_THREADS) -> Choice:
    """The candidate to use at `point` for `key` (see the module docstring). `names`: the
    candidates; `make_candidates()` (called only to measure): name -> a callable running
    representative inputs once; `default`: one of `names`; `timing_threads`: the torch thread
    count to time with (None: the current one)."""
    if default not in names:
        raise ValueError(f"`default` {default!r} is not one of the candidates {names}.")
    if is_compiling():
        return Choice(default, "tracing: not measured", {})
    if not _enabled[0]:
        return Choice(default, f"measuring off ({_enabled[1]})", {})
    known = _choices.get((point, key))
    if known is not None and known.choice in names:
        return known
    with _lock:
        known = _choices.get((point, key)) or _from_file(point, key)
        if known is None or known.choice not in names:
            if not _timer and _spent.get(point, 0.0) >= BUDGET_SECONDS:
                return Choice(default, f"measuring budget spent ({BUDGET_SECONDS:g} s at {point})", {})
            with threads(timing_threads):
                candidates = make_candidates()
                if set(candidates) != set(names):
                    raise ValueError(f"{point}: candidates {sorted(candidates)} are not the names {names}.")
                known = _measure(point, key, candidates, default, margin, repeats)
            _to_file(point, key, known)
        _choices[(point, key)] = known
    return known


@contextlib.contextmanager
def threads(count: int | None):
    """torch's thread count set to `count` within the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _measure(point, key, candidates, default, margin, repeats) -> Choice:
    timer = _timer[-1] if _timer else None
    started = time.perf_counter()
    if timer is not None:
        timings = {name: float(timer(point, key, name, run)) for name, run in candidates.items()}
    else:
        timings = _time_interleaved(candidates, repeats)
    choice = pick(timings, default, margin)
    measured = Choice(choice, reason(timings, choice, default), timings)
    spent = time.perf_counter() - started
    _spent[point] = _spent.get(point, 0.0) + (0.0 if timer is not None else spent)
    _measurements.append((point, key, measured, spent))
    logger.debug(
        "%s %s: %s in %.0f ms (%s)", point, key, measured.reason, 1e3 * spent,
        ", ".join(f"{name} {1e3 * t:.3f} ms" for name, t in timings.items()),
    )
    return measured


def _time_interleaved(candidates: dict, repeats: int) -> dict:
    with torch.inference_mode():
        fastest_warm_up = float("inf")
        for run in candidates.values():
            start = time.perf_counter()
            run()  # warm-up: weights into cache, lazy initialization
            fastest_warm_up = min(fastest_warm_up, time.perf_counter() - start)
        calls = min(MAX_CALLS_PER_SAMPLE, max(1, int(MIN_SAMPLE_SECONDS / max(fastest_warm_up, 1e-7)) + 1))
        samples = {name: [] for name in candidates}
        names = list(candidates)
        for round_ in range(repeats):
            # ABBA order: drift (turbo, other jobs) favours neither the first nor the last.
            for name in names if round_ % 2 == 0 else reversed(names):
                run = candidates[name]
                start = time.perf_counter()
                for _ in range(calls):
                    run()
                samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def pick(timings: dict, default: str, margin: float = MARGIN) -> str:
    """The fastest candidate that beats the default by `margin`, else the default."""
    bar = (1 - margin) * timings[default]
    faster = {name: t for name, t in timings.items() if name != default and t < bar}
    return min(faster, key=faster.get) if faster else default


def reason(timings: dict, choice: str, default: str) -> str:
    """"measured: fused 1.23x" (speed-up over the default), or for the default itself the
    best other candidate's: "measured: plain (fused 0.91x)"."""
    def speedup(name):
        return timings[default] / timings[name] if timings[name] > 0 else float("inf")

    if choice != default:
        return f"measured: {choice} {speedup(choice):.2f}x"
    others = [name for name in timings if name != default]
    if not others:
        return f"measured: {default} (the only candidate)"
    best = max(others, key=speedup)
    return f"measured: {default} ({best} {speedup(best):.2f}x)"


def measurements() -> list:
    """Every measurement of this process: (point, key, Choice, seconds spent measuring)."""
    return list(_measurements)


def forget(point: str | None = None) -> None:
    """Drop the choices kept for the process, at `point` or at every point (tests)."""
    for kept in [k for k in _choices if point is None or k[0] == point]:
        del _choices[kept]
    for spent_at in [p for p in _spent if point is None or p == point]:
        del _spent[spent_at]
    _measurements[:] = [m for m in _measurements if point is not None and m[0] != point]


# ---------------------------------------------------------------------------- persistent cache


def cache_path() -> pathlib.Path | None:
    """The JSON file choices persist in, or None (the default: $ROBERTA_TORCH_CPU_CHOICE_CACHE unset)."""
    raw = os.environ.get(CACHE_ENV_VAR, "").strip()
    if not raw or raw.lower() in dispatch.SWITCH_OFF:
        return None
    if raw.lower() in dispatch.SWITCH_ON:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return pathlib.Path(base) / "roberta_torch" / "cpu_choice.json"
    return pathlib.Path(raw).expanduser()


def machine_key() -> str:
    """What a persisted choice is valid for: CPU model and kernel flags, torch and
    roberta_torch versions."""
    from . import __version__

    flags = "+".join(cpu_features.cpu_flags())
    return f"{cpu_features.cpu_model()} [{flags}] torch {torch.__version__} roberta_torch {__version__}"


def _entry_key(point: str, key: tuple) -> str:
    return f"{point} {key!r}"


def _read_file(path: pathlib.Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("Ignoring the CPU choice cache %s: %s", path, error)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return data


def _from_file(point: str, key: tuple) -> Choice | None:
    path = cache_path()
    if path is None:
        return None
    entry = _read_file(path).get("machines", {}).get(machine_key(), {}).get(_entry_key(point, key))
    if not isinstance(entry, dict) or not isinstance(entry.get("choice"), str):
        return None
    return Choice(entry["choice"], f"{entry.get('reason', 'measured')} (cached in {path})", dict(entry.get("timings", {})))


def _to_file(point: str, key: tuple, choice: Choice) -> None:
    path = cache_path()
    if path is None:
        return
    data = _read_file(path) or {"version": CACHE_VERSION, "machines": {}}
    entries = data.setdefault("machines", {}).setdefault(machine_key(), {})
    entries[_entry_key(point, key)] = {"choice": choice.choice, "reason": choice.reason, "timings": choice.timings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(staged, path)  # readers never see half a file
    except OSError as error:
        logger.warning("Could not write the CPU choice cache %s: %s", path, error)
