import math

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.embedded import EmbeddedPrior, blend, read_metadata, save_network
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.priors.networks.unet import UNet
from lightning_redd.lit.train_prior import DDPMModule, ddim_sample, export_checkpoint, main, sample, save_grid

TINY = dict(image_size=16, in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(8,), num_groups=4)


def tiny_fit(tmp_path, max_steps=3):
    photos = pytest.importorskip("lightning_redd.data.photos")
    pytest.importorskip("skimage")
    L.seed_everything(0)
    module = DDPMModule(UNet(**TINY), lr=1e-3, warmup_steps=0, ema_decay=0.9, ema_warmup=False,
                        num_samples=2, sample_steps=3)
    data = photos.PhotoPatches(image_size=16, batch_size=2, num_workers=0, samples_per_epoch=4, val_samples=2)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(module, data)
    return module, trainer


def test_tiny_fit_exports_loadable_ema(tmp_path):
    module, trainer = tiny_fit(tmp_path)
    assert trainer.global_step == 3
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert math.isfinite(float(trainer.callback_metrics["val/ema_loss"]))
    path = tmp_path / "embedded64.safetensors"
    assert path.is_file() and (tmp_path / "samples.png").is_file()
    meta = read_metadata(path)
    assert meta["training"]["global_step"] == 3 and "astronaut" in meta["training"]["dataset"]
    ema = load_file(str(path))
    raw = module.network.state_dict()
    assert set(ema) == set(raw)
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)  # EMA (decay 0.9) lags the raw weights
    assert not torch.equal(ema["conv_out.weight"], torch.zeros_like(ema["conv_out.weight"]))  # it moved
    prior = EmbeddedPrior(checkpoint=str(path))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 700])
    torch.testing.assert_close(prior.eps(x, t), module.ema(x, t))


def test_ema_update_rule():
    module = DDPMModule(UNet(**TINY), ema_decay=0.75, ema_warmup=False)
    for p in module.network.parameters():
        p.data.add_(1.0)
    before = [p.clone() for p in module.ema.parameters()]
    module.on_train_batch_end(None, None, 0)
    for b, e, p in zip(before, module.ema.parameters(), module.network.parameters()):
        torch.testing.assert_close(e, 0.75 * b + 0.25 * p)


