"""Run the RED-diff update loop of the paper's reference code (NVlabs/RED-diff) from a local
checkout, on our prior, operator and measurement. Nothing of the checkout is copied here: its
modules are imported from ``path`` at run time.

What is imported from the checkout, unchanged: ``algos/reddiff.py`` (``REDDIFF.sample``, the
update loop), its base ``algos/ddim.py``, ``models/diffusion.py`` (the schedule),
``models/classifier_guidance_model.py`` (how it calls the network), ``utils/functions.py``
(``get_timesteps``) and ``_configs/algo/reddiff.yaml`` / ``_configs/diffusion/linear1000.yaml``
(its defaults, overridden by our few settings).

Shims, each the smallest that lets that code run on a CPU with our problem:

* ``omegaconf`` (only its ``DictConfig`` type annotation is used) is stubbed when not installed,
  and hydra is never imported;
  the config is a nested namespace with attribute access, which is all the loop reads;
* ``algos``, ``models`` and ``utils`` are registered as bare packages so that their
  ``__init__.py`` files (which import every algorithm, hydra, the checkpoint loaders, ...) are
  skipped;
* ``Diffusion`` calls ``.cuda()`` on its schedule: during its construction only,
  ``Tensor.cuda`` returns the tensor unchanged;
* ``build_degredation_model`` (called by ``REDDIFF.__init__``) returns an adapter of our bound
  operator (``H.H(x) = op(x)``, full-size ``y`` with zeros at the missing pixels, as our
  operator and the paper's inpainting runs use; ``H.H_pinv(y) = op.pinv(y)``), so both sides
  solve the identical ``y`` with the identical data term;
* the network the loop calls (``model(xt, t)[:, :3]``) is a prior's ``eps``, called as the
  reference calls it: with autograd on (its defect: the graph through the network is kept until
  ``loss.backward()``); ``vs_reference`` gives it the shipped weights as the reference's
  ``main.py`` holds a network (parameters that require grad, default memory format, math
  attention), or, with ``--reference-network frozen``, our frozen prior (only the input's graph
  is kept: cheaper than the reference really is);
* optionally (``noise="shared"``) the loop's ``torch.randn_like`` draws from our per-image
  solver generators in our order, so that the two loops see the same noise and their results
  can be compared to rounding (``noise="independent"``: its own global-RNG draws).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types
from pathlib import Path

import torch
import yaml

from lightning_redd import seeding

#: files of the checkout the comparison imports (checked up front, to name what is missing).
NEEDED = ("algos/reddiff.py", "algos/ddim.py", "models/diffusion.py", "models/classifier_guidance_model.py",
          "utils/functions.py", "_configs/algo/reddiff.yaml", "_configs/diffusion/linear1000.yaml")
#: top-level package names of the checkout that land in ``sys.modules``.
PACKAGES = ("algos", "models", "utils")


def namespace(d):
    """A nested ``SimpleNamespace`` of a dict (attribute access, as omegaconf gives)."""
    if isinstance(d, dict):
        return types.SimpleNamespace(**{k: namespace(v) for k, v in d.items()})
    return d


@contextlib.contextmanager
def cuda_is_identity():
    """``Tensor.cuda`` returns the tensor unchanged (the reference's schedule calls it)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


class OperatorAdapter:
    """Our bound operator behind the reference's degradation interface (``H``, ``H_pinv``)."""

    def __init__(self, op) -> None:
        self.op = op

    def H(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.pinv(y)


class NetworkAdapter:
    """``model(xt, t) -> (B, C, H, W)``, the call ``ClassifierGuidanceModel`` makes, on our prior."""

    def __init__(self, prior) -> None:
        self.prior = prior

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.prior.eps(xt, t)


class SharedNoiseTorch(types.ModuleType):
    """``torch`` for the reference module, except ``randn_like``: the loop's draws come from our
    per-image solver generators, in the order our ``RedDiff`` draws them (``n0`` only when
    ``sigma_x0 > 0``, then ``eps``); the reference draws ``noise_x0`` then ``noise_xt`` each
    iterate, so with ``sigma_x0 == 0`` its ``noise_x0`` (multiplied by 0) is zeros."""

    def __init__(self, gens, sigma_x0: float) -> None:
        super().__init__("torch")
        self._gens, self._sigma_x0, self._calls = gens, sigma_x0, 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, t: torch.Tensor, **kw) -> torch.Tensor:
        first = self._calls % 2 == 0
        self._calls += 1
        if first and self._sigma_x0 == 0:
            return torch.zeros_like(t)
        return seeding.randn(t.shape[1:], self._gens, device=t.device, dtype=t.dtype)


class Reference:
    """The reference's modules, imported from a checkout at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        missing = [f for f in NEEDED if not (self.path / f).is_file()]
        if missing:
            raise SystemExit(f"--reference {self.path} is not a checkout of NVlabs/RED-diff: missing {missing}")
        for name in PACKAGES:
            mod = sys.modules.get(name)
            if mod is not None and not str(getattr(mod, "__file__", None) or getattr(mod, "__path__", [""])[0]).startswith(str(self.path)):
                raise SystemExit(f"a module named {name!r} is already imported from elsewhere ({mod}); "
                                 "run the comparison in its own process")
        try:
            import omegaconf  # noqa: F401
        except ImportError:
            stub = types.ModuleType("omegaconf")
            stub.DictConfig = dict
            sys.modules["omegaconf"] = stub
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        for name in PACKAGES:  # bare packages: their __init__ files import hydra, every algorithm, ...
            package = types.ModuleType(name)
            package.__path__ = [str(self.path / name)]
            sys.modules.setdefault(name, package)
        with contextlib.redirect_stdout(io.StringIO()):
            self.reddiff = importlib.import_module("algos.reddiff")
        self.diffusion_mod = importlib.import_module("models.diffusion")
        self.cg_mod = importlib.import_module("models.classifier_guidance_model")
        self.functions = importlib.import_module("utils.functions")
        self.algo_cfg = yaml.safe_load((self.path / "_configs/algo/reddiff.yaml").read_text())
        self.diffusion_cfg = yaml.safe_load((self.path / "_configs/diffusion/linear1000.yaml").read_text())
        self.commit = _commit_of(self.path)

    def config(self, *, steps: int, lr: float, lam: float, sigma_x0: float = 0.0, weighting: str = "linear"):
        algo = {**self.algo_cfg, "lr": lr, "grad_term_weight": lam, "sigma_x0": sigma_x0, "denoise_term_weight": weighting,
                "sigma_y": 0.0, "obs_weight": 1.0, "awd": True, "cond_awd": False, "eta": 0.0}
        exp = {"save_evolution": False, "start_step": 1000, "end_step": 0, "num_steps": steps}
        return namespace({"algo": algo, "exp": exp})

    def solve(self, prior, problem: dict, *, steps: int, lr: float, lam: float, noise: str = "shared",
              sigma_x0: float = 0.0, weighting: str = "linear", gens=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``REDDIFF.sample`` on ``problem``'s ``y``: returns its output ``x0_pred`` (the estimate
        *before* its last Adam step, what its ``main.py`` scores) and ``mu`` (after it)."""
        cfg = self.config(steps=steps, lr=lr, lam=lam, sigma_x0=sigma_x0, weighting=weighting)
        with cuda_is_identity():
            diffusion = self.diffusion_mod.Diffusion(**self.diffusion_cfg)
        model = self.cg_mod.ClassifierGuidanceModel(NetworkAdapter(prior), None, diffusion, cfg)
        op = problem["op"]
        self.reddiff.build_degredation_model = lambda _cfg: OperatorAdapter(op)
        if noise == "shared":
            self.reddiff.torch = SharedNoiseTorch(gens, sigma_x0)
        elif noise == "independent":
            self.reddiff.torch = torch
        else:
            raise ValueError(f"unknown noise {noise!r}; allowed: shared, independent")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its lr and sigma_x0
            algo = self.reddiff.REDDIFF(model, cfg)
        ts = self.functions.get_timesteps(cfg)
        if len(ts) != steps:
            raise ValueError(f"the reference visits {len(ts)} times for {steps} iterates; pick a divisor of 1000")
        y = problem["y"]
        x0_pred, mu = algo.sample(torch.zeros_like(problem["x"]), None, ts, y_0=y)
        return x0_pred.detach(), mu.detach()


def _commit_of(path: Path) -> str | None:
    """The checkout's commit when it is a git work tree (``git archive`` exports have none)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and (path / ".git").exists() else None
