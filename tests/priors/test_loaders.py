"""Checkpoint loading: every format round-trips, unsafe pickles are refused, mismatches explained."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.loaders import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_state_dict_file,
    unwrap_state_dict,
)

SMALL = dict(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
    num_heads=4, num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
)


@pytest.fixture(scope="module")
def reference():
    """A small randomly filled ADM prior, its state dict, and its eps on a fixed batch."""
    prior = ADMPrior(**SMALL, allow_random_init=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in prior.net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([0, 999])
    return prior.net.state_dict(), (x, t), prior.eps(x, t)


def _write(kind: str, sd: dict, path) -> None:
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif kind == "legacy":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif kind == "wrapped":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "step": 3, "note": "x"}, path)
    elif kind == "ema":
        torch.save({"model": {"w": torch.zeros(1)}, "ema": sd}, path)
    else:
        torch.save(sd, path)


@pytest.mark.parametrize(
    "kind,suffix",
    [("plain", ".pt"), ("plain", ".pth"), ("safetensors", ".safetensors"), ("legacy", ".pt"),
     ("wrapped", ".ckpt"), ("ema", ".pt")],
)
def test_every_format_gives_identical_outputs(tmp_path, reference, kind, suffix):
    sd, (x, t), eps = reference
    path = tmp_path / f"weights{suffix}"
    _write(kind, sd, path)
    prior = ADMPrior(**SMALL, checkpoint=str(path))
    assert not any(p.is_meta for p in prior.parameters())
    assert not any(p.requires_grad for p in prior.parameters())
    torch.testing.assert_close(prior.eps(x, t), eps, rtol=0, atol=0)


def test_half_precision_checkpoint_is_upcast(tmp_path, reference):
    sd, (x, t), eps = reference
    torch.save({k: v.half() for k, v in sd.items()}, tmp_path / "half.pt")
    prior = ADMPrior(**SMALL, checkpoint=str(tmp_path / "half.pt"))
    assert all(p.dtype == torch.float32 for p in prior.parameters())
    torch.testing.assert_close(prior.eps(x, t), eps, atol=2e-2, rtol=0)


def test_wrong_config_lists_keys_and_names_fix(tmp_path, reference):
    sd, _, _ = reference
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        ADMPrior(**{**SMALL, "learn_sigma": False}, checkpoint=str(tmp_path / "w.pt"))
    msg = str(info.value)
    assert "2 shape mismatches" in msg and "out.2.weight: checkpoint (6, 32, 3, 3) vs network (3, 32, 3, 3)" in msg
    assert "missing keys" not in msg and "unexpected keys" not in msg
    assert "Likely fix" in msg and "learn_sigma" in msg and "w.pt" in msg
    with pytest.raises(CheckpointMismatchError) as info:
        ADMPrior(**{**SMALL, "attention_resolutions": "16"}, checkpoint=str(tmp_path / "w.pt"))
    msg = str(info.value)
    assert "10 missing keys: ['output_blocks.1.1.in_layers.0.weight'" in msg
    assert "28 unexpected keys: ['input_blocks.5.1.norm.weight'" in msg and "(+20 more)" in msg


class _Payload:
    """Unpickling this would create the file named ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("writer", ["raw_pickle", "torch_save"])
def test_code_running_pickle_is_refused(tmp_path, writer):
    target = tmp_path / "created_by_pickle.txt"
    path = tmp_path / "evil.pt"
    payload = {"weight": _Payload(str(target))}
    if writer == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_state_dict_file(path)
    with pytest.raises(pickle.UnpicklingError):
        ADMPrior(**SMALL, checkpoint=str(path))
    assert not target.exists()
    # sanity: the payload really would have run under an unrestricted unpickler
    pickle.loads(pickle.dumps(_Payload(str(target))))
    assert target.exists()


def test_missing_file_and_bad_suffix(tmp_path):
    missing = tmp_path / "nope" / "256x256_diffusion_uncond.pt"
    with pytest.raises(FileNotFoundError) as info:
        ADMPrior(**SMALL, checkpoint=str(missing))
    assert str(missing) in str(info.value) and "--model.prior.init_args.checkpoint" in str(info.value)
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        load_state_dict_file(tmp_path / "w.npz")


def test_unwrap_rules():
    w = torch.zeros(2)
    assert list(unwrap_state_dict({"_orig_mod.a": w, "_orig_mod.b": w})) == ["a", "b"]
    assert list(unwrap_state_dict({"module.a": w, "b": w})) == ["module.a", "b"]  # prefix not shared: kept
    assert list(unwrap_state_dict({"ema": {"state_dict": {"a": w}}})) == ["a"]
    with pytest.raises(CheckpointMismatchError, match="no tensors"):
        unwrap_state_dict({"epoch": 3})


def test_meta_build_assigns_checkpoint_tensors_without_copy(tmp_path, reference):
    from lightning_redd.priors.loaders import load_into
    from lightning_redd.priors.networks.adm import ADMUNet, adm_kwargs

    sd, (x, t), eps = reference
    torch.save(sd, tmp_path / "w.pt")
    loaded = load_state_dict_file(tmp_path / "w.pt")
    with torch.device("meta"):
        net = ADMUNet(**adm_kwargs(**SMALL))
    load_into(net, loaded)
    for name, p in net.named_parameters():
        assert p.data_ptr() == loaded[name].data_ptr(), name  # assigned, not copied
    torch.testing.assert_close(net(x, t)[:, :3], eps, rtol=0, atol=0)
