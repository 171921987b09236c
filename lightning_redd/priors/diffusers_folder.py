"""Reading the parts of a local diffusers pipeline folder safely (nothing downloaded, nothing unpickled).

A pipeline folder as ``pipeline.save_pretrained(folder)`` writes it::

    folder/model_index.json                     (optional: names each part's subfolder and class)
    folder/vae/ or folder/vqvae/                config.json + diffusion_pytorch_model.safetensors (or .bin)
    folder/unet/                                config.json + diffusion_pytorch_model.safetensors (or .bin)
    folder/scheduler/scheduler_config.json
    folder/text_encoder/, folder/tokenizer/     (Stable Diffusion; used only with transformers)

:func:`load_part` builds a diffusers model from its ``config.json`` on the meta device and
assigns the weights read by :func:`lightning_redd.priors.loaders.load_state_dict_file`:
safetensors memory-mapped, ``.bin`` through ``torch.load(weights_only=True)`` (a pickle that
would run code is refused), sharded files through their ``*.index.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_redd.priors.diffusers_prior import _import_diffusers
from lightning_redd.priors.loaders import CheckpointError, load_into, load_state_dict_file

WEIGHTS = "diffusion_pytorch_model"
AUTOENCODERS = ("AutoencoderKL", "VQModel")
UNETS = ("UNet2DModel", "UNet2DConditionModel")


def pipeline_folder(path: str | None, what: str) -> Path:
    """``path`` as an existing folder, else a one-line error naming the setting."""
    if path is None:
        raise ValueError(f"{what} needs the local diffusers folder: set model.prior.init_args.path "
                         "(a folder written by pipeline.save_pretrained; nothing is downloaded)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusers folder not found: {str(folder)!r}; set model.prior.init_args.path to a local "
                                "folder written by pipeline.save_pretrained (hub names are not downloaded)")
    return folder


def _class_name(subdir: Path) -> str | None:
    cfg = subdir / "config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{str(cfg)!r} is not a JSON object: copy the folder again") from None


def find_part(folder: Path, names: tuple[str, ...], classes: tuple[str, ...], what: str) -> Path:
    """The subfolder of ``folder`` holding the part ``what``: one of ``names`` (after the
    subfolders ``model_index.json`` lists for those classes) whose ``config.json`` names one of
    ``classes``. Raises a one-line ``FileNotFoundError`` naming the folder and what is expected."""
    candidates = list(names)
    index = folder / "model_index.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        listed = [k for k, v in entries.items() if isinstance(v, list) and len(v) == 2 and v[1] in classes]
        candidates = listed + [n for n in candidates if n not in listed]
    for name in candidates:
        found = _class_name(folder / name)
        if found in classes:
            return folder / name
        if found is not None:
            raise ValueError(f"{str(folder / name)!r} holds a {found}, not a {what} ({'/'.join(classes)})")
    raise FileNotFoundError(f"no {what} in {str(folder)!r}: expected a subfolder {'/ or '.join(names)}/ with config.json "
                            f"(_class_name {' or '.join(classes)}) and its weights, as pipeline.save_pretrained writes")


def weight_files(subdir: Path, variant: str | None = None) -> list[Path]:
    """The weight file(s) of a diffusers model folder: safetensors first, then ``.bin``; a
    sharded model's files from its ``.index.json``. ``variant`` (e.g. ``"fp16"``) picks
    ``diffusion_pytorch_model.<variant>.safetensors``."""
    stem = f"{WEIGHTS}.{variant}" if variant else WEIGHTS
    for suffix in (".safetensors", ".bin"):
        single = subdir / f"{stem}{suffix}"
        if single.is_file():
            return [single]
        index = subdir / f"{stem}{suffix}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            return [subdir / s for s in shards]
    raise FileNotFoundError(f"no weights in {str(subdir)!r}: expected {stem}.safetensors (or .bin, or a sharded "
                            "*.index.json) as save_pretrained writes" + ("" if variant else "; for fp16-only folders set variant: fp16"))


def load_part(subdir: Path, variant: str | None = None) -> nn.Module:
    """The diffusers model of ``subdir`` (its ``config.json`` class) with its weights, frozen, eval mode.

    Raises:
        UnsafeCheckpointError: a ``.bin`` whose pickle would run code (nothing is executed).
        CheckpointMismatchError: weights that do not fit the config.
    """
    diffusers = _import_diffusers()
    config = json.loads((subdir / "config.json").read_text())
    cls = getattr(diffusers, config.get("_class_name", ""), None)
    if cls is None:
        raise ValueError(f"{str(subdir / 'config.json')!r} names no diffusers model class ({config.get('_class_name')!r})")
    with torch.device("meta"):
        model = cls.from_config(config)
    sd: dict[str, torch.Tensor] = {}
    files = weight_files(subdir, variant)
    for f in files:
        sd.update(load_state_dict_file(f, "copy the folder again"))
    load_into(model, sd, source=str(files[0]), fix_hint=f"the weights of {str(subdir)!r} must match its config.json")
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{str(subdir)!r}: no weights for {left[:4]}; copy the folder again")
    return model.eval().requires_grad_(False)


def load_prompt_file(path: str | Path, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(prompt_embeds, negative_prompt_embeds or None)`` ``(1, L, width)`` float32 from a
    ``.safetensors`` / ``.pt`` file holding those keys (each ``(L, width)`` or ``(1, L, width)``)."""
    sd = load_state_dict_file(path, "set model.prior.init_args.prompt_embeds to the file")
    if "prompt_embeds" not in sd:
        raise ValueError(f"{str(path)!r} holds {sorted(sd)}; expected the key 'prompt_embeds' (and optionally "
                         "'negative_prompt_embeds'), each (L, D) or (1, L, D)")
    out = []
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        t = sd.get(key)
        if t is not None:
            t = t.float()[None] if t.ndim == 2 else t.float()
            if t.ndim != 3 or t.shape[0] != 1 or t.shape[-1] != width:
                raise ValueError(f"{key} in {str(path)!r} has shape {tuple(t.shape)}; expected (1, L, {width}) "
                                 f"(width = the UNet's cross_attention_dim)")
        out.append(t)
    return out[0], out[1]


def encode_prompts(folder: Path, prompts: list[str]) -> list[torch.Tensor]:
    """Each prompt's ``(1, L, D)`` embedding from the folder's ``tokenizer/`` and CLIP
    ``text_encoder/`` (needs ``transformers``; safetensors weights only)."""
    try:
        import transformers
    except ImportError:
        raise ImportError("a prompt needs the folder's text encoder, which needs transformers: pip install transformers, "
                          "or pass prompt_embeds (a file) instead") from None
    for part in ("tokenizer", "text_encoder"):
        if not (folder / part).is_dir():
            raise FileNotFoundError(f"no {part}/ in {str(folder)!r}: a prompt needs the folder's tokenizer/ and "
                                    "text_encoder/; pass prompt_embeds (a file) instead")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    encoder = transformers.CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True,
                                                         use_safetensors=True).eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            out.append(encoder(ids)[0].float())
    return out


def prompt_length(folder: Path) -> int:
    """Token count ``L`` of the folder's tokenizer (``model_max_length``; 77 if unknown)."""
    cfg = folder / "tokenizer" / "tokenizer_config.json"
    value: Any = json.loads(cfg.read_text()).get("model_max_length", 77) if cfg.is_file() else 77
    return int(value) if isinstance(value, int) and 0 < value <= 4096 else 77
