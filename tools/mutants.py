"""Mutation check of the numerical core: hand-written mutants, each applied alone to a copy of
the repository, the fast test files that cover it run against it; a mutant the tests do not
fail on is a *survivor*, printed at the end (exit status 1 if there is one).

    make mutants                                # every mutant (tens of minutes on 2 busy cores)
    python tools/mutants.py --list              # ids, files, tests
    python tools/mutants.py --only sampler-guided-sign metrics-clip-bgr

Each mutant is (id, file, original snippet, mutated snippet, tests): the snippet must occur
exactly once in the file, else the mutant is reported as *stale* (the code moved: update the
list). The repository's tracked and untracked-not-ignored files are copied to a temporary
folder and mutated there, so the working tree is never touched. Equivalent mutants left out
on purpose, and the last result, are in docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    what: str = ""


M = Mutant
MUTANTS: list[Mutant] = [
    # -- sampler ---------------------------------------------------------------------------
    M("sampler-guided-sign", "motionmatcher/customization/sampler.py",
      "return z_prev - coef.to(z_prev.device, torch.float32) * score",
      "return z_prev + coef.to(z_prev.device, torch.float32) * score",
      ("tests/test_sampler_math.py",), "guidance score pushes away from the reference"),
    M("sampler-guided-coef", "motionmatcher/customization/sampler.py",
      "coef = ((1 - _alpha_prod(scheduler, prev_t)) * (1 - _alpha_prod(scheduler, t))) ** 0.5",
      "coef = (1 - _alpha_prod(scheduler, t)) ** 0.5",
      ("tests/test_sampler_math.py",), "guidance in x̂0 too, not the direction term only"),
    M("sampler-renoise-beta-index", "motionmatcher/customization/sampler.py",
      "scheduler.betas[t_from: t_from + n]", "scheduler.betas[t_from + 1: t_from + n + 1]",
      ("tests/test_sampler_math.py",), "restart re-noising one timestep off"),
    M("sampler-renoise-sqrt", "motionmatcher/customization/sampler.py",
      "return a.sqrt().to(z.device) * z + (1 - a).sqrt().to(z.device) * noise()",
      "return a.sqrt().to(z.device) * z + (1 - a).to(z.device) * noise()",
      ("tests/test_sampler_math.py",), "restart noise not variance-preserving"),
    M("sampler-cfg", "motionmatcher/customization/sampler.py",
      "out = eps_u + self.guidance_scale * (eps_c - eps_u)",
      "out = eps_c + self.guidance_scale * (eps_c - eps_u)",
      ("tests/test_sampler.py",), "CFG in the ε_c + g(ε_c − ε_u) form"),
    M("sampler-lora-gate", "motionmatcher/customization/sampler.py",
      "on = t >= self.min_timestep", "on = t > self.min_timestep",
      ("tests/test_sampler.py",), "LoRA off at the threshold timestep itself"),
    M("sampler-noise-prior", "motionmatcher/customization/sampler.py",
      "return noise_prior**0.5 * z_inv + (1.0 - noise_prior) ** 0.5 * noise",
      "return noise_prior**0.5 * z_inv + (1.0 - noise_prior) * noise",
      ("tests/test_sampler.py",), "noise prior not variance-preserving"),
    # -- inversion -------------------------------------------------------------------------
    M("inversion-alpha-from", "motionmatcher/customization/inversion.py",
      "alpha_from = alphas[prev_t] if prev_t >= 0 else final_alpha",
      "alpha_from = alphas[t] if prev_t >= 0 else final_alpha",
      ("tests/test_inversion.py",), "x̂0 from the wrong ᾱ"),
    M("inversion-direction", "motionmatcher/customization/inversion.py",
      "z = alpha_to.to(device) ** 0.5 * x0 + (1 - alpha_to.to(device)) ** 0.5 * eps",
      "z = alpha_to.to(device) ** 0.5 * x0 + (1 - alpha_to.to(device)) * eps",
      ("tests/test_inversion.py",), "direction term without the square root"),
    # -- diffusion helpers, training ---------------------------------------------------------
    M("ddim-step-x0", "motionmatcher/customization/diffusion.py",
      "x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()", "x0 = (z + (1 - a_t).sqrt() * eps) / a_t.sqrt()",
      ("tests/test_losses.py::test_ddim_step_matches_diffusers",), "DDIM x̂0 sign"),
    M("training-timestep-low", "motionmatcher/customization/training.py",
      "torch.randint(t_lo, t_hi,", "torch.randint(0, t_hi,",
      ("tests/test_training_timesteps.py",), "timesteps from [0, T) instead of [min_timestep, T)"),
    M("training-timestep-high", "motionmatcher/customization/training.py",
      "t_lo, t_hi = cfg.min_timestep, cfg.max_timestep or T",
      "t_lo, t_hi = cfg.min_timestep, cfg.max_timestep or T - 1",
      ("tests/test_training_timesteps.py",), "T − 1 never drawn"),
    # -- method losses -----------------------------------------------------------------------
    M("motionmatcher-denoise-steps", "motionmatcher/methods/motionmatcher.py",
      "prev_t = (timesteps - num_denoise_steps).clamp(min=0)", "prev_t = timesteps.clamp(min=0)",
      ("tests/test_losses.py::test_motion_matching_loss_by_hand",), "features at t, not t − k"),
    M("motionmatcher-target", "motionmatcher/methods/motionmatcher.py",
      "z_target = denoise_step(scheduler, noisy, noise_target(scheduler, latents, noise, timesteps),",
      "z_target = denoise_step(scheduler, noisy, noise_pred.detach(),",
      ("tests/test_losses.py::test_motion_matching_loss_by_hand",), "target from ε̂ instead of ε"),
    M("motionmatcher-ca-weight", "motionmatcher/methods/motionmatcher.py",
      "loss = loss + self.ca_weight * l_ca", "loss = loss + self.tsa_weight * l_ca",
      ("tests/test_losses.py::test_motion_matching_loss_by_hand",), "CA term weighted by λ_TSA"),
    M("ddpm-loss", "motionmatcher/methods/ddpm_lora.py",
      'return {"loss": F.mse_loss(pred.float(), target.float())}',
      'return {"loss": F.l1_loss(pred.float(), target.float())}',
      ("tests/test_losses.py::test_noise_prediction_loss_by_hand",), "L1 instead of MSE"),
    M("motiondirector-alpha", "motionmatcher/methods/motiondirector.py",
      "alpha = (beta**2 + 1) ** 0.5", "alpha = beta**2 + 1",
      ("tests/test_methods.py::test_appearance_debiased_term_known_values",), "√(β²+1) → β²+1"),
    M("vmc-residual-abs", "motionmatcher/methods/vmc.py",
      "return (x[:, :, 1:] - x[:, :, :-1]).abs()", "return x[:, :, 1:] - x[:, :, :-1]",
      ("tests/test_methods.py::test_vmc_loss_known_values",), "signed frame residual"),
    M("dmt-loss-anchor-mean", "motionmatcher/methods/dmt.py",
      "return (1.0 - cos.mean(dim=2)).sum(dim=1) / frames",
      "return (1.0 - cos.mean(dim=2)).mean(dim=1) / frames",
      ("tests/test_guidance_math.py",), "anchors averaged twice"),
    M("dmt-descriptor", "motionmatcher/methods/dmt.py",
      "return features.float().mean(dim=(2, 3)).reshape(batch, bf // batch, c)",
      "return features.float().amax(dim=(2, 3)).reshape(batch, bf // batch, c)",
      ("tests/test_guidance_math.py",), "spatial max instead of mean"),
    M("dmt-optimise-sign", "motionmatcher/methods/dmt.py",
      "                loss.backward()\n", "                (-loss).backward()\n",
      ("tests/test_guidance.py::test_dmt_loss_decreases_over_its_optimisation_steps",),
      "Adam maximises the loss"),
    M("dmt-low-frequency", "motionmatcher/methods/dmt.py",
      "return low(ref).expand(b, -1, -1, -1, -1) + noise - low(noise)",
      "return low(ref).expand(b, -1, -1, -1, -1) + noise",
      ("tests/test_guidance.py::test_dmt_initial_noise_keeps_the_references_low_frequencies",),
      "noise's low frequencies kept"),
    M("guided-window-end", "motionmatcher/customization/guidance.py",
      "end = num_steps - int(num_steps * min_guidance_timestep)",
      "end = num_steps - int(num_steps * min_guidance_timestep) + 1",
      ("tests/test_guidance.py::test_guided_window_is_dmts_rule",), "one guided step too many"),
    M("motionclone-mask-dropped", "motionmatcher/methods/motionclone.py",
      "sq = (gen - ref.detach()) ** 2 * mask", "sq = (gen - ref.detach()) ** 2",
      ("tests/test_guidance_math.py",), "sparse top-k mask dropped"),
    M("motionclone-mask-bottom-k", "motionmatcher/methods/motionclone.py",
      "idx = reference.topk(k, dim=-1).indices", "idx = (-reference).topk(k, dim=-1).indices",
      ("tests/test_guidance_math.py",), "the k smallest entries kept"),
    M("motionclone-loss-denominator", "motionmatcher/methods/motionclone.py",
      "return sq.flatten(1).sum(1) / mask[0].sum()", "return sq.flatten(1).sum(1) / mask[0].numel()",
      ("tests/test_guidance_math.py",), "divided by all entries, not the kept ones"),
    M("motionclone-score-sign", "motionmatcher/methods/motionclone.py",
      "return self.weight * self.grad_guidance_scale * grad.detach()",
      "return -self.weight * self.grad_guidance_scale * grad.detach()",
      ("tests/test_guidance.py::test_guidance_gradient_is_the_losss_gradient_and_reaches_no_weight",),
      "score is −∇L"),
    M("motionclone-warm-up", "motionmatcher/methods/motionclone.py",
      "loss = loss * ((step + 1) / self.n_warm)", "loss = loss * (step / self.n_warm)",
      ("tests/test_guidance.py::test_motionclone_warm_up_ramp_scales_the_score",),
      "warm-up ramp starts at 0"),
    M("motionclone-minmax", "motionmatcher/methods/motionclone.py",
      "norm = (column - lo) / (hi - lo + EPS)", "norm = (column - lo) / (hi + EPS)",
      ("tests/test_motionclone_masks.py::test_masks_of_a_hand_made_map_match_a_hand_computation",),
      "min-max without the min in the denominator"),
    # -- motion features ---------------------------------------------------------------------
    M("attention-scale", "motionmatcher/customization/attention.py",
      "scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale",
      "scores = torch.matmul(query.float(), key.float().transpose(-1, -2))",
      ("tests/test_motion_features.py",), "attention map without the 1/√d scale"),
    M("motion-features-tsa-transpose", "motionmatcher/customization/motion_features.py",
      "return m.reshape(bsz, h * w, frames, frames)",
      "return m.reshape(bsz, h * w, frames, frames).transpose(-1, -2)",
      ("tests/test_motion_features.py",), "TSA as (key, query) instead of (query, key)"),
    M("motion-features-ca-layer", "motionmatcher/customization/motion_features.py",
      'ca.append(f"down_blocks.{i}.attentions.{j}.transformer_blocks.{b}.attn2")',
      'ca.append(f"down_blocks.{i}.attentions.{j}.transformer_blocks.{b}.attn1")',
      ("tests/test_motion_features.py",), "CA from the spatial self-attention"),
    M("lora-disabled", "motionmatcher/customization/lora.py",
      "    for layer in layers:\n        layer.enable_adapters(False)",
      "    for layer in layers:\n        layer.enable_adapters(True)",
      ("tests/test_motion_features.py::test_lora_disabled_gives_base_model_maps",),
      "the feature extractor runs with the adapter on"),
    M("lora-scale", "motionmatcher/customization/lora.py",
      "layer.scaling[name] = scale * layer.lora_alpha[name] / layer.r[name]",
      "layer.scaling[name] = scale * layer.lora_alpha[name]",
      ("tests/test_lora.py::test_switching_and_scale",), "LoRA scale without α/r"),
    M("checkpointing-dropout", "motionmatcher/customization/checkpointing.py",
      "    for m, p in drops:\n        m.p = p", "    for m, p in drops:\n        pass",
      ("tests/test_losses.py::test_no_base_dropout_under_gradient_checkpointing",),
      "dropout p not re-applied in the recomputation (the issue's caught mutant)"),
    # -- metrics -------------------------------------------------------------------------------
    M("metrics-clip-bgr", "motionmatcher/metrics/clip_score.py",
      "Image.fromarray(np.ascontiguousarray(f)) for f in frames",
      "Image.fromarray(np.ascontiguousarray(f[..., ::-1])) for f in frames",
      ("tests/test_metrics_clip.py",), "CLIP fed BGR"),
    M("metrics-clip-t", "motionmatcher/metrics/clip_score.py",
      "return float((img @ txt[0]).mean())", "return float((img @ txt[0]).max())",
      ("tests/test_metrics_clip.py",), "best frame instead of the mean"),
    M("metrics-frame-consistency", "motionmatcher/metrics/clip_score.py",
      'return float(np.einsum("td,td->t", img[:-1], img[1:]).mean())',
      'return float(np.einsum("td,td->t", img[:1].repeat(len(img) - 1, 0), img[1:]).mean())',
      ("tests/test_metrics_clip.py",), "every frame against frame 0"),
    M("metrics-discrepancy-variant", "motionmatcher/metrics/motion.py",
      'coords = n_frames * (2 if variant == "official" else 1)',
      'coords = n_frames * (1 if variant == "official" else 2)',
      ("tests/test_metrics_motion.py",), "paper and official variants swapped"),
    M("metrics-discrepancy-symmetric", "motionmatcher/metrics/motion.py",
      "score = (min_a.mean() + min_b.mean())", "score = (2 * min_a.mean())",
      ("tests/test_metrics_motion.py",), "one-sided Chamfer"),
    M("metrics-fidelity-steps", "motionmatcher/metrics/motion.py",
      "sim = (rows[start:stop] @ cols.T) / n_steps", "sim = (rows[start:stop] @ cols.T) / (n_steps + 1)",
      ("tests/test_metrics_motion.py",), "correlation over T, not T − 1 steps"),
    M("metrics-groundtruth-error", "motionmatcher/metrics/groundtruth.py",
      'err = float(np.linalg.norm(cen - gt["centroid"], axis=1).mean() / size)',
      'err = float(np.linalg.norm(cen - gt["centroid"], axis=1).max() / size)',
      ("tests/test_metrics_groundtruth.py",), "worst frame instead of the mean"),
    M("metrics-cotracker-range", "motionmatcher/metrics/tracking.py",
      "[None].float().to(self.device)\n        with torch.inference_mode():\n            tracks, visible = self.model(",
      "[None].float().div(255).to(self.device)\n        with torch.inference_mode():\n            tracks, visible = self.model(",
      ("tests/test_metrics_cotracker.py",), "CoTracker fed [0, 1] instead of [0, 255]"),
    M("metrics-cotracker-xy", "motionmatcher/metrics/tracking.py",
      "grid_size=int(grid_size))\n        tracks_np = tracks[0].permute(1, 0, 2).float()",
      "grid_size=int(grid_size))\n        tracks_np = tracks[0].permute(1, 0, 2).flip(-1).float()",
      ("tests/test_metrics_cotracker.py",), "(y, x) instead of (x, y)"),
    M("metrics-cotracker-query-layout", "motionmatcher/metrics/tracking.py",
      "np.concatenate([np.zeros((len(q), 1), np.float32), q], axis=1)",
      "np.concatenate([q, np.zeros((len(q), 1), np.float32)], axis=1)",
      ("tests/test_metrics_cotracker.py",), "queries (x, y, t) instead of (t, x, y)"),
]


def copy_repo(dest: Path) -> None:
    """The files git knows or would add (tracked + untracked, not ignored), as they are now."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = REPO / rel
        if not src.is_file():
            continue
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def run_tests(root: Path, tests, timeout: float) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              *tests], cwd=root, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0
    # 0: all passed -> the mutant survived; 1: a test failed -> killed; else: an error
    status = {0: "survived", 1: "killed"}.get(res.returncode, f"error (pytest exit {res.returncode})")
    return status, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run")
    ap.add_argument("--baseline", action="store_true",
                    help="first run every selected mutant's tests unmutated (they must pass)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    unknown = set(args.only or ()) - {m.id for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutant ids: {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.id:32s} {m.file:42s} {' '.join(m.tests)}\n{'':32s} {m.what}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        if args.baseline:
            tests = sorted({t for m in chosen for t in m.tests})
            files = {t for t in tests if "::" not in t}
            tests = [t for t in tests if t.split("::")[0] not in files or "::" not in t]
            status, secs = run_tests(root, tests, args.timeout * 2)
            print(f"baseline (unmutated): {status} in {secs:.0f} s", flush=True)
            if status != "survived":
                print("the tests fail without a mutant: fix them first")
                return 2
        for m in chosen:
            path = root / m.file
            text = path.read_text()
            n = text.count(m.original)
            if n != 1:
                results.append((m, f"stale ({n} matches)", 0.0))
                print(f"{m.id:32s} stale: the original snippet occurs {n} times in {m.file}", flush=True)
                continue
            path.write_text(text.replace(m.original, m.mutated))
            try:
                status, secs = run_tests(root, m.tests, args.timeout)
            finally:
                path.write_text(text)
            results.append((m, status, secs))
            print(f"{m.id:32s} {status:10s} {secs:6.0f} s  ({m.what})", flush=True)

    survivors = [m for m, s, _ in results if s == "survived"]
    others = [(m, s) for m, s, _ in results if s not in ("killed", "survived")]
    killed = sum(s == "killed" for _, s, _ in results)
    print(f"\n{killed} killed, {len(survivors)} survived, {len(others)} stale/timeout/error "
          f"of {len(results)} mutants")
    for m in survivors:
        print(f"SURVIVED {m.id}: {m.file}: {m.what}")
    for m, s in others:
        print(f"{s.upper()} {m.id}: {m.file}")
    return 1 if survivors or others else 0


if __name__ == "__main__":
    sys.exit(main())
