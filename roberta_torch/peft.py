"""PEFT adapters between transformers' RoBERTa / XLM-R and our models.

An adapter trained with PEFT on transformers' models is a directory (or `hf://` repository)
holding `adapter_config.json` and `adapter_model.safetensors`, whose keys name transformers'
modules (`base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight`,
`base_model.model.classifier.dense.weight` for a head in `modules_to_save`).

    peft_model = roberta_torch.peft.load_adapter(model, "path/or/hf://user/adapter")
    roberta_torch.peft.save_adapter(peft_model, "out/")   # transformers + PEFT load it

`load_adapter` returns a `peft.PeftModel` (PeftModelForSequenceClassification ... by the
adapter's task_type) over our backbone or task model, `save_adapter` writes one in PEFT's
transformers layout. Module paths are translated through the same conversion tables as the
weights (presets/transformers_format.py rows and the tasks' head rows, tasks/heads.py): a
transformers module maps to ours when every tensor of it is copied as it is into one module
of ours. The translation is strict: every adapter tensor is accounted for and its shape
checked against the PeftModel built here, before any data is read; errors name the key,
both shapes and the file.

Adapters trained on our models directly (`peft.get_peft_model(model, LoraConfig(...))`,
`PeftModel.from_pretrained(model, dir)`) need none of this: PEFT's default RoBERTa targets
(`query`, `value`) and `task_type` work on them as they are (see `model.config`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pathlib
import re

from . import optional
from .backbone import RobertaBackbone
from .presets import files, transformers_format
from .presets.mapping import COPY, Row, describe_problems, table_rows
from .presets.preset import open_preset

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the model
# transformers' task models hold the encoder as `roberta` (RobertaFor* and XLMRobertaFor*).
TRANSFORMERS_ENCODER_PREFIX = "roberta."
SUPPORTED_PEFT_TYPES = ("LORA",)  # DoRA is LORA with use_dora=True
# transformers modules with no module of ours, and why (for the error an adapter on one gets).
NOT_IN_OUR_MODELS = {
    "pooler.dense": "RobertaModel's pooler (dense + tanh over <s>) is no part of our backbone (keras_hub's has "
    "none); train the adapter without it, e.g. exclude_modules=['pooler.dense']",
    "lm_head.decoder": "the masked-LM decoder is the word embedding matrix (tied); target the embedding instead",
}


def _import_peft():
    return optional.require("peft", "roberta_torch.peft")


@dataclasses.dataclass(frozen=True)
class ModuleMap:
    """transformers module path <-> ours, for one model, derived from its conversion rows.

    theirs_to_ours: modules whose every tensor is copied as it is into one module of ours.
    unmappable:     transformers modules whose tensors are transformed or merged on the way
                    (e.g. position embeddings with reserved rows), with the reason.
    """

    theirs_to_ours: dict
    unmappable: dict
    unmappable_ours: dict  # the same for our modules those reach (the way back)

    @property
    def ours_to_theirs(self) -> dict:
        return {ours: theirs for theirs, ours in self.theirs_to_ours.items()}

    @staticmethod
    def translate_module(path: str, table: dict, unmappable: dict, what: str):
        """(mapped module, rest) for the longest module of `table` that `path` is or lies in."""
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            module, rest = ".".join(parts[:end]), ".".join(parts[end:])
            if module in table:
                return table[module], rest
            if module in unmappable:
                raise ValueError(
                    f"{what} {path!r}: module {module!r} cannot carry an adapter here: {unmappable[module]}."
                )
        raise ValueError(f"{what} {path!r} names no module of the model.")


def _model_rows(model) -> list[Row]:
    """The transformers conversion rows of `model` (backbone, or task: encoder + head)."""
    if isinstance(model, RobertaBackbone):
        return transformers_format.conversion_rows(model.get_config())
    from .tasks.base import Task  # roberta_torch.tasks imports this package's modules

    if not isinstance(model, Task):
        raise TypeError(
            f"`model` must be a roberta_torch backbone or task model; got {type(model).__name__}."
        )
    rows = [
        Row(TRANSFORMERS_ENCODER_PREFIX + row.source_key, "backbone." + row.model_key, row.transform, add=row.add)
        for row in transformers_format.conversion_rows(model.backbone.get_config())
    ]
    return rows + table_rows(type(model).transformers_head_table)


def module_map(model) -> ModuleMap:
    """The module translation of `model`, from the same rows that convert its weights."""
    by_theirs: dict[str, list[Row]] = {}
    sources_of_ours: dict[str, set] = {}
    for row in _model_rows(model):
        theirs, ours = row.source_key.rsplit(".", 1)[0], row.model_key.rsplit(".", 1)[0]
        by_theirs.setdefault(theirs, []).append(row)
        sources_of_ours.setdefault(ours, set()).add(theirs)
    mapped, unmappable, unmappable_ours = {}, {}, {}
    for theirs, rows in by_theirs.items():
        targets = {row.model_key.rsplit(".", 1)[0] for row in rows}
        same_parameter = (row.source_key.rsplit(".", 1)[1] == row.model_key.rsplit(".", 1)[1] for row in rows)
        plain = all(same_parameter) and all(row.transform is COPY and not row.add for row in rows)
        if plain and len(targets) == 1 and len(sources_of_ours[next(iter(targets))]) == 1:
            mapped[theirs] = next(iter(targets))
        else:
            how = sorted({row.transform.name + (" (added)" if row.add else "") for row in rows})
            unmappable[theirs] = f"its tensors reach {sorted(targets)} through {', '.join(how)}, not as a copy"
            for ours in targets:
                unmappable_ours[ours] = f"transformers' {theirs!r} reaches it through {', '.join(how)}, not as a copy"
    for ours, theirs_set in sources_of_ours.items():
        if len(theirs_set) > 1:
            unmappable_ours[ours] = f"it is filled from several transformers modules {sorted(theirs_set)}"
    return ModuleMap(mapped, {**NOT_IN_OUR_MODELS, **unmappable}, unmappable_ours)


# -- transformers -> ours -----------------------------------------------------------------------


def _adapter_files(path) -> tuple[pathlib.Path, pathlib.Path]:
    """(adapter_config.json, adapter_model.safetensors) of a directory or hf:// repository."""
    preset = open_preset(path, require_config=False)
    config = preset.file(ADAPTER_CONFIG_NAME, required=True)
    weights = preset.file(ADAPTER_WEIGHTS_NAME)
    if weights is None:
        pickled = preset.file("adapter_model.bin")
        hint = ""
        if pickled:
            hint = " It has adapter_model.bin (a pickle): re-save it with PEFT's safe_serialization=True."
        raise FileNotFoundError(f"{ADAPTER_WEIGHTS_NAME} is missing from adapter {path!s}.{hint}")
    return config, weights