class ZeroEps(DiffusionPrior):
    def __init__(self):
        super().__init__(channels=3, image_size=8)

    def predict_eps(self, x_t, t):
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("prior", [GaussianPrior(mean=0.1, std=0.3), ZeroEps()], ids=["gaussian", "zero"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sampler_finite_and_clipped(prior, eta):
    g = torch.Generator().manual_seed(0)
    x = ddim_sample(prior, 4, steps=10, eta=eta, generator=g, image_size=8)
    assert x.shape == (4, 3, 8, 8) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1


def test_ddim_sampler_gaussian_statistics():
    # Exact eps of x0 ~ N(0.1, 0.3^2): deterministic DDIM maps N(0, I) to roughly that law.
    prior = GaussianPrior(mean=0.1, std=0.3)
    x = ddim_sample(prior, 64, steps=50, generator=torch.Generator().manual_seed(1), image_size=16)
    assert abs(float(x.mean()) - 0.1) < 0.03 and abs(float(x.std()) - 0.3) < 0.05


def test_ddim_sampler_is_deterministic_for_eta0():
    prior = EmbeddedPrior.from_network(UNet(**TINY))
    a = ddim_sample(prior, 2, steps=5, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(prior, 2, steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sample_grid_from_checkpoint(tmp_path):
    from lightning_redd.priors.embedded import save_network

    ckpt = save_network(UNet(**TINY), tmp_path / "p.safetensors")
    out = sample(str(ckpt), tmp_path / "grid.png", num_images=4, steps=3)
    assert out.is_file()
    assert save_grid(torch.zeros(3, 3, 8, 8), tmp_path / "g.png").is_file()


def test_heldout_split_is_disjoint():
    photos = pytest.importorskip("lightning_redd.data.photos")
    assert not set(photos.TRAIN_PHOTOS) & set(photos.HELDOUT_PHOTOS)
    assert {"motorcycle_left", "motorcycle_right"} <= set(photos.HELDOUT_PHOTOS)  # a stereo pair: both out
    assert all(stem in photos.HELDOUT_PHOTOS for _, stem, _ in photos.DEMO_IMAGES)
    pytest.importorskip("skimage")
    train, held = photos.PhotoPatches().photo_names()
    assert train and held and not {p.stem for p in train} & {p.stem for p in held}
    train2, held2 = photos.PhotoPatches(val_names=["astronaut"]).photo_names()
    assert "astronaut" not in {p.stem for p in train2} and [p.stem for p in held2] == ["astronaut"]


@pytest.mark.slow
def test_patches_range_and_shape():
    photos = pytest.importorskip("lightning_redd.data.photos")
    pytest.importorskip("skimage")
    data = photos.PhotoPatches(image_size=32, batch_size=4, num_workers=0, samples_per_epoch=8, val_samples=3)
    data.setup("fit")
    x = next(iter(data.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    (v,) = data.val_set.tensors
    data2 = photos.PhotoPatches(image_size=32, num_workers=0, val_samples=3)
    data2.setup("fit")
    assert torch.equal(v, data2.val_set.tensors[0])  # validation patches are fixed


def test_folder_mode(tmp_path):
    photos = pytest.importorskip("lightning_redd.data.photos")
    from PIL import Image

    for i in range(3):
        Image.new("L", (40, 30), color=60 * i).save(tmp_path / f"img{i}.png")
    data = photos.PhotoPatches(image_size=16, batch_size=2, num_workers=0, folder=str(tmp_path), val_samples=2)
    train, held = data.photo_names()
    assert [p.stem for p in held] == ["img2"] and len(train) == 2
    data.setup()
    assert data.val_set.tensors[0].shape == (2, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="at least 2 images"):
        photos.PhotoPatches(folder=str(tmp_path / "missing")).photo_names()


def test_replay_mixes_the_first_priors_photos_into_a_folder(tmp_path):
    photos = pytest.importorskip("lightning_redd.data.photos")
    pytest.importorskip("skimage")
    from PIL import Image

    Image.new("L", (40, 30), color=90).save(tmp_path / "a_gray.png")
    Image.new("RGB", (40, 30), color=(200, 10, 10)).save(tmp_path / "b_colour.png")
    Image.new("RGB", (40, 30), color=(10, 200, 10)).save(tmp_path / "c_val.png")
    kw = dict(image_size=16, batch_size=2, num_workers=0, folder=str(tmp_path), val_samples=2, gray_weight=0.5)
    alone = photos.PhotoPatches(**kw)
    alone.setup()
    assert alone.replay_names() == [] and alone.train_set.weights.tolist() == [0.5, 1.0]
    mixed = photos.PhotoPatches(replay=0.25, **kw)
    mixed.setup()
    assert [p.stem for p in mixed.replay_names()] == list(photos.TRAIN_PHOTOS)
    w = mixed.train_set.weights
    assert len(mixed.train_set.levels) == 2 + len(photos.TRAIN_PHOTOS)
    assert w[:2].tolist() == pytest.approx([0.75 / 3, 1.5 / 3])  # the folder keeps its gray/colour ratio, 3/4 of the draws
    assert float(w[2:].sum()) == pytest.approx(0.25)
    n_gray = len(photos.TRAIN_GRAY)
    colour, gray = w[2:2 + len(photos.TRAIN_COLOR)], w[2 + len(photos.TRAIN_COLOR):]
    assert len(gray) == n_gray and torch.allclose(gray, colour[0] / 2) and torch.allclose(colour, colour[0])
    assert "+ 0.25 of patches from scikit-image" in mixed.describe() and "c_val" in mixed.describe()
    draws = torch.multinomial(w, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs(float((draws >= 2).double().mean()) - 0.25) < 0.03  # what RandomPatches draws from
    for bad in (dict(replay=1.0, folder=str(tmp_path)), dict(replay=-0.1, folder=str(tmp_path)), dict(replay=0.5)):
        with pytest.raises(ValueError, match="replay"):
            photos.PhotoPatches(**bad)


def test_darken_scales_a_share_of_patches_as_a_shorter_exposure(tmp_path):
    photos = pytest.importorskip("lightning_redd.data.photos")
    from PIL import Image

    Image.new("RGB", (40, 30), color=(204, 102, 51)).save(tmp_path / "a.png")  # flat: every patch of it is this colour
    Image.new("RGB", (40, 30), color=(10, 200, 10)).save(tmp_path / "b_val.png")
    kw = dict(image_size=8, batch_size=2, num_workers=0, folder=str(tmp_path), val_samples=2)
    assert photos.darkened(torch.tensor([-1.0, 0.0, 1.0]), 0.5).tolist() == [-1.0, -0.5, 0.0]  # black stays black
    plain = photos.PhotoPatches(**kw)
    plain.setup()
    colour = torch.tensor([204.0, 102.0, 51.0]) / 127.5 - 1.0
    torch.manual_seed(0)
    assert all(torch.allclose(plain.train_set[i][:, 0, 0], colour, atol=1e-5) for i in range(20))
    dark = photos.PhotoPatches(darken=0.5, darken_min=0.25, **kw)
    dark.setup()
    torch.manual_seed(0)
    factors = torch.stack([(dark.train_set[i][:, 0, 0] + 1.0) / (colour + 1.0) for i in range(2000)])
    assert torch.allclose(factors, factors[:, :1].expand_as(factors), atol=1e-4)  # one factor per patch, every channel
    f = factors[:, 0]
    assert abs(float((f < 1 - 1e-4).double().mean()) - 0.5) < 0.04  # the share darkened
    assert float(f.min()) >= 0.25 - 1e-4 and float(f.max()) <= 1 + 1e-4
    logs = f[f < 1 - 1e-4].log() / math.log(0.25)  # log-uniform in [0.25, 1]: uniform in [0, 1]
    assert abs(float(logs.mean()) - 0.5) < 0.04 and abs(float((logs < 0.5).double().mean()) - 0.5) < 0.06
    assert "0.5 darkened x[0.25, 1]" in dark.describe() and "darkened" not in plain.describe()
    for bad in (dict(darken=1.5), dict(darken=-0.1), dict(darken=0.5, darken_min=0.0), dict(darken=0.5, darken_min=1.5)):
        with pytest.raises(ValueError, match="darken"):
            photos.PhotoPatches(**bad)


def test_cli_parses_and_links_image_size(tmp_path):
    pytest.importorskip("skimage")
    from lightning_redd.lit.train_cli import train_main

    cli = train_main(["--config", "configs/train_prior.yaml", "--data.image_size", "32",
                      "--trainer.accelerator", "cpu", "--trainer.precision", "32"], run=False)
    assert cli.model.network.config["image_size"] == 32
    assert cli.datamodule.hparams.image_size == 32


def test_init_weights_fine_tunes_from_a_file(tmp_path):
    torch.manual_seed(1)
    start = UNet(**TINY)
    path = save_network(start, tmp_path / "start.safetensors", {"global_step": 7})
    torch.manual_seed(2)
    module = DDPMModule(UNet(**TINY), init_weights=str(path))
    for (k, v), e in zip(start.state_dict().items(), module.ema.state_dict().values()):
        torch.testing.assert_close(module.network.state_dict()[k], v)
        torch.testing.assert_close(e, v)
    other = dict(TINY, base_channels=4)
    with pytest.raises(ValueError, match="set model.network to match"):
        DDPMModule(UNet(**other), init_weights=str(path))


@pytest.mark.slow
def test_export_checkpoint_writes_the_ema_of_a_run(tmp_path):
    photos = pytest.importorskip("lightning_redd.data.photos")
    pytest.importorskip("skimage")
    L.seed_everything(0)
    module = DDPMModule(UNet(**TINY), lr=1e-3, warmup_steps=0, ema_decay=0.5, ema_warmup=False, num_samples=0)
    data = photos.PhotoPatches(image_size=16, batch_size=2, num_workers=0, samples_per_epoch=4, val_samples=2)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(module, data)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    out = export_checkpoint(ckpt, tmp_path / "exported.safetensors")
    assert read_metadata(out)["training"]["global_step"] == 2
    prior = EmbeddedPrior(checkpoint=str(out))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 600])
    torch.testing.assert_close(prior.eps(x, t), module.ema(x, t))
    with pytest.raises(ValueError, match="not a checkpoint of lightning-redd-train"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "x.safetensors")


def test_blend_interpolates_weight_by_weight(tmp_path):
    torch.manual_seed(0)
    a, b = UNet(**TINY), UNet(**TINY)
    save_network(a, tmp_path / "a.safetensors", {"step": 1})
    save_network(b, tmp_path / "b.safetensors", {"step": 2})
    for w in (0.0, 0.3, 1.0):
        out = tmp_path / f"mix{w}.safetensors"
        main(["blend", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--weight", str(w), "--out", str(out)])
        mixed, sa, sb = load_file(out), a.state_dict(), b.state_dict()
        assert sorted(mixed) == sorted(sa)
        for k, v in mixed.items():
            assert torch.allclose(v, (1 - w) * sa[k] + w * sb[k], atol=1e-6), (w, k)
        meta = read_metadata(out)["training"]
        assert meta["blend"]["weight"] == w and meta["start"] == {"step": 1} and meta["tuned"] == {"step": 2}
    other = UNet(**{**TINY, "base_channels": 4})
    save_network(other, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="different networks"):
        blend(tmp_path / "a.safetensors", tmp_path / "other.safetensors", 0.5, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="weight=1.5"):
        blend(tmp_path / "a.safetensors", tmp_path / "b.safetensors", 1.5, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
