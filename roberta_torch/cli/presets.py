"""`roberta-torch presets`: the table of builtin presets."""

from __future__ import annotations

HELP = "list the builtin presets"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from ..presets import registry

    rows = []
    for name in registry.builtin_preset_names():
        meta = registry.preset_metadata(name)
        params = f"{meta['params']:,}" if meta["params"] is not None else "?"
        rows.append([name, meta["class_name"], params, meta["handle"]])
    print(format_table(["preset", "class", "parameters", "handle"], rows))
    return 0
