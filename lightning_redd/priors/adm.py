"""guided-diffusion (ADM) checkpoints as a :class:`DiffusionPrior`.

The constructor takes guided-diffusion's own flag names, so the flag sets published with the
checkpoints paste unchanged, e.g. the ImageNet 256x256 unconditional model
(``256x256_diffusion_uncond.pt``)::

    ADMPrior(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
             num_head_channels=64, learn_sigma=True, use_scale_shift_norm=True,
             resblock_updown=True, checkpoint="/path/to/256x256_diffusion_uncond.pt")

and in a LightningCLI config::

    prior:
      class_path: lightning_redd.priors.adm.ADMPrior
      init_args: {image_size: 256, num_channels: 256, ..., checkpoint: /path/to/file.pt}

The checkpoints were trained on the linear schedule (1e-4 to 0.02, T = 1000) with integer
times fed to the network unchanged, which is the base class's default schedule.
"""
from __future__ import annotations

import torch

from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.loaders import load_into, load_state_dict_file
from lightning_redd.priors.networks.adm import NUM_CLASSES, ADMUNet, adm_kwargs
from lightning_redd.priors.networks.attention import AttentionImpl, check_impl
from lightning_redd.priors.speed import prepare_network

CHECKPOINT_HOW_TO = (
    "pass the file with --model.prior.init_args.checkpoint /path/to/weights.pt (e.g. 256x256_diffusion_uncond.pt) "
    "(or set checkpoint: in the config's prior init_args)"
)


class ADMPrior(DiffusionPrior):
    """An ADM UNet predicting ``eps`` for ``(B, 3, S, S)`` inputs, ``S = image_size``.

    Args:
        image_size .. use_fp16: guided-diffusion's ``create_model`` flags. ``channel_mult`` is a
            comma string (``""``: guided-diffusion's default for ``image_size``);
            ``attention_resolutions`` lists feature-map resolutions (``"32,16,8"``).
            ``use_fp16`` is accepted for compatibility and changes nothing: weights stay float32
            and precision is chosen by ``autocast_dtype`` (the Trainer's ``precision``).
        learn_sigma: the network outputs ``2C`` channels (eps, variance); only the first ``C``
            are used.
        class_cond: class-conditional (1000 ImageNet classes); needs ``class_label``.
        class_label: the label in ``[0, 999]`` used for every image of a class-conditional model
            (override per batch by setting ``class_labels`` to a ``(B,)`` long tensor).
        checkpoint: path of the weights (``.pt``/``.pth``/``.safetensors``, see
            :mod:`lightning_redd.priors.loaders`). Required unless ``allow_random_init``.
        allow_random_init: permit ``checkpoint=None`` (random weights, for tests and benchmarks).
        channels_last, attention, compile, sync_checks: speed switches, none of which changes a
            state-dict key (:mod:`lightning_redd.priors.speed`): channels-last memory format
            (off), the attention kernel (``"auto"``: see the module; ``"sdpa"``; ``"math"``: the explicit product),
            ``torch.compile`` of the network (off), host-side checks of ``t`` (off).
    """

    def __init__(
        self,
        *,
        image_size: int = 256,
        num_channels: int = 256,
        num_res_blocks: int = 2,
        channel_mult: str = "",
        attention_resolutions: str = "32,16,8",
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        learn_sigma: bool = True,
        class_cond: bool = False,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
        dropout: float = 0.0,
        use_fp16: bool = False,
        class_label: int | None = None,
        checkpoint: str | None = None,
        allow_random_init: bool = False,
        channels_last: bool = False,
        attention: AttentionImpl = "auto",
        compile: bool = False,
        sync_checks: bool = False,
    ) -> None:
        super().__init__(channels=3, image_size=image_size, sync_checks=sync_checks)
        if class_label is not None and not 0 <= class_label < NUM_CLASSES:
            raise ValueError(f"class_label must be in [0, {NUM_CLASSES - 1}], got {class_label}")
        if class_label is not None and not class_cond:
            raise ValueError("class_label is only used by class-conditional models; set class_cond: true or drop it")
        kwargs = adm_kwargs(
            image_size=image_size, num_channels=num_channels, num_res_blocks=num_res_blocks,
            channel_mult=channel_mult, learn_sigma=learn_sigma, class_cond=class_cond,
            attention_resolutions=attention_resolutions, num_heads=num_heads,
            num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
            use_scale_shift_norm=use_scale_shift_norm, dropout=dropout, resblock_updown=resblock_updown,
            use_new_attention_order=use_new_attention_order,
        )
        self.use_fp16 = bool(use_fp16)
        self.learn_sigma = bool(learn_sigma)
        self.class_label = class_label
        #: optional per-batch labels ``(B,)`` overriding ``class_label``.
        self.class_labels: torch.Tensor | None = None
        self.channels_last, self.attention, self.compile = bool(channels_last), check_impl(attention), bool(compile)
        self.net = prepare_network(self._build(kwargs, checkpoint, allow_random_init), attention=attention,
                                   channels_last=self.channels_last, compile=self.compile)

    @staticmethod
    def _build(kwargs: dict, checkpoint: str | None, allow_random_init: bool) -> ADMUNet:
        """Random init on CPU, or build on the meta device and assign the checkpoint's tensors."""
        if checkpoint is None:
            if not allow_random_init:
                raise ValueError(f"ADMPrior needs pretrained weights: {CHECKPOINT_HOW_TO}. "
                                 "(Set allow_random_init: true only for tests and benchmarks.)")
            return ADMUNet(**kwargs)
        sd = load_state_dict_file(checkpoint, CHECKPOINT_HOW_TO)
        with torch.device("meta"):
            net = ADMUNet(**kwargs)
        hint = ("check the prior's init_args (num_channels, num_res_blocks, channel_mult, "
                "attention_resolutions, num_head_channels, learn_sigma, class_cond, resblock_updown, "
                "use_scale_shift_norm) against the flags the checkpoint was released with")
        return load_into(net, sd, source=f"checkpoint {checkpoint!r}", fix_hint=hint)

    @property
    def whole_image_multiple(self) -> int:
        """``2 ** (levels - 1)`` (32 for the 256x256 models' 6 levels): the down- and upsamplings
        must meet the skips at equal sizes; the attention blocks take any number of positions
        (no positional embedding; cost grows with its square), and GroupNorm statistics span the
        whole image, unlike in training."""
        return 2 ** (self.net.num_levels - 1)

    def train(self, mode: bool = True) -> "ADMPrior":
        """Keep the frozen network in eval mode (no dropout) whatever the parent's mode."""
        super().train(mode)
        self.net.eval()
        return self

    def _labels(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.net.num_classes is None:
            return None
        if self.class_labels is not None:
            return self.class_labels.to(device=device, dtype=torch.long).reshape(batch)
        if self.class_label is None:
            raise ValueError("this ADM model is class-conditional (class_cond: true): set class_label "
                             "(one label for all images) or class_labels (B,) before calling eps")
        return torch.full((batch,), self.class_label, dtype=torch.long, device=device)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` ``(B, 3, S, S)`` for ``x_t`` ``(B, 3, S, S)`` and integer times ``t`` ``(B,)``."""
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out = self.net(x_t, t, self._labels(x_t.shape[0], x_t.device))
        return out[:, : self.channels]
