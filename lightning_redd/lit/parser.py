"""The CLI's argument parser: errors first, in a line or two, with a close-match suggestion.

jsonargparse prints a page of usage before an error, and wraps a bad value of a class
argument in its Union-type report (``Does not validate against any of the Union
subtypes ... Given value: NestedArg(...)``). :class:`ReddParser` prints instead::

    lightning-redd: error: unrecognized arguments: --trainer.devcies 2
      did you mean --trainer.devices?
    (lightning-redd predict --help lists every option; lightning-redd list shows tasks, solvers and priors)
"""
from __future__ import annotations

import difflib
import re
import sys

from lightning.pytorch.cli import LightningArgumentParser

from lightning_redd import resources

_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected (?:a |an )?(.+?)\. Got value: (.+)")
_LITERAL = re.compile(r"typing\.Literal\[(.*)\]")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")


def tidy(message: str) -> str:
    """A jsonargparse error reduced to the key that failed and what it expected."""
    if "Does not validate against any of the Union subtypes" not in message and "Problem with given class_path" not in message:
        return message.strip()
    keys = [k for k in _KEY.findall(message)]
    key = ".".join(dict.fromkeys(keys)) if keys else "a value"
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
    return f"{key}: {inner[0]}" if inner else message.strip().splitlines()[0]


def class_options(message: str) -> list[str]:
    """The constructor arguments of the class a nested-option error is about."""
    import importlib
    import inspect

    cls = _CLASS_PATH.search(message)
    if not cls:
        return []
    module, _, name = cls.group(1).rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]


def option_strings(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def suggestions(message: str, parser) -> list[str]:
    """Close matches for misspelt options and missing config files in ``message``."""
    out = []
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
