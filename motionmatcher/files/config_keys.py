"""Unknown and mistyped keys of the workflow configuration, found before any job runs.

The JSON schema (``config/schemas/config.schema.yaml``) lists every key; Snakemake's
``validate`` would let an unknown key through wherever the schema does not close the mapping,
and a misspelt key (``train.stpes``) then silently falls back to its default. This walks the
config along the schema -- ``$ref``, ``allOf``, and ``oneOf`` chosen by the entry's ``type``
(the guidance methods) -- and reports, all at once:

* a key that no level of the schema knows (top level, ``video``, ``training``, ``sampling``,
  each method's entry and its ``train`` / ``sample`` / ``guidance``, ...), with the nearest known
  key (:func:`difflib.get_close_matches`);
* a method's ``loss_kwargs`` key that its loss (``train.loss``, after ``extends`` and the
  ``training:`` defaults) does not take; the losses' keyword arguments are read from the method
  modules' source (:func:`loss_keywords`), so the Snakefile does not import torch's models;
* a number written as a string, e.g. ``lr: 1e-4``: YAML 1.1 (PyYAML, Snakemake) reads a float
  only with a dot and a signed exponent, so ``1e-4`` is the text ``"1e-4"``; the message shows
  the spelling that is a number (``1.0e-4``); a plain number that arrives as text (quoted, or
  nested in ``--config``, which Snakemake passes on as text) is pointed to a YAML config file.
"""

from __future__ import annotations

import ast
import copy
import difflib
import functools
from pathlib import Path

import yaml

__all__ = ["ConfigKeyError", "check_config_keys", "config_key_problems", "loss_keywords", "yaml_number"]

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schemas" / "config.schema.yaml"
METHODS_DIR = Path(__file__).resolve().parents[1] / "methods"
#: keyword arguments the training loop passes itself (not config keys)
LOOP_KEYWORDS = {"generator"}


class ConfigKeyError(ValueError):
    """Unknown or mistyped config keys; ``problems`` lists each with its path."""

    def __init__(self, problems: list[str], where: str = "config"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{where}: {len(problems)} problem(s):\n{lines}")


def yaml_number(value: float) -> str:
    """``value`` spelt so that YAML 1.1 reads a float: ``1.0e-4``, ``2.5e+3``, ``0.5``."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        text = repr(float(value))
        return text
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = f"{float(mantissa):g}"
    if "." not in mantissa:
        mantissa += ".0"
    e = int(exponent)
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


@functools.lru_cache(maxsize=1)
def _schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _resolve(schema: dict, root: dict) -> dict:
    """``$ref`` followed and ``allOf`` merged into one schema (properties united)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **node}
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            sub = _resolve(sub, root)
            props = {**merged.get("properties", {}), **sub.get("properties", {})}
            merged = {**sub, **merged}
            if props:
                merged["properties"] = props
        schema = merged
    return schema


def _types(schema: dict) -> set[str]:
    t = schema.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _string_number(value: str, schema: dict, where: str) -> str | None:
    types = _types(schema)
    if not types & {"number", "integer"} or "string" in types:
        return None
    try:
        x = float(value.replace("_", ""))
    except ValueError:
        return None
    if "integer" in types and "number" not in types and x.is_integer():
        spelt = str(int(x))
    else:
        spelt = yaml_number(x)
    if "e" in value.lower():
        return (f"{where}: {value!r} is a string to YAML, not a number (YAML reads a number with an exponent "
                f"only with a dot and a signed exponent); write {spelt}")
    return (f"{where}: {value!r} is a string, not a number: quoted in YAML, or nested in --config "
            f"(Snakemake passes `--config 'key={{sub: {value}}}'` on as text); write {spelt} unquoted "
            f"in a YAML file (a second --configfile)")


