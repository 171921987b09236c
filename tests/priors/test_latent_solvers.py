"""Solvers on latent priors: latent RED-diff is pixel RED-diff when latent = pixel, its iterate
differentiates the decoder alone (the denoiser never), DPS's also the denoiser; solvers not
defined on latents are refused up front; fit and predict agree through the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from lightning_redd.operators.inpainting import Inpainting  # noqa: E402
from lightning_redd.priors.diffusers_prior import DiffusersPrior  # noqa: E402
from lightning_redd.priors.latent import IdentityAutoencoder, LatentPrior  # noqa: E402
from lightning_redd.priors.latent_diffusers import DiffusersLatentPrior  # noqa: E402
from lightning_redd.solvers.classical import Classical  # noqa: E402
from lightning_redd.solvers.ddim import DDIM  # noqa: E402
from lightning_redd.solvers.ddrm import DDRM  # noqa: E402
from lightning_redd.solvers.dps import DPS  # noqa: E402
from lightning_redd.solvers.latent import LatentSolver, for_prior  # noqa: E402
from lightning_redd.solvers.pigdm import PiGDM  # noqa: E402
from lightning_redd.solvers.red_diff import RedDiff  # noqa: E402


def gens(n: int, base: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def problem(size: int, n: int = 2, sigma_y: float = 0.05):
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(7)) * 2 - 1
    op = Inpainting(mask="random", drop_fraction=0.4, sigma_y=sigma_y).bind(list(range(n)), (3, size, size))
    return x, op, op.measure(x, gens(n, 100))


@pytest.fixture(scope="module")
def sd_prior(sd_folder):
    return DiffusersLatentPrior(path=str(sd_folder), text_encoder="none")


@pytest.mark.parametrize("solver", [RedDiff(num_steps=5, lr=0.2, sigma_x0=0.01), DPS(num_steps=5, zeta=0.5, eta=0.5),
                                    DDIM(num_steps=5, eta=0.5, start="pinv")], ids=["red_diff", "dps", "ddim"])
def test_identity_autoencoder_gives_the_pixel_solve(ldm_folder, solver):
    """latent = pixel, the same denoiser: the latent solve is the pixel solve."""
    pixel = DiffusersPrior(path=str(ldm_folder), subfolder="unet")  # the LDM's UNet, as a pixel prior on 8x8 images
    latent = LatentPrior(denoiser=pixel, autoencoder=IdentityAutoencoder(3))
    _, op, y = problem(8)
    want = solver.run(y, op, pixel, gens(2))
    got = LatentSolver(solver).run(y, op, latent, gens(2))
    assert got.nfe == want.nfe and torch.equal(got.x_init, want.x_init)
    assert torch.equal(LatentSolver(solver).estimate(got), solver.estimate(want))  # bit for bit (same operations)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_red_diff_iterate_saves_only_the_decoders_tensors_dps_also_the_denoisers(sd_prior):
    _, op, y = problem(16)
    red = LatentSolver(RedDiff(num_steps=3))
    state = red.init(y, op, sd_prior, gens(2))
    z = state.inner.mu.detach().clone().requires_grad_(True)
    latent_bytes = z.numel() * 4

    def data_term():  # what the iterate differentiates: A(D(mu_z)) in the data term
        ((y - op(sd_prior.decode(z))).float().flatten(1).pow(2).mean(1) / 2).sum()

    decoder = saved_bytes(data_term)
    denoiser = saved_bytes(lambda: sd_prior.eps(z * 0.5, torch.tensor([500, 500])))
    assert decoder > 0 and denoiser > 20 * latent_bytes  # a denoiser under autograd would show
    iterate = saved_bytes(lambda: red.step(state, y, op, sd_prior))
    # the decoder's, plus the regulariser's stop-gradient w (eps_hat - eps) (one latent; measured: exactly that)
    assert decoder <= iterate <= decoder + latent_bytes
    dps = LatentSolver(DPS(num_steps=3))
    dps_state = dps.init(y, op, sd_prior, gens(2))
    assert saved_bytes(lambda: dps.step(dps_state, y, op, sd_prior)) >= decoder + denoiser


@pytest.mark.slow
def test_latent_red_diff_fits_the_measurement_through_the_decoder(sd_prior):
    """lam = 0: Adam on the data term alone, differentiated through the decoder, fits y (an
    image the decoder can make, measured without noise)."""
    with torch.no_grad():
        x = sd_prior.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)))
    op = Inpainting(mask="random", drop_fraction=0.4, sigma_y=0.0).bind([0, 1], (3, 16, 16))
    y = op.measure(x, gens(2))
    losses = []
    LatentSolver(RedDiff(num_steps=30, lr=0.05, lam=0.0)).run(
        y, op, sd_prior, gens(2), callback=lambda k, s, stats: losses.append(stats["loss_obs"]))
    assert bool((losses[-1] < 0.5 * losses[0]).all()), (losses[0], losses[-1])


def test_batch_mates_do_not_matter(sd_prior):
    _, op, y = problem(16, n=2)
    solver = LatentSolver(RedDiff(num_steps=3))
    both = solver.solve(y, op, sd_prior, gens(2))
    alone = solver.solve(y[1:], Inpainting(mask="random", drop_fraction=0.4, sigma_y=0.05).bind([1], (3, 16, 16)),
                         sd_prior, gens(1, 1))
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-5)


def test_solvers_not_defined_on_latents_are_refused_up_front(sd_prior):
    from lightning_redd.lit.module import RestorationModule

    for solver in (DDRM(), PiGDM()):
        with pytest.raises(ValueError, match=r"is not defined on a latent prior: .*solvers that run on latent priors: ddim, dps, red_diff") as err:
            RestorationModule(operator=Inpainting(), prior=sd_prior, solver=solver)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="clip_x0: true clips to \\[-1, 1\\], a pixel range"):
        LatentSolver(DDIM(clip_x0=True))
    _, op, y = problem(16)
    with pytest.raises(TypeError, match=r"run it as lightning_redd.solvers.latent.LatentSolver\(RedDiff\(...\)\)"):
        RedDiff(num_steps=2).solve(y, op, sd_prior, gens(2))
    classical = Classical()
    assert for_prior(classical, sd_prior) is classical  # uses no prior: runs on pixels as always
    torch.testing.assert_close(Classical(num_steps=2).solve(y, op, sd_prior, gens(2)), Classical(num_steps=2).solve(y, op, None, gens(2)))
    red = RedDiff()
    assert RestorationModule(operator=Inpainting(), prior=sd_prior, solver=red).solver.solver is red
    assert RestorationModule(operator=Inpainting(), prior=None, solver=red).solver is red  # pixel prior: untouched


def square_images(folder, n: int, seed: int):
    """``n`` random 16 x 16 RGB PNGs ``img{i}.png`` in ``folder`` (a size the tiny latent prior takes)."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.slow
