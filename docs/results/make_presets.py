"""Writes the 64 px presets configs/task/*.yaml (every task but inpainting_file.yaml, which is no preset).

    python docs/results/make_presets.py [--tune] [TASK ...]

OPS holds each task's 64 px operator. RED-diff's num_steps, lr and lambda come from the tuning split: for
the five tasks of docs/RESULTS.md from its grid (outputs/results/tune/<task>/table.csv, written by
``bash docs/results/reproduce.sh tune_cheap``), for the others from a small lambda grid at a fixed lr
(``--tune`` runs it: :func:`tune_command`, results in outputs/presets/<task>/). Each file's header states
the measured tuning-split PSNR against the starting estimate and the command that measured it."""
import csv, math, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
N = "sigma_y 0.01 (light noise: the 256 px fragments' 0.05 swamps 64 px measurements)"
NF = "noise-free (as the demo and docs/RESULTS.md inpainting)"
# task: (description, operator yaml body, default lr, lam grid, results-task or None)
OPS = {
 "colorization": ("Colorization: gray = mean of R, G, B (DDRM's convention; 'luma' for BT.601 weights); " + N,
   "lightning_redd.operators.colorization.Colorization", dict(weights="mean", sigma_y=0.01), 0.5, None),
 "compressed_sensing": ("Compressed sensing keeping 25% of the coefficients of a seeded random orthogonal transform "
   "(signs + permutation + Hartley); " + N,
   "lightning_redd.operators.compressed_sensing.CompressedSensing", dict(ratio=0.25, seed=0, sigma_y=0.01), 0.5, None),
 "deblur_anisotropic": ("Anisotropic Gaussian deblurring at 64 px: sigma (2.0, 0.75) px along axes rotated by 30 degrees "
   "(half the 256 px fragment's (4.0, 1.5), as deblur_gaussian), 15x15 kernel; " + N,
   "lightning_redd.operators.blur.GaussianBlur", dict(kernel_size=15, sigma=[2.0, 0.75], angle=30.0, pinv_rtol=0.03, sigma_y=0.01), 0.5, None),
 "deblur_gaussian": ("Gaussian deblurring at 64 px: 15x15 kernel, sigma 1.5 px (the paper's 3 px on 256 px would be 0.75 px "
   "here, too mild; 1.5 px is a clear blur), circular boundary, pinv drops |G| < 3e-2 max; " + N,
   "lightning_redd.operators.blur.GaussianBlur", dict(kernel_size=15, sigma=1.5, pinv_rtol=0.03, sigma_y=0.01), 0.5, "deblur_gaussian"),
 "deblur_motion": ("Motion deblurring at 64 px: a 15x15 random camera-shake kernel per image (the paper's 61x61 on 256 px, "
   "scaled by 1/4), intensity 0.5; " + N,
   "lightning_redd.operators.blur.MotionBlur", dict(kernel_size=15, intensity=0.5, pinv_rtol=0.03, sigma_y=0.01), 0.5, None),
 "deblur_uniform": ("Uniform deblurring at 64 px: a 5x5 box (DDRM's 9x9 is for 256 px), circular boundary; " + N,
   "lightning_redd.operators.blur.UniformBlur", dict(kernel_size=5, pinv_rtol=0.03, sigma_y=0.01), 0.5, None),
 "denoising": ("Gaussian denoising at sigma_y 0.05 ([0, 1] units; std 0.1 in [-1, 1] units): the noise is the task, kept",
   "lightning_redd.operators.denoising.Denoising", dict(noise="gaussian", sigma_y=0.05), 0.5, None),
 "denoising_poisson": ("Poisson (shot-noise) denoising at 255 photons per white pixel, no extra Gaussian noise",
   "lightning_redd.operators.denoising.Denoising", dict(noise="poisson", poisson_rate=255.0, sigma_y=0.0), 0.5, None),
 "hdr": ("HDR (nonlinear): y = clip(2 x, -1, 1) (the reference's gain 2); " + N,
   "lightning_redd.operators.hdr.HDR", dict(gain=2.0, sigma_y=0.01), 0.5, "hdr"),
 "inpainting_box": ("Centre box of half the side missing (32x32 of 64x64, as 128x128 of 256x256 in the paper); " + NF,
   "lightning_redd.operators.inpainting.Inpainting", dict(mask="box", box_fraction=0.5, box_position="center", sigma_y=0.0), 0.25, "inpainting_box"),
 "inpainting_half": ("Right half missing (outpainting-style completion); " + NF,
   "lightning_redd.operators.inpainting.Inpainting", dict(mask="half", half="right", sigma_y=0.0), 0.25, None),
 "inpainting_random": ("70% of the pixels missing, uniformly at random, drawn per image from its seed; " + NF,
   "lightning_redd.operators.inpainting.Inpainting", dict(mask="random", drop_fraction=0.7, sigma_y=0.0), 0.25, None),
 "inpainting_strokes": ("Free-form brush strokes covering 20-30% of the image (the demo's; [0.1, 0.2] is the paper's "
   "'freeform 10-20%'); " + NF,
   "lightning_redd.operators.inpainting.Inpainting", dict(mask="strokes", coverage=[0.2, 0.3], sigma_y=0.0), 0.5, "inpainting_strokes"),
 "jpeg": ("JPEG at quality 10 with 4:2:0 chroma subsampling; solve with straight-through rounding, measure with exact "
   "rounding; noise-free (the compression is the degradation)",
   "lightning_redd.operators.jpeg.JPEG", dict(quality=10, chroma_subsampling=True, surrogate="straight_through", sigma_y=0.0), 0.5, None),
 "nonlinear_blur": ("Nonlinear blur at 64 px: a per-image 9x9 camera-shake kernel (the 256 px fragment's 31x31 scaled by "
   "about 1/4), intensity 0.5, then a saturating camera response (curvature 3); " + N,
   "lightning_redd.operators.nonlinear_blur.NonlinearBlur", dict(kernel_size=9, intensity=0.5, response=3.0, sigma_y=0.01), 0.5, None),
 "phase_retrieval": ("Fourier phase retrieval, padding 0.25 of the image size per side (1.5x oversampling per axis, as the "
   "reference's 64 px on 256 px); " + N,
   "lightning_redd.operators.phase_retrieval.PhaseRetrieval", dict(pad_ratio=0.25, sigma_y=0.01), 0.5, None),
 "quantization": ("3-bit quantisation (8 levels per channel); straight-through rounding in the solve, exact rounding when "
   "measuring; noise-free",
   "lightning_redd.operators.quantization.Quantization", dict(bits=3, surrogate="straight_through", sigma_y=0.0), 0.5, None),
 "sr_bicubic": ("4x super-resolution with bicubic anti-aliased downscaling (periodic boundary; y is 16x16); " + N,
   "lightning_redd.operators.super_resolution.BicubicSR", dict(factor=4, pinv_rtol=0.001, sigma_y=0.01), 0.5, None),
 "sr_block": ("4x super-resolution by block averaging (the paper's SR; y is 16x16 at 64 px); " + N,
   "lightning_redd.operators.super_resolution.BlockAverageSR", dict(factor=4, sigma_y=0.01), 0.5, "sr_block4"),
 "sr_inpainting": ("2x block-average super-resolution (the 256 px fragment's 4x leaves 16x16 at 64 px, half of it then "
   "missing), then 50% random-pixel inpainting of the 32x32 image; exact chained pinv; " + N + " (on the composition)",
   "lightning_redd.operators.composed.Composed", None, 0.5, None),
}
LAMS = "0.02,0.25"
#: Tasks whose 2-point grid peaked at its top value (0.25): the grid was extended once to 1.0.
EXTENDED = {"colorization", "compressed_sensing", "denoising", "denoising_poisson", "inpainting_half", "jpeg",
            "phase_retrieval", "quantization"}


