import os
import sys
from pathlib import Path

# Python's bytecode cache for the project and its tests, in this process and every process the
# suite starts (xdist workers, ranks, SLURM tasks, crash runners): an environment that sets
# PYTHONDONTWRITEBYTECODE (this machine's does) would have each of the ~30 fresh interpreters
# compile the package again (~0.3 s each; the test modules ~1.5 s per worker). The files go to the
# usual git-ignored __pycache__ folders; Python skips them where the tree is read-only.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# under pytest-xdist (`-n 2`) each worker and the processes its tests start use one thread, so
# that two workers share the 2 cores without oversubscribing them
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

# torch only where tests run: the xdist controller imports this file before it starts the
# workers, and a torch import there (~3 s) would delay them while a core idles
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


# Randomly initialised weight files for the learned metrics (nothing is downloaded). Conv weights
# are drawn He-normal (std = sqrt(2 / fan_in)) so that features keep a useful scale through deep
# networks; everything else keeps torch's default initialisation.
def _he_normal(state: dict, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.ndim == 4 and v.is_floating_point():
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:
            out[k] = v.clone()
    return out


@pytest.fixture(scope="session")
def alexnet_weights(tmp_path_factory):
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "alexnet-owt-7be5be79.pth"
    torch.save(_he_normal(torchvision.models.alexnet(weights=None).state_dict(), 1), path)
    return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A state dict with the layout of torch-fidelity's FID Inception (torchvision's
    Inception3 keys with 1008 classes and no auxiliary head)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    path = tmp_path_factory.mktemp("w") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(_he_normal(net.state_dict(), 2), path)
    return path


@pytest.fixture(scope="session")
def resnet_weights(tmp_path_factory):
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(0)
    net = timm.create_model("resnet18.tv_in1k", pretrained=False)
    path = tmp_path_factory.mktemp("w") / "resnet18-f37072fd.pth"
    torch.save(_he_normal(net.state_dict(), 3), path)
    return path


def pytest_collection_modifyitems(config, items):
    """The longest tests first, the 1-second ones last, so that under pytest-xdist the workers end
    together: the SLURM jobs (one worker; mostly waiting on sleeping test denoisers) alongside the
    runs of several processes (rank 0 in the worker, the other ranks fresh interpreters: they use
    the core the SLURM worker leaves idle), then the in-process slow tests, then the fast tier. A
    stable sort: each tier keeps its file order."""
    def tier(item) -> int:
        if item.get_closest_marker("slurm") is not None:
            return 0
        if item.get_closest_marker("multiprocess") is not None:
            return 1
        return 2 if item.get_closest_marker("slow") is not None else 3

    items.sort(key=tier)