def _check_supported(config, where: str) -> None:
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise ValueError(f"{where}: peft_type {peft_type!r} is not supported; LoRA adapters (incl. DoRA) are.")
    for field in ("layer_replication", "target_parameters", "trainable_token_indices"):
        if getattr(config, field, None):
            raise ValueError(
                f"{where}: `{field}` is not supported by the module translation; it is {getattr(config, field)!r}."
            )


def _patterns_for(pattern: dict, translated: dict) -> dict:
    """rank_pattern / alpha_pattern resolved per module by PEFT's own matcher, rekeyed:
    `translated` maps each source module path to its path on the other side."""
    if not pattern:
        return {}
    from peft.utils.other import get_pattern_key

    out = {}
    for source, target in translated.items():
        key = get_pattern_key(list(pattern), source)
        if key in pattern:
            out[target] = pattern[key]
    return out


def _modules_in(names, modules) -> list[str]:
    """The modules of `modules` lying in (or being) a module PEFT's `modules_to_save` entry
    `names` matches (PEFT's own rule: a path component sequence ending with the name)."""
    return [m for m in modules if any(re.match(rf"(^|.*\.){name}($|\..*)", m) for name in names or ())]


def our_config(config, mapping: ModuleMap):
    """The adapter config for our model: target_modules and modules_to_save as our full
    module paths, the patterns resolved per module, as PEFT matched them on transformers'."""
    from peft.tuners.tuners_utils import check_target_module_exists

    _check_supported(config, "adapter")
    if isinstance(config.target_modules, str) and config.target_modules == "all-linear":
        raise ValueError("adapter: target_modules='all-linear' is resolved by PEFT when training; save the adapter "
                         "with PEFT (which writes the module names) and load that.")
    # PEFT's matcher (an excluded module answers falsy), run on transformers' module names.
    targeted = {m: ours for m, ours in mapping.theirs_to_ours.items() if check_target_module_exists(config, m)}
    saved = [mapping.theirs_to_ours[m] for m in _modules_in(config.modules_to_save, mapping.theirs_to_ours)]
    # Whole heads by their container (our `classifier`), as PEFT's SEQ_CLS adds it: never a
    # container and its children both (PEFT would wrap them twice).
    return _translated_config(config, targeted, _collapse_to_containers(saved, mapping.ours_to_theirs))