def _walk(value, schema: dict, root: dict, where: str, problems: list[str]) -> None:
    schema = _resolve(schema, root)
    if isinstance(value, str):
        msg = _string_number(value, schema, where)
        if msg:
            problems.append(msg)
        return
    if "oneOf" in schema and isinstance(value, dict):  # the variant named by the entry's `type`
        for sub in schema["oneOf"]:
            sub = _resolve(sub, root)
            if (sub.get("properties", {}).get("type") or {}).get("const") == value.get("type"):
                _walk(value, sub, root, where, problems)
        return  # no variant: the method check names the type
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(item, schema["items"], root, f"{where}[{i}]", problems)
        return
    if not isinstance(value, dict):
        return
    props = schema.get("properties")
    extra = schema.get("additionalProperties", None if props else True)
    for key, sub in value.items():
        path = f"{where}.{key}" if where else str(key)
        if props and key in props:
            _walk(sub, props[key], root, path, problems)
        elif isinstance(extra, dict):
            _walk(sub, extra, root, path, problems)
        elif extra is not True:
            known = sorted(props or {})
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append(f"{path}: unknown key ({hint}known here: {', '.join(known)})")


@functools.lru_cache(maxsize=1)
def loss_keywords() -> dict[str, list[str]]:
    """``{loss name: [keyword arguments it takes]}``, read from the source of
    :mod:`motionmatcher.methods.registry` and the method modules (keyword-only parameters of
    each registered loss, less those the training loop passes)."""
    registry = ast.parse((METHODS_DIR / "registry.py").read_text())
    origin: dict[str, str] = {}  # function name -> module file
    losses: dict[str, str] = {}  # loss name -> function name
    for node in ast.walk(registry):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "LOSSES":
            for k, v in zip(node.value.keys, node.value.values):
                losses[k.value] = v.id
    out = {}
    for loss, fn in losses.items():
        module = ast.parse((METHODS_DIR / f"{origin[fn]}.py").read_text())
        node = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == fn)
        out[loss] = [a.arg for a in node.args.kwonlyargs if a.arg not in LOOP_KEYWORDS]
    return out


def _loss_kwargs_problems(config: dict) -> list[str]:
    from ..methods.config import MethodError, _merge, method_entry

    problems, seen = [], set()
    losses = loss_keywords()
    methods = config.get("methods") or {}

    def defined_at(name: str, *keys: str) -> str:
        """Where ``train.<keys...>`` of the method's merged entry is written: its own entry, an
        entry it extends, or ``training``."""
        chain = set()
        while name in methods and name not in chain:
            chain.add(name)
            entry = methods[name] or {}
            node = entry.get("train") or {}
            for k in keys[:-1]:
                node = (node or {}).get(k) or {}
            if keys[-1] in node:
                return f"methods.{name}.train.{'.'.join(keys)}"
            name = entry.get("extends")
        return f"training.{'.'.join(keys)}"

    for name in methods:
        try:
            entry = method_entry(config, name)
        except MethodError:
            continue  # reported when the method is used
        if entry.get("train") is None:
            continue
        train = _merge(config.get("training") or {}, entry["train"])
        loss = train.get("loss")
        if loss not in losses:
            where = defined_at(name, "loss")
            if loss is not None and where not in seen:
                seen.add(where)
                near = difflib.get_close_matches(str(loss), list(losses), n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                problems.append(f"{where}: unknown loss {loss!r} ({hint}known: {', '.join(losses)})")
            continue
        known = losses[loss]
        for key in (train.get("loss_kwargs") or {}):
            at = defined_at(name, "loss_kwargs", key)
            if key not in known and (at, loss) not in seen:
                seen.add((at, loss))
                near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                problems.append(f"{at}: loss {loss!r} (method {name}) takes no such option ({hint}it takes: "
                                f"{', '.join(known) or 'none'})")
    return problems


def config_key_problems(config: dict, schema_path: str | Path = SCHEMA) -> list[str]:
    """Every unknown or mistyped key of ``config`` (see the module docstring), as messages."""
    root = _schema(str(schema_path))
    problems: list[str] = []
    _walk(copy.deepcopy(config), root, root, "", problems)
    return problems + _loss_kwargs_problems(config)


def check_config_keys(config: dict, schema_path: str | Path = SCHEMA, where: str = "config") -> None:
    """Raise :class:`ConfigKeyError` listing :func:`config_key_problems`, if any."""
    problems = config_key_problems(config, schema_path)
    if problems:
        raise ConfigKeyError(problems, where)