def test_fit_and_predict_write_the_same_images(sd_folder, tmp_path):
    from PIL import Image
    from helpers import tiny_args

    from lightning_redd.lit.cli import cli

    images = square_images(tmp_path / "in", n=2, seed=0)
    latent = ["--model.prior", "lightning_redd.priors.latent_diffusers.DiffusersLatentPrior",
              "--model.prior.init_args.path", str(sd_folder), "--model.prior.init_args.text_encoder", "none"]
    cli(tiny_args(tmp_path / "fit", images, *latent, subcommand="fit", steps=3))
    cli(tiny_args(tmp_path / "pred", images, *latent, steps=3))
    for name in ("img0", "img1"):
        a = np.asarray(Image.open(next((tmp_path / "fit").rglob(f"restored/{name}.png"))))
        b = np.asarray(Image.open(next((tmp_path / "pred").rglob(f"restored/{name}.png"))))
        assert a.shape == (16, 16, 3) and np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_equal_one(sd_folder, tmp_path):
    """Nothing special for several processes: two gloo ranks restore what one does."""
    from pathlib import Path

    from helpers import run_cli
    from PIL import Image

    images = square_images(tmp_path / "in", n=4, seed=1)
    root = Path(__file__).resolve().parents[2]

    def run(out, processes=1):
        argv = ["predict", "--config", "configs/demo.yaml",
                "--model.prior", "lightning_redd.priors.latent_diffusers.DiffusersLatentPrior",
                "--model.prior.init_args.path", str(sd_folder), "--model.prior.init_args.text_encoder", "none",
                "--model.solver.init_args.num_steps", "3", "--data.root", str(images), "--data.image_size", "16",
                "--data.batch_size", "2", "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
                "--trainer.accelerator", "cpu"]
        run_cli(argv, root, processes)
        return {p.stem: np.asarray(Image.open(p)).astype(int) for p in sorted(Path(out).rglob("restored/*.png"))}

    one = run(tmp_path / "one")
    two = run(tmp_path / "two", processes=2)
    assert sorted(one) == sorted(two) == [f"img{i}" for i in range(4)]
    assert all(np.abs(one[n] - two[n]).max() <= 1 for n in one)
