"""Weight files: search order, safe loading, wrapped checkpoints."""
import pytest
import torch
from safetensors.torch import save_file

from lightning_redd.metrics.weights import hub_checkpoints_dir, load_state_dict_file, resolve_weights


class NotATensor:
    pass


def test_search_order(tmp_path):
    kw = dict(file_names=["a.pth", "b.pth"], what="thing", source="https://example.org/a.pth")
    with pytest.raises(FileNotFoundError, match="a.pth not found in .*example.org"):
        resolve_weights(None, **kw)
    folder = hub_checkpoints_dir()
    folder.mkdir(parents=True)
    (folder / "b.pth").write_bytes(b"")
    assert resolve_weights(None, **kw) == folder / "b.pth"  # second accepted name
    (folder / "a.pth").write_bytes(b"")
    assert resolve_weights(None, **kw) == folder / "a.pth"
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"")
    assert resolve_weights(explicit, **kw) == explicit
    with pytest.raises(FileNotFoundError, match="given as weights="):
        resolve_weights(tmp_path / "nope.pth", **kw)


def test_loading_is_tensors_only_and_unwraps(tmp_path):
    t = {"w": torch.ones(2)}
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, tmp_path / "ddp.ckpt")
    assert torch.equal(load_state_dict_file(tmp_path / "ddp.ckpt", what="x")["w"], t["w"])
    save_file(t, tmp_path / "w.safetensors")
    assert torch.equal(load_state_dict_file(tmp_path / "w.safetensors", what="x")["w"], t["w"])
    torch.save({"w": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="cannot load weights"):
        load_state_dict_file(tmp_path / "code.pth", what="x")