def _translated_config(config, targeted: dict, modules_to_save: list):
    """A copy of `config` for the other side: `targeted` maps each adapted module path to its
    translation, which becomes the explicit target list (so layer and exclusion filters, already
    applied, are dropped) with the rank / alpha patterns resolved per module."""
    out = copy.deepcopy(config)
    out.target_modules = sorted(targeted.values())
    out.exclude_modules = None
    out.layers_to_transform = None
    out.layers_pattern = None
    out.rank_pattern = _patterns_for(config.rank_pattern, targeted)
    out.alpha_pattern = _patterns_for(config.alpha_pattern, targeted)
    out.modules_to_save = sorted(modules_to_save) or None
    return out


def _translate_keys(keys, table: dict, unmappable: dict, file: str) -> dict:
    """{key on the other side: key} for PEFT state-dict keys ("base_model.model.<module>.<rest>")."""
    out, problems = {}, []
    for key in keys:
        if not key.startswith(PEFT_PREFIX):
            problems.append(f"{key!r} in {file}: not a PEFT key (expected the prefix {PEFT_PREFIX!r})")
            continue
        try:
            module, rest = ModuleMap.translate_module(key[len(PEFT_PREFIX):], table, unmappable, "tensor")
        except ValueError as error:
            problems.append(f"{key!r} in {file}: {error}")
            continue
        out[PEFT_PREFIX + module + "." + rest] = key
    if problems:
        raise ValueError(f"Adapter tensors that cannot be placed:{describe_problems(problems)}")
    return out


def load_adapter(model, adapter, *, adapter_name: str = "default", is_trainable: bool = False):
    """Wrap `model` (our backbone or task model) in a PeftModel carrying the adapter PEFT
    saved for transformers' RoBERTa / XLM-R at `adapter` (a directory or hf:// handle).

    Like `PeftModel.from_pretrained`: the class follows the adapter's task_type (none: a
    plain PeftModel), eval mode and frozen unless `is_trainable=True`. The model's outputs
    then equal transformers + PEFT's on the same inputs."""
    peft = _import_peft()
    config_path, weights_path = _adapter_files(adapter)
    config = peft.PeftConfig.from_pretrained(str(config_path.parent))
    mapping = module_map(model)
    ours = our_config(config, mapping)
    ours.inference_mode = not is_trainable

    tensors = files.read_safetensors(weights_path)
    renamed = _translate_keys(tensors, mapping.theirs_to_ours, mapping.unmappable, weights_path.name)
    # As PeftModel.from_pretrained builds it (get_peft_model would rename base_model_name_or_path).
    peft_class = peft.MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(ours.task_type, peft.PeftModel)
    peft_model = peft_class(model, ours, adapter_name=adapter_name)
    expected = peft.get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    problems = [
        f"{renamed[k]!r} in {weights_path.name}: shape {tensors[renamed[k]].shape}, the model's {k!r} is "
        f"{tuple(expected[k].shape)}"
        for k in renamed if k in expected and tuple(tensors[renamed[k]].shape) != tuple(expected[k].shape)
    ]
    problems += [f"{renamed[k]!r} in {weights_path.name}: no such adapter tensor in the model ({k!r})"
                 for k in renamed if k not in expected]
    problems += [
        f"{k!r}: the model's adapter has it, {weights_path.name} does not" for k in expected if k not in renamed
    ]
    if problems:
        raise ValueError(f"Adapter {adapter!s} does not fit {type(model).__name__}:{describe_problems(problems)}")
    state = {k: tensors[source].load() for k, source in renamed.items()}
    result = peft.set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", ()) if adapter_name in k or k in state]
    if unexpected:
        raise ValueError(f"Adapter tensors PEFT did not place:{describe_problems(unexpected)}")
    if not is_trainable:
        peft_model.eval()
    return peft_model