#: ... and those where 1.0 won again: once more, to 4.0.
EXTENDED2 = {"denoising", "jpeg", "phase_retrieval", "quantization"}


def lams(task):
    return LAMS + (",1.0,4.0" if task in EXTENDED2 else ",1.0" if task in EXTENDED else "")
STEPS = 100


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def operator_block(task):
    _, cls, args, _, _ = OPS[task]
    if task == "sr_inpainting":
        return ("  operator:\n    class_path: lightning_redd.operators.composed.Composed\n    init_args:\n      operators:\n"
                "        - class_path: lightning_redd.operators.super_resolution.BlockAverageSR\n          init_args:\n"
                "            factor: 2\n        - class_path: lightning_redd.operators.inpainting.Inpainting\n"
                "          init_args:\n            mask: random\n            drop_fraction: 0.5\n"
                "      pinv_mode: chain\n      sigma_y: 0.01\n")
    return f"  operator:\n    class_path: {cls}\n    init_args:\n" + "".join(f"      {k}: {yaml_value(v)}\n" for k, v in args.items())


def tune_command(task):
    lr = OPS[task][3]
    return ("python -m lightning_redd.experiments table --out outputs/presets/" + task +
            f" --config configs/demo.yaml --config configs/task/{task}.yaml --threads 1 --resume"
            " --set data.root=outputs/heldout/tuning --set data.batch_size=4 --isolate none"
            " --solver red_diff=configs/solver/red_diff.yaml"
            f" --set model.solver.init_args.num_steps={STEPS} --set model.solver.init_args.lr={lr}"
            f" --grid model.solver.init_args.lam={lams(task)}")


