"""The CLI's argument parser: errors first, in a line or two, with a close-match suggestion.

jsonargparse prints a page of usage before an error, and wraps a bad value of a class
argument in its Union-type report (``Does not validate against any of the Union
subtypes ... Given value: NestedArg(...)``). :class:`ReddParser` prints instead::

    lightning-redd: error: unrecognized arguments: --trainer.devcies 2
      did you mean --trainer.devices?
    (lightning-redd predict --help lists every option; lightning-redd list shows tasks, solvers and priors)

A ``class_path`` that names no usable class (a typo, a missing module, a function) says why,
with close matches among the classes the option takes (the subclasses of its type, i.e. the
registered solvers, operators or priors)::

    lightning-redd: error: model.solver: module lightning_redd.solvers.red_diff has no class 'RedDif'
      did you mean RedDiff (lightning_redd.solvers.red_diff.RedDiff)?
      Solver classes: Classical, DDIM, DDRM, DPS, PiGDM, RedDiff
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
import typing

from lightning.pytorch.cli import LightningArgumentParser

from lightning_redd import resources

_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected (?:a |an )?(.+?)\. Got value: (.+)")
_LITERAL = re.compile(r"typing\.Literal\[(.*)\]")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_GIVEN = (_CLASS_PATH, re.compile(r"Expected a dot import path string: (\S+)"),
          re.compile(r"NestedArg\(key='class_path', val='([^']+)'\)"), re.compile(r"Expected a path but (\S+) either not"))
_NO_ATTRIBUTE = re.compile(r"module '([^']+)' has no attribute '([^']+)'")
_NO_MODULE = re.compile(r"No module named '([^']+)'")
_NOT_SUBCLASS = re.compile(r"does not correspond to a subclass of (\w+)")
#: lines of jsonargparse's Union report that say nothing about the cause
_FRAME = ("Expected a path but", "Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>",
          "Problem with given class_path", 'Parser key "')


def given_class_path(message: str) -> str | None:
    """The class path (or short class name) a class-resolution error is about."""
    for pattern in _GIVEN:
        m = pattern.search(message)
        if m:
            return m.group(1)
    return None


def class_path_reason(message: str) -> str | None:
    """Why the ``class_path`` in ``message`` names no usable class, or None if it is not that error."""
    given = given_class_path(message)
    if given is None:
        return None
    attr, module, subclass = _NO_ATTRIBUTE.search(message), _NO_MODULE.search(message), _NOT_SUBCLASS.search(message)
    if attr and given == f"{attr.group(1)}.{attr.group(2)}":
        return f"module {attr.group(1)} has no class {attr.group(2)!r}"
    if attr or module:
        return f"cannot import {given}: " + (f"no module {attr.group(1)}.{attr.group(2)}" if attr else f"no module {module.group(1)!r}")
    if subclass:
        kind = _kind_of(given)
        return f"{given} is {kind}, not a {subclass.group(1)} class" if kind else f"{given} is not a {subclass.group(1)} class"
    if "dot import path string" in message:
        return f"no class is called {given!r}"
    if "is abstract" in message:
        return f"{given} is abstract: name one of its concrete subclasses"
    return None


def _kind_of(path: str) -> str | None:
    """'a function', 'a module', 'a dict', ... for the object at ``path`` (jsonargparse imported it)."""
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return "a function" if inspect.isfunction(found) else f"a {type(found).__name__}"


def tidy(message: str) -> str:
    """A jsonargparse error reduced to the key that failed and what it expected (or, for a
    class path, why it names no usable class)."""
    keys = [k for k in _KEY.findall(message)]
    key = ".".join(dict.fromkeys(keys)) if keys else "a value"
    reason = class_path_reason(message)
    if reason:
        return f"{key}: {reason}"
    if "Does not validate against any of the Union subtypes" not in message and "Problem with given class_path" not in message:
        return message.strip()
    for line in message.splitlines():
        m = _EXPECTED.search(line)
        if m and "NoneType" not in m.group(1):
            expected = m.group(1)
            lit = _LITERAL.fullmatch(expected)
            if lit:
                expected = "one of " + lit.group(1)
            return f"{key}: got {m.group(2).strip()}, expected {expected}"
    option = _NOT_ACCEPTED.search(message)
    if option:
        cls = _CLASS_PATH.search(message)
        owner = cls.group(1).rsplit(".", 1)[-1] if cls else "this class"
        return f"{key}: {owner} has no option {option.group(1)!r}"
    inner = [line.strip() for line in message.splitlines() if line.strip().startswith(("Key ", "Unexpected", "No action"))]
    causes = [ln.strip().lstrip("- ") for ln in message.splitlines() if ln.strip() and not ln.strip().lstrip("- ").startswith(_FRAME)]
    return f"{key}: {(inner or causes or ['(jsonargparse gave no reason)'])[0]}"


def class_options(message: str) -> list[str]:
    """The constructor arguments of the class a nested-option error is about."""
    cls = _CLASS_PATH.search(message)
    if not cls:
        return []
    module, _, name = cls.group(1).rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]


def option_types(parser, key: str) -> list[type]:
    """The classes named by the type of option ``key`` (``Solver | None`` -> ``[Solver]``)."""
    action = next((a for a in parser._actions if a.dest == key), None)
    hint = getattr(action, "_typehint", None)
    return [t for t in (typing.get_args(hint) or (hint,)) if isinstance(t, type) and t is not type(None)]


def known_classes(bases: list[type]) -> list[type]:
    """Every imported concrete subclass of ``bases`` (the registries fill themselves on import:
    solvers, operators, priors), sorted by name."""
    todo, found = list(bases), {}
    while todo:
        for sub in todo.pop().__subclasses__():
            if not sub.__name__.startswith("_") and not inspect.isabstract(sub):
                found.setdefault(sub.__name__, sub)
            todo.append(sub)
    return sorted(found.values(), key=lambda c: c.__name__.lower())


def class_suggestions(message: str, parser) -> list[str]:
    """Close matches for a class path that names no usable class, and the classes the option takes."""
    given, keys = given_class_path(message), _KEY.findall(message)
    if not given or not keys or not class_path_reason(message):
        return []
    bases = option_types(parser, keys[0])
    by_name = {c.__name__.lower(): c for c in known_classes(bases)}
    if not by_name:
        return []
    close = difflib.get_close_matches(given.rsplit(".", 1)[-1].lower(), list(by_name), n=2, cutoff=0.75)
    named = [f"{by_name[n].__name__} ({by_name[n].__module__}.{by_name[n].__name__})" for n in close]
    out = [f"did you mean {' or '.join(named)}?"] if named else []
    return out + [f"{bases[0].__name__} classes: {', '.join(c.__name__ for c in by_name.values())}"]


def option_strings(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def suggestions(message: str, parser) -> list[str]:
    """Close matches for misspelt options and missing config files in ``message``."""
    out = class_suggestions(message, parser)
    if "unrecognized arguments" in message.lower():
        known = [o for o in option_strings(parser) if not o.endswith("+")]
        for bad in re.findall(r"(--[\w.\-]+)", message):
            close = difflib.get_close_matches(bad.split("=")[0], known, n=2, cutoff=0.8)
            if close:
                out.append(f"did you mean {' or '.join(close)}?")
    option = _NOT_ACCEPTED.search(message)
    if option:
        close = difflib.get_close_matches(option.group(1), class_options(message), n=2, cutoff=0.6)
        if close:
            out.append(f"did you mean {' or '.join(close)}?")
    missing = re.search(r'key "config": File does not exist: \'([^\']+)\'', message)
    if missing:
        wanted = missing.group(1)
        names = resources.config_names()
        stem = wanted.split("configs/")[-1] if "configs/" in wanted else wanted.rsplit("/", 1)[-1]
        close = difflib.get_close_matches(stem.removesuffix(".yaml"), names, n=3, cutoff=0.5)
        hint = f"did you mean --config {' or --config '.join(close)}? " if close else ""
        out.append(f"{hint}bundled configs (usable by name from any folder): `lightning-redd list configs`")
    return out


class ReddParser(LightningArgumentParser):
    """LightningCLI's parser with short, suggestion-bearing errors and no usage dump."""

    def error(self, message: str, ex: Exception | None = None):
        from jsonargparse._common import debug_mode_active  # the same switch jsonargparse honours

        if not self.exit_on_error or debug_mode_active():
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        lines = [f"lightning-redd: error: {tidy(message)}"] + [f"  {s}" for s in suggestions(message, parser)]
        prog = parser.prog.replace(" [options]", "")
        lines.append(f"({prog} --help lists every option; lightning-redd list shows tasks, solvers and priors)")
        sys.stderr.write("\n".join(lines) + "\n")
        self.exit(2)