# -- ours -> transformers -----------------------------------------------------------------------


def _collapse_to_containers(modules: list[str], all_modules) -> list[str]:
    """Whole top-level heads (e.g. `classifier` holding dense and out_proj, transformers' and
    ours) by their container's name, as PEFT names them in modules_to_save; `all_modules`:
    every module of that side."""
    out = set(modules)
    for container in {m.split(".", 1)[0] for m in modules if "." in m}:
        inside = {m for m in all_modules if m.startswith(container + ".")}
        if inside and inside <= out:
            out = (out - inside) | {container}
    return sorted(out)


def _mapped_inside(module: str, mapped) -> list[str]:
    """The modules of `mapped` inside `module` (a container such as our `classifier`), or
    `module` itself when none is."""
    return [m for m in mapped if m.startswith(module + ".")] or [module]


def save_adapter(peft_model, directory, *, adapter_name: str = "default") -> pathlib.Path:
    """Write `peft_model`'s adapter (a PeftModel over our backbone or task model) in PEFT's
    layout for transformers' RobertaModel / RobertaFor*: adapter_config.json +
    adapter_model.safetensors, module paths translated through the conversion rows, so that
    `PeftModel.from_pretrained(transformers_model, directory)` gives our outputs."""
    peft = _import_peft()
    from peft.utils.other import ModulesToSaveWrapper

    if not isinstance(peft_model, peft.PeftModel):
        raise TypeError(f"`peft_model` must be a peft.PeftModel; got {type(peft_model).__name__}.")
    if adapter_name not in peft_model.peft_config:
        raise ValueError(f"`adapter_name` {adapter_name!r} is not one of {sorted(peft_model.peft_config)}.")
    config = peft_model.peft_config[adapter_name]
    _check_supported(config, "save_adapter")
    base = peft_model.get_base_model()
    mapping = module_map(base)
    ours_to_theirs = mapping.ours_to_theirs
    unmappable = mapping.unmappable_ours

    def theirs(module: str) -> str:
        translated, rest = ModuleMap.translate_module(module, ours_to_theirs, unmappable, "module")
        return translated + ("." + rest if rest else "")

    # This adapter's modules (a PeftModel may hold several adapters).
    modules = list(base.named_modules())
    targeted = {name: theirs(name) for name, module in modules
                if any(adapter_name in getattr(module, kind, {}) for kind in ("lora_A", "lora_embedding_A"))}
    saved = [name for name, module in modules
             if isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save]
    # A saved container (our `classifier`) by the mapped modules inside it.
    saved = [inner for m in saved for inner in _mapped_inside(m, ours_to_theirs)]
    heads = _collapse_to_containers([theirs(m) for m in saved], mapping.theirs_to_ours)
    out = _translated_config(config, targeted, heads)
    out.inference_mode = True

    state = peft.get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    renamed = _translate_keys(state, ours_to_theirs, unmappable, "the model's adapter")
    directory = files.output_directory_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out.save_pretrained(str(directory))
    tensors = {key: state[source].detach().cpu().contiguous() for key, source in renamed.items()}
    save_file = files.import_safetensors().torch.save_file
    save_file(tensors, str(directory / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    return directory
