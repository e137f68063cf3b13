"""Command-line overrides that Hydra cannot compose, or composes into keys nothing reads, as one line each.

Hydra reports an unknown group option (`solver=<typo>`) or key (`nfee=5`) in 6-10 lines with exit status 1, and
accepts `+nfee=5` silently. Here each is one `error:` line (exit 2) that names what the user typed and the options
or keys that exist, closest first.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from fewstep.errors import FewstepError

# sections whose added keys their consumer checks itself (solver and schedule options, loggers by name)
CHECKED_BY_CONSUMER = ("solver", "schedule", "schedule.base_options", "eval.baseline_options", "logger")
SHOWN = 12  # options or keys named in one line


def closest_first(typed: str, names: Iterable[str]) -> list[str]:
    """`names` ordered by similarity to `typed` (ties alphabetical)."""
    def score(name: str) -> float:
        return difflib.SequenceMatcher(None, typed.lower(), name.lower()).ratio()

    return sorted(sorted(set(names)), key=lambda name: -score(name))


def listing(typed: str, names: Iterable[str], what: str) -> str:
    """`(did you mean X?); <what>, closest first: a, b, c` for a name that does not exist (alphabetical when
    nothing is close)."""
    names = sorted(set(names))
    if not names:
        return f"; there are no {what}"
    close = difflib.get_close_matches(typed, names, n=1, cutoff=0.6)
    ordered = closest_first(typed, names) if close else names
    hint = f" (did you mean {close[0]}?)" if close else ""
    more = f", ... ({len(ordered) - SHOWN} more)" if len(ordered) > SHOWN else ""
    order = ", closest first" if close else ""
    return f"{hint}; {what}{order}: {', '.join(ordered[:SHOWN])}{more}"


def typed_override(key: str, argv: Sequence[str]) -> str:
    """The command-line argument that set `key` (`nfee=5`, `+nfee=5`), or the key itself."""
    for arg in argv:
        name = arg.split("=", 1)[0].lstrip("+~")
        if name == key:
            return arg
    return key


def composition_error_line(err: Exception, argv: Sequence[str]) -> str:
    """One line for an error Hydra raised while composing the config (or instantiating from it)."""
    from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        if group:
            typed = typed_override(group, argv)
            shown = typed if "=" in typed else f"{group}={option}"
            return f"{shown}: there is no {group} option {option!r}" + listing(option, err.options, "the options")
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if full_key and isinstance(parent, DictConfig) and "not in struct" in str(cause):
        key = str(full_key).rpartition(".")[2]
        where = str(full_key).rpartition(".")[0]
        keys = [k for k in parent.keys() if k != "hydra"]
        if not keys:
            return (f"{typed_override(str(full_key), argv)}: no key {key!r} in {where or 'the config'}, which is "
                    f"empty: add it with +{full_key}=VALUE")  # fmt: skip
        return (f"{typed_override(str(full_key), argv)}: no key {key!r} in {where or 'the config'}"
                + listing(key, keys, "its keys"))  # fmt: skip
    if isinstance(err, OverrideParseException):
        return f"cannot read the overrides: {one_line(str(err))}"
    if isinstance(err, InstantiationException):
        return one_line(str(err))
    return one_line(str(err)) or type(err).__name__


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def check_added_keys(cfg: DictConfig, overrides: Sequence[str], groups: Iterable[str]) -> None:
    """`+key=value` adds a key Hydra's config does not have; refused unless something reads it: a constructor
    (a node with `_target_`) that takes it, or a section whose consumer checks its own options (solver,
    schedule, loggers). `groups`: the config groups (a `+group=option` adds a config, not a key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    groups = set(groups)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.type != OverrideType.ADD or key in groups or "/" in key or key.split(".")[0] == "hydra":
            continue
        parts = key.split(".")
        if any(".".join(parts[:i]) in CHECKED_BY_CONSUMER for i in range(1, len(parts))):
            continue
        level = len(parts) - 1
        while level > 0 and set(_node(cfg, parts[:level]).keys()) <= {parts[level]}:
            level -= 1  # the parent was made by this override too: name the first new key
        parent_path, name = ".".join(parts[:level]), parts[level]
        parent = _node(cfg, parts[:level])
        if parent_path in CHECKED_BY_CONSUMER:
            continue
        typed = override.input_line or key
        if "_target_" in parent:
            accepted = _constructor_parameters(str(parent["_target_"]))
            if accepted is None or name in accepted:
                continue
            raise FewstepError(f"{typed}: {parent['_target_']} ({parent_path}) takes no {name!r}"
                               + listing(name, accepted, "it takes"))  # fmt: skip
        siblings = [k for k in parent.keys() if k not in (name, "hydra")]
        raise FewstepError(f"{typed}: nothing reads a key {name!r} in {parent_path or 'the config'}"
                           + listing(name, siblings, "its keys"))  # fmt: skip


def _node(cfg: DictConfig, parts: Sequence[str]) -> DictConfig:
    node = OmegaConf.select(cfg, ".".join(parts)) if parts else cfg
    return node if isinstance(node, DictConfig) else OmegaConf.create({})


def _constructor_parameters(target: str) -> list[str] | None:
    """The keyword parameters of a `_target_`; None when it takes any (`**kwargs`) or cannot be inspected."""
    from hydra.utils import get_object

    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except Exception:
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name != "self"]