RESULTS_CMD = "bash docs/results/reproduce.sh tune_cheap (task {r}; its table: docs/results/tune/{r}/table.md)"


def best(task):
    """(lr, lam, steps, psnr, psnr_init, n_images, grid text) or None."""
    r = OPS[task][4]
    path = ROOT / (f"outputs/results/tune/{r}/table.csv" if r else f"outputs/presets/{task}/table.csv")
    if not path.is_file():
        return None
    rows = [x for x in csv.DictReader(open(path)) if x["solver"].startswith("red_diff") and x["psnr"] not in ("", "nan")]
    rows = [x for x in rows if math.isfinite(float(x["psnr"]))]
    if not rows:
        return None
    b = max(rows, key=lambda x: float(x["psnr"]))
    kv = dict(p.split("=") for p in b["solver"].split("[", 1)[1].rstrip("]").split(","))
    lr = float(kv.get("lr", OPS[task][3]))
    worst = min(rows, key=lambda x: float(x["psnr"]))
    return lr, float(kv["lam"]), STEPS, float(b["psnr"]), float(b["psnr_init"]), int(b["images"]), len(rows), float(worst["psnr"])


def write(task):
    desc = OPS[task][0]
    b = best(task)
    r = OPS[task][4]
    lines = [f"# {desc}.", "# A preset for the 64 px embedded prior (configs/demo.yaml); RED-diff's knobs only, so a solver fragment"
             " placed after this file replaces them."]
    if b:
        lr, lam, steps, psnr, init, n, nrows, worst = b
        lines.append(f"# RED-diff: {steps} iterates, lr {lr:g}, lambda {lam:g}, "
                     f"tuned on the tuning split ({n} held-out crops, outputs/heldout/tuning):")
        lines.append(f"#   measured {psnr:.2f} dB mean PSNR vs {init:.2f} dB of the starting estimate (pinv); "
                     f"worst of the {nrows}-point grid {worst:.2f} dB.")
        if psnr < init + 1.0:
            lines.append(f"#   NOTE: less than 1 dB above (or below) its starting estimate: with this prior at 64 px and "
                         f"{steps} iterates RED-diff barely improves on (or hurts) the {'decoded' if task in ('jpeg', 'quantization') else 'initial'} "
                         "image, and no value of its grid did better (docs/RESULTS.md, presets).")
        if r:
            lines.append(f"#   grid lr 0.25,0.5 x lambda 0.01,0.02,0.05,0.25,1.0 at {steps} iterates, from docs/RESULTS.md's tuning: "
                         + RESULTS_CMD.format(r=r))
        else:
            lines.append(f"#   grid lambda {lams(task)} at lr {OPS[task][3]:g}, {steps} iterates"
                         + (" (0.02,0.25 first; extended to 1.0 when 0.25 won" + (", then to 4.0 when 1.0 won)" if task in EXTENDED2 else ")")
                            if task in EXTENDED else "") + ": "
                         + tune_command(task))
    else:
        lr, lam, steps = OPS[task][3], 0.1, STEPS
        lines.append("# Solver values NOT yet tuned (estimate). Tune with: " + tune_command(task))
    lines.append("# The 256 px paper settings live in configs/imagenet256/ and configs/ffhq256/ (self-contained).")
    body = "model:\n" + operator_block(task) + (f"  solver:\n    init_args:\n      num_steps: {steps}\n      lr: {lr:g}\n"
                                                f"      lam: {lam:g}\n")
    (ROOT / "configs/task" / f"{task}.yaml").write_text("\n".join(lines) + "\n" + body)


if __name__ == "__main__":
    import shlex
    import subprocess

    argv = sys.argv[1:]
    tune = "--tune" in argv
    for t in [a for a in argv if a != "--tune"] or list(OPS):
        if tune and OPS[t][4] is None:
            subprocess.run(shlex.split(tune_command(t)), cwd=ROOT, check=True)
        write(t)
