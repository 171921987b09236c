"""A run's signature: the settings that decide its results, recorded in its output folder.

Re-running a command in the same output folder resumes it; re-running it with settings that
change results (the prior, operator, solver, data, seed, precision) would mix two runs'
images in one folder, so it is refused with the differing keys. Settings that do not change
any image's result are left out of the signature, so a resume may change them: the number of
devices, nodes and workers, the strategy, the batch size (results do not depend on it),
``data.limit``, logging and progress options.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from lightning_redd import resources
from lightning_redd.runs.folder import RUN_CONFIG, RunFolder

#: top-level sections (or single keys) that decide results
DECIDING = ("model", "data", "seed_everything", "trainer.precision")
#: keys inside those that do not change any image's result
NOT_DECIDING = ("model.log_every", "data.batch_size", "data.num_workers", "data.limit", "data.output_dir", "data.repeats",
                "data.file_params")
#: settings added after runs were recorded, at the value that gives the earlier results: left out of the
#: signature there, so a run recorded before them keeps its folder and resumes
ADDED_AT_DEFAULT = {"data.samples_per_image": 1, "model.solver.init_args.time_grid": "linear"}
#: the data module class a signature leaves unnamed (the CLI's default)
DEFAULT_DATA = "lightning_redd.data.folder.ImageFolderData"


class RunConfigMismatch(ValueError):
    """The output folder holds a run made with different deciding settings."""


class RunRecordUnreadable(RunConfigMismatch):
    """The output folder's ``run_config.yaml`` cannot be read as a run record."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def signature(config: dict) -> dict[str, Any]:
    """The deciding settings of a resolved config (a plain dict), as dotted keys.

    ``data.root`` is made absolute, so the same folder named from another directory matches.
    """
    plain = json.loads(json.dumps(config, default=str))  # plain values (tuples -> lists, paths -> str)
    data = plain.get("data")
    if isinstance(data, dict) and "init_args" in data:  # data.X for the default class, as before classes were chosen
        cls = data.get("class_path")
        plain["data"] = {**({} if cls == DEFAULT_DATA else {"class_path": cls}), **(data.get("init_args") or {})}
    flat = flatten(plain)
    sig = {k: v for k, v in flat.items() if any(k == d or k.startswith(d + ".") for d in DECIDING)}
    sig = {k: v for k, v in sig.items() if not any(k == n or k.startswith(n + ".") for n in NOT_DECIDING)}
    for key, default in ADDED_AT_DEFAULT.items():
        if key in sig and sig[key] == default:
            del sig[key]
    if sig.get("data.root") is not None:
        sig["data.root"] = str(resources.resolve_data(sig["data.root"]).resolve())
    return sig


def folder_name(sig: dict[str, Any], configs: list[str]) -> str:
    """The default output folder of a run: its config files' names and a short hash of its
    deciding settings, e.g. ``demo+sr_block-3fa2c1d0``; without config files the operator and
    solver classes, e.g. ``inpainting+reddiff-3fa2c1d0``. The same command always maps to the
    same folder (so re-running it resumes); other deciding settings to another one."""
    digest = hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:8]
    names = [Path(c).stem for c in configs]
    if not names:
        names = [str(sig.get(f"model.{k}.class_path", k)).rsplit(".", 1)[-1].lower() for k in ("operator", "solver")]
    return f"{'+'.join(names)}-{digest}"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable lines for every key whose value differs (or exists on one side only)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b:
            lines.append(f"{key}: {a!r} there, {b!r} now")
    return lines


def read(root: Path) -> dict[str, Any] | None:
    """The signature recorded in ``root`` (None if no run was recorded there); raises
    :class:`RunRecordUnreadable` naming the file if it is not a run record."""
    path = Path(root) / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        problem = None if isinstance(doc, dict) and isinstance(doc.get("signature", {}), dict) else "no signature mapping"
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        problem = " ".join(str(err).split())
    if problem is not None:
        raise RunRecordUnreadable(
            f"{path} is not a readable lightning-redd run record ({problem}), so this folder's settings cannot be "
            "checked against the run's. Fix: choose another --trainer.default_root_dir; if the folder's run is yours, "
            "--overwrite true deletes the files its manifest lists (this one included) and starts afresh"
        )
    return dict(doc.get("signature", {}))


def check(root: Path, sig: dict[str, Any]) -> None:
    """Raise :class:`RunConfigMismatch` if ``root`` holds a run with other deciding settings."""
    old = read(root)
    if old is None:
        return
    diff = differences(old, sig)
    if diff:
        lines = "\n".join(f"  - {d}" for d in diff)
        raise RunConfigMismatch(
            f"the output folder {root} holds a run made with other settings ({RUN_CONFIG}), and resuming it with "
            f"these would mix two runs' results. {len(diff)} setting(s) differ:\n{lines}\n"
            "Fix: choose another --trainer.default_root_dir, re-run with the recorded settings to finish that run, "
            "or add --overwrite true to delete that run's images, records and metrics.csv first."
        )


def write(root: Path, sig: dict[str, Any], config_yaml: str) -> Path:
    """Record the run's signature and its full resolved config in ``root/run_config.yaml``."""
    doc = yaml.safe_dump({"signature": sig}, sort_keys=True, default_flow_style=False)
    text = ("# lightning-redd run record. 'signature' holds the settings that decide this folder's results: a run in\n"
            "# this folder with other values is refused. 'config' is the full resolved config of the latest run.\n"
            + doc + "config:\n" + "".join(f"  {line}\n" for line in config_yaml.splitlines()))
    return RunFolder(root).write_text(RUN_CONFIG, text)
