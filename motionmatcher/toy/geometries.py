"""Named geometries (recipes) of the pretrained toy text-to-video models, all on the same
procedural world (:mod:`.world`), with the same captions, checkpoint/resume mechanism and
quality gate (``benchmarks/toy_gate.py``). Issue #19, item 1: models whose *matched* features
(the layers MotionMatcher reads its motion features from) have a spatial resolution.

================  =========================  ===========  ============================  ============
geometry          denoiser                   frames       VAE (spatial x temporal)      matched grid
================  =========================  ===========  ============================  ============
``toy``           UNet3D (Zeroscope blocks)  8 x 32 x 32  AutoencoderKL 4 x 1 -> 8x8    2 x 2
``unet-res``      the same UNet3D            8 x 32 x 32  AutoencoderKL 1 x 1 -> 32x32  8 x 8
``wan-toy``       WanTransformer3DModel      9 x 32 x 32  AutoencoderKLWan 2 x 1        8 x 8 tokens
``wan-toy-word``  the same, word tokenizer   9 x 32 x 32  AutoencoderKLWan 2 x 1        8 x 8 tokens
``wan-toy-vae3k`` the same, VAE trained 4x   9 x 32 x 32  AutoencoderKLWan 2 x 1        8 x 8 tokens
================  =========================  ===========  ============================  ============

* ``toy`` is the committed model (``models/toy_t2v``, ``make toy-model``): this module runs
  :func:`motionmatcher.toy.pretrain.main` unchanged for it.
* ``unet-res``: MotionMatcher matches ``down_blocks.2`` (``spatial_scale_factor`` =
  ``temporal_scale_factor`` = 4 of ``config/config.yaml``'s ``motionmatcher`` loss: the block
  whose input is the latent / 4; the official code's choice on Zeroscope). diffusers' UNet3D
  downsamples after every down block but the last (no option), so the only way to read that
  block at >= 8x8 is a latent of >= 32x32. Same frames (the world, the detector and the gate
  unchanged), so the VAE must not compress space: one ``DownEncoderBlock2D`` (no
  downsampler), 4 latent channels. Same UNet (same parameters, 0.90 M): the cost is the
  16x larger token grid (measured: ``docs/toy_models.md``).
* ``wan-toy``: the Wan backbone's tiny configuration (:mod:`motionmatcher.backbones.wan`)
  widened to the toy UNet's capacity (d = 64, 8 blocks, 0.58 M + UMT5 text encoder). Every
  DiT block runs at one token grid: patch (1, 2, 2) on a 16x16 latent (VAE 2x spatial) gives
  8x8 tokens per latent frame in every block, the one
  :mod:`motionmatcher.backbones.dit_features` matches included (by default block
  ``floor(14 * 8 / 30)`` = 3, Wan-1.3B's block 14 at the same relative depth). The VAE is the
  backbone's causal 3-D ``AutoencoderKLWan`` without temporal compression (9 frames -> 9 latent
  frames: TSA stays frame x frame). Flow-matching objective (:mod:`motionmatcher.backbones.flow`).
* ``wan-toy-word``: ``wan-toy`` whose UMT5 reads one token per caption word
  (:func:`.pretrain_dit.write_word_tokenizer`) instead of the backbone's character tokenizer,
  trained on 8,192 clips (the others: 1,024) for 10,000 steps.
* ``wan-toy-vae3k``: ``wan-toy-word`` whose VAE trains 3,000 steps (725 left it dropping blue
  and most red and green objects: the DiT cannot draw what its VAE's latents lose), then
  5,000 DiT steps.

CLI (``make toy-model-res``, ``make toy-model-dit`` = ``wan-toy-vae3k``; resumable: rerun the same command, it
continues from the checkpoints in ``--work``)::

    python -m motionmatcher.toy.geometries --geometry unet-res --out models/toy_t2v_res \\
        --work resources/toy_pretrain_res --seed 0 [--steps N] [--stop-at N] [--device cuda --amp]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import pretrain
from .pretrain import TOY_TEXT_ENCODER, TOY_UNET, TOY_VAE

log = logging.getLogger(__name__)

#: AutoencoderKL without spatial compression (one block, no downsampler): 32x32x3 -> 32x32x4
RES_VAE = dict(TOY_VAE, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
               block_out_channels=(32,))


#: UMT5 text encoder of ``wan-toy``: the backbone's ``TINY_TEXT`` (2 layers x d 32) widened to
#: d 64 x 3 layers (0.1 M) -- with ``TINY_TEXT`` the first recipe did not bind colour words
#: (docs/toy_models.md)
WAN_TOY_TEXT = dict(d_model=64, d_kv=16, d_ff=128, num_layers=3)


def _wan_configs(tokenizer: str = "char"):
    from ..backbones.wan import TINY_TEXT, TINY_TRANSFORMER, TINY_VAE

    text = dict(TINY_TEXT, dropout_rate=0.0, **WAN_TOY_TEXT)
    if tokenizer == "word":
        from .pretrain_dit import word_vocab

        text["vocab_size"] = len(word_vocab())
    transformer = dict(TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=16, ffn_dim=256,
                       num_layers=8, text_dim=text["d_model"])
    # base width 16 (TINY_VAE: 8): on held-out appearances the trained VAE's round trip keeps
    # the dominant object colour in 62 % of clips, at 8 in 22 % (the committed 2-D toy VAE: 66 %;
    # benchmarks/toy_vae_roundtrip.py)
    vae = dict(TINY_VAE, base_dim=16, dim_mult=[1, 2], temperal_downsample=[False], scale_factor_temporal=1,
               scale_factor_spatial=2, latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    return transformer, vae, text


@dataclass(frozen=True)
class Geometry:
    name: str
    kind: str  # "unet3d" | "wan"
    n_frames: int
    size: int
    description: str
    #: defaults of the recipe (the committed model's for ``toy``)
    vae_steps: int = 725
    vae_batch: int = 32  # frames per VAE step (UNet) / clips per step (Wan: 4 clips = 36 frames)
    steps: int = 4475
    batch: int = 16
    clips: int = 1024
    lr: float = 2e-3
    #: denoiser steps of the final cosine decay of the learning rate (0: constant to the end)
    decay: int = 0
    #: Wan geometries' tokenizer: "char" (the backbone's tiny character tokenizer) or "word"
    #: (:func:`.pretrain_dit.write_word_tokenizer`: one token per caption word), and its length
    tokenizer: str = "char"
    text_length: int = 128
    #: Wan geometries: decay of the exponential moving average of the denoiser's and text
    #: encoder's weights that the model is exported from (0: the weights themselves)
    ema: float = 0.0
    #: Wan geometries: UMT5 layers of the text encoder (None: ``WAN_TOY_TEXT``'s 3). 0: each word's
    #: state is its embedding alone (RMS-normalised), whatever the other words of the caption
    text_layers: int | None = None
    configs: dict = field(default_factory=dict, compare=False)

    def build(self) -> dict:
        """Its configs: {"vae": ..., "denoiser": ..., "text": ...}."""
        if self.kind == "wan":
            tr, vae, text = _wan_configs(self.tokenizer)
            if self.text_layers is not None:
                text["num_layers"] = self.text_layers
            return {"vae": vae, "denoiser": tr, "text": text}
        return dict(self.configs)


GEOMETRIES = {
    "toy": Geometry("toy", "unet3d", 8, 32, "the committed model: 8x8x4 latents, down_blocks.2 at 2x2",
                    configs={"vae": TOY_VAE, "denoiser": TOY_UNET, "text": TOY_TEXT_ENCODER}),
    "unet-res": Geometry("unet-res", "unet3d", 8, 32,
                         "same frames and UNet, VAE without spatial compression: 32x32x4 latents, "
                         "down_blocks.2 at 8x8",
                         configs={"vae": RES_VAE, "denoiser": TOY_UNET, "text": TOY_TEXT_ENCODER}),
    "wan-toy": Geometry("wan-toy", "wan", 9, 32,
                        "Wan DiT (d 64, 8 blocks), 3-D VAE 2x spatial / 1x temporal: 9x16x16x4 latents, "
                        "8x8 tokens per frame in every block", vae_batch=4, lr=1e-3, steps=3000, decay=750),
    # 8,192 encoded clips instead of 1,024 (which it memorised: colour right on 66 % of training
    # appearances, 34 % of held-out ones); a fork on 8x the clips read 62.5 % against 41 % after
    # 1,000 steps, then 45 % (docs/toy_models.md)
    "wan-toy-word": Geometry("wan-toy-word", "wan", 9, 32,
                             "wan-toy with a word-level tokenizer (one token per caption word, 36 ids) "
                             "instead of the character tokenizer, on 8x the clips", vae_batch=4, lr=1e-3,
                             steps=10000, decay=1000, clips=8192, tokenizer="word", text_length=32,
                             ema=0.999),
    # wan-toy-word's held-out prompts fail per triple (an unseen colour x shape x background draws
    # nothing): the bidirectional UMT5 makes every word's state depend on the whole caption, so an
    # unseen triple is an unseen state even for a seen colour word. Without layers the colour
    # word's state is the same in every caption (docs/toy_models.md)
    "wan-toy-bow": Geometry("wan-toy-bow", "wan", 9, 32,
                            "wan-toy-word whose text encoder has no layers: a bag of word embeddings, "
                            "each word's state independent of the others", vae_batch=4, lr=1e-3,
                            steps=10000, decay=1000, clips=8192, tokenizer="word", text_length=32,
                            ema=0.999, text_layers=0),
    # wan-toy-word's VAE (725 steps) drops colours: its round trip keeps blue in 0 % of training
    # clips, and the DiT never draws blue. Trained 3,000 steps, the same VAE keeps every colour as
    # often as the detector reads it in the rendered clips (88 % of 100 training clips, blue 82 %;
    # docs/toy_models.md). 5,000 DiT steps: wan-toy-word's gate did not rise from 2,500 to 5,000
    "wan-toy-vae3k": Geometry("wan-toy-vae3k", "wan", 9, 32,
                              "wan-toy-word whose VAE trains 3,000 steps instead of 725 (it kept no blue "
                              "object), and 5,000 DiT steps", vae_steps=3000, vae_batch=4, lr=1e-3,
                              steps=5000, decay=1000, clips=8192, tokenizer="word", text_length=32,
                              ema=0.999),
}


def get(name: str) -> Geometry:
    if name not in GEOMETRIES:
        raise ValueError(f"unknown toy geometry {name!r} (known: {', '.join(GEOMETRIES)})")
    return GEOMETRIES[name]


def init_models(name: str):
    """Freshly initialised (vae, denoiser, text encoder) of a geometry (global torch RNG)."""
    g = get(name)
    cfg = g.build()
    if g.kind == "unet3d":
        from diffusers import AutoencoderKL, UNet3DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        return (AutoencoderKL(**cfg["vae"]), UNet3DConditionModel(**cfg["denoiser"]),
                CLIPTextModel(CLIPTextConfig(**cfg["text"])))
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    return (AutoencoderKLWan(**cfg["vae"]), WanTransformer3DModel(**cfg["denoiser"]),
            UMT5EncoderModel(UMT5Config(**cfg["text"])))



# ----------------------------------------------------------------------------- the matched layer


def matched_grid(name: str, seed: int = 0) -> dict:
    """Spatial size of the matched layer of a (randomly initialised) model of geometry ``name``,
    read by hooking its actual forward on a latent of the geometry's shape (the latent shape
    itself from the geometry's VAE encoding a clip).

    UNet: the input ``(B·F, C, h, w)`` of the spatial transformer of each CA layer and the
    token count of the temporal transformers' input, for the layers
    :func:`motionmatcher.customization.motion_features.motion_layers` picks with the ``motionmatcher`` loss's
    scale factors (``config/config.yaml``: 4, 4). Wan: the token grid of ``patch_embedding``'s
    output and the sequence length entering the block ``dit_features`` matches by default.
    """
    from ..backbones.dit_features import DEFAULT_LAYERS

    g = get(name)
    cfg = g.build()
    torch.manual_seed(seed)
    x = torch.zeros(1, 3, g.n_frames, g.size, g.size)
    seen: dict = {}
    with torch.no_grad():
        if g.kind == "unet3d":
            from diffusers import AutoencoderKL, UNet3DConditionModel

            from ..customization.motion_features import motion_layers

            vae = AutoencoderKL(**cfg["vae"]).eval()
            z = vae.encode(x[:, :, 0]).latent_dist.mean  # (1, 4, h, w)
            unet = UNet3DConditionModel(**cfg["denoiser"]).eval()
            h, w = z.shape[-2:]
            layers = motion_layers(unet, h, w, 4, 4)
            mods = dict(unet.named_modules())
            hooks = []
            def record(key, name):
                def hook(m, a, kw):
                    seen.setdefault(key, []).append((name, tuple(m_shape(a, kw))))
                return hook

            for n in layers.ca:  # down_blocks.i.attentions.j.transformer_blocks.0.attn2
                parent = n.split(".transformer_blocks")[0]  # the Transformer2DModel: (B·F, C, h, w)
                hooks.append(mods[parent].register_forward_pre_hook(record("ca", parent), with_kwargs=True))
            for n in layers.tsa:  # down_blocks.i.temp_attentions.j.transformer_blocks.0.attn1: (B·h·w, F, C)
                hooks.append(mods[n].register_forward_pre_hook(record("tsa", n), with_kwargs=True))
            zin = torch.zeros(1, z.shape[1], g.n_frames, h, w)
            text = torch.zeros(1, 77, cfg["text"]["hidden_size"])
            unet(zin, torch.tensor([500]), encoder_hidden_states=text)
            for hk in hooks:
                hk.remove()
            ca_hw = {s[-2:] for _, s in seen["ca"]}
            tsa_tokens = {s[0] for _, s in seen["tsa"]}  # (B·h·w) sequences of F frames
            assert len(ca_hw) == 1 and len(tsa_tokens) == 1, seen
            (ch, cw), = ca_hw
            return dict(geometry=name, latent=tuple(zin.shape[1:]), ca_layers=[n for n, _ in seen["ca"]],
                        tsa_layers=[n for n, _ in seen["tsa"]], ca_hw=(ch, cw),
                        tsa_positions=tsa_tokens.pop(), frames=g.n_frames)
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        from ..backbones.base import _blocks
        from ..backbones.wan import WanBackbone

        vae = AutoencoderKLWan(**cfg["vae"]).eval()
        z = vae.encode(x).latent_dist.mean  # (1, 4, F', h, w)
        tr = WanTransformer3DModel(**cfg["denoiser"]).eval()
        depth = tr.config.num_layers
        block = _blocks(None, DEFAULT_LAYERS["wan"]["tsa"], depth, WanBackbone.real_depth, "tsa_blocks")[0]
        def grid(m, a, o):
            seen["grid"] = tuple(o.shape[2:])

        def seq(m, a, kw):
            seen["seq"] = m_shape(a, kw)[1]

        h1 = tr.patch_embedding.register_forward_hook(grid)
        h2 = tr.blocks[block].register_forward_pre_hook(seq, with_kwargs=True)
        tr(torch.zeros_like(z), torch.tensor([500]), torch.zeros(1, 16, cfg["text"]["d_model"]))
        h1.remove()
        h2.remove()
        f, gh, gw = seen["grid"]
        assert seen["seq"] == f * gh * gw, seen
        return dict(geometry=name, latent=tuple(z.shape[1:]), block=block, ca_hw=(gh, gw),
                    tokens_per_frame=seen["seq"] // f, frames=f)


def m_shape(args, kwargs):
    hs = args[0] if args else kwargs["hidden_states"]
    return hs.shape


# ----------------------------------------------------------------------------- training


def recipe_stamp(name: str, seed: int, *, vae_steps: int, vae_batch: int, steps: int, batch: int,
                 clips: int, decay: int, ema: float) -> dict:
    """What a run's work directory is stamped with (``recipe.json``): checkpoints resume only
    under the same stamp. Options a recipe leaves at their default (``ema``) are absent, so
    adding one leaves the stamps of the existing work directories as they were."""
    g = get(name)
    stamp = dict(geometry=name, seed=seed, vae_steps=vae_steps, vae_batch=vae_batch, steps=steps, batch=batch,
                 clips=clips, decay=decay, frames=g.n_frames, size=g.size, tokenizer=g.tokenizer,
                 text_length=g.text_length)
    if ema:
        stamp["ema"] = ema
    # the model configs too: a changed architecture must not resume an old run's checkpoints
    return json.loads(json.dumps(dict(stamp, configs=g.build())))


def pretrain_geometry(name: str, out: Path | None, work: Path, seed: int = 0, *, vae_steps: int | None = None,
                      vae_batch: int | None = None, steps: int | None = None, batch: int | None = None,
                      clips: int | None = None, decay: int | None = None, ema: float | None = None,
                      stop_at: int | None = None,
                      vae_stop_at: int | None = None, device: str = "cpu", amp: bool = False,
                      ckpt_every: int = 25, export_checkpoint: bool = False):
    """Train (or resume) geometry ``name`` (not ``toy``: :func:`.pretrain.main`) in ``work``;
    write the model to ``out`` when both stages are complete. Returns the trained modules
    ``(denoiser, vae, text_encoder)``, or None when stopped at ``vae_stop_at``/``stop_at``.

    ``export_checkpoint``: train nothing; write the denoiser's last checkpoint in ``work`` (a run
    still under way) to ``out`` as a model, its stamp the recipe's with ``exported_step`` (the
    step of the checkpoint) -- what the gate of a partial run is measured on. The VAE stage
    must be complete."""
    g = get(name)
    if g.kind == "unet3d" and name == "toy":
        raise ValueError("the committed geometry `toy` is trained by motionmatcher.toy.pretrain "
                         "(make toy-model)")
    cfg = g.build()
    vae_steps = g.vae_steps if vae_steps is None else vae_steps
    vae_batch = g.vae_batch if vae_batch is None else vae_batch
    steps = g.steps if steps is None else steps
    batch = g.batch if batch is None else batch
    clips = g.clips if clips is None else clips
    decay = g.decay if decay is None else decay
    ema = g.ema if ema is None else ema
    if ema and g.kind != "wan":
        raise ValueError(f"--ema: geometry {name} (a UNet recipe) trains without a weight average")
    work.mkdir(parents=True, exist_ok=True)
    stamp = recipe_stamp(name, seed, vae_steps=vae_steps, vae_batch=vae_batch, steps=steps, batch=batch,
                         clips=clips, decay=decay, ema=ema)
    recipe = work / "recipe.json"
    if recipe.exists() and (old := json.loads(recipe.read_text())) != stamp:
        differ = sorted(k for k in set(old) | set(stamp) if old.get(k) != stamp.get(k))
        raise ValueError(f"{recipe}: the checkpoints in {work} belong to another recipe "
                         f"(differs in {', '.join(differ)}); use another --work")
    recipe.write_text(json.dumps(stamp))
    if export_checkpoint:
        if out is None:
            raise ValueError("export_checkpoint needs an output directory")
        vae_step = _ckpt_step(work / "vae_ckpt")
        if vae_step < vae_steps:
            raise ValueError(f"{work / 'vae_ckpt'}: the VAE stage is at step {vae_step} of {vae_steps}; "
                             "a checkpoint can be exported once it is complete")
        steps = _ckpt_step(work / ("dit_ckpt" if g.kind == "wan" else "unet_ckpt"))
        # the training functions, run to the checkpoint's own step, load it and train nothing
        stamp = dict(stamp, exported_step=steps)
        stop_at = vae_stop_at = None
    if g.kind == "unet3d":
        from transformers import CLIPTokenizer

        from ..backbones.models import _write_tokenizer

        _write_tokenizer(work / "tokenizer")
        tok = CLIPTokenizer.from_pretrained(work / "tokenizer")
        vae = pretrain.train_vae(work, seed, vae_steps, batch=vae_batch, vae_config=cfg["vae"], size=g.size,
                                 step_seed=True, stop_at=vae_stop_at, device=device, ckpt_every=ckpt_every)
        if vae is None:
            return None
        vae.requires_grad_(False)
        den, te = pretrain.train_unet(work, vae, tok, seed, steps, batch=batch, n_clips=clips, decay=decay,
                                      unet_config=cfg["denoiser"], size=g.size, stop_at=stop_at,
                                      device=device, amp=amp, ckpt_every=ckpt_every, lr=g.lr, step_seed=True)
        if den is None:
            return None
        if out is not None:
            pretrain.save_model(out, den, vae, te, stamp)
        return den, vae, te
    from ..backbones.cogvideox import load_tokenizer
    from ..backbones.tiny import write_tokenizer
    from . import pretrain_dit

    if g.tokenizer == "word":
        pretrain_dit.write_word_tokenizer(work / "tokenizer", g.text_length)
    else:
        write_tokenizer(work / "tokenizer", g.text_length)
    tok = load_tokenizer(work)
    vae = pretrain_dit.train_vae3d(work, seed, vae_steps, vae_config=cfg["vae"], n_frames=g.n_frames,
                                   size=g.size, batch=vae_batch, stop_at=vae_stop_at, device=device,
                                   ckpt_every=ckpt_every)
    if vae is None:
        return None
    vae.requires_grad_(False)
    den, te = pretrain_dit.train_dit(work, vae, tok, seed, steps, transformer_config=cfg["denoiser"],
                                     text_config=cfg["text"], n_frames=g.n_frames, size=g.size, batch=batch,
                                     n_clips=clips, decay=decay, stop_at=stop_at, device=device, amp=amp,
                                     ckpt_every=ckpt_every, lr=g.lr, text_length=g.text_length, ema=ema)
    if den is None:
        return None
    if out is not None:
        pretrain_dit.save_wan_model(out, den, vae, te, stamp, work / "tokenizer")
    return den, vae, te


def _ckpt_step(path: Path) -> int:
    if not (path / "state.json").exists():
        raise ValueError(f"{path}: no checkpoint to export")
    return int(json.loads((path / "state.json").read_text())["step"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--geometry", required=True, choices=sorted(GEOMETRIES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--vae-batch", type=int, help="UNet geometries: frames per step; Wan: clips per step")
    ap.add_argument("--steps", type=int, help="denoiser steps (default: the geometry's, 4475)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--clips", type=int, help="clips encoded once for the denoiser")
    ap.add_argument("--decay", type=int, help="steps of the final lr decay (default: the geometry's)")
    ap.add_argument("--ema", type=float, help="Wan: decay of the weights' moving average the model is "
                                               "exported from (default: the geometry's; 0: none)")
    ap.add_argument("--stop-at", type=int, help="checkpoint and exit after this denoiser step (resume later)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast of the denoiser's forward")
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export-checkpoint", action="store_true",
                    help="train nothing: write the denoiser's last checkpoint in --work to --out (a partial "
                         "run, e.g. for the gate); its toy_model.json says exported_step")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    if a.geometry == "toy" and a.export_checkpoint:
        ap.error("--export-checkpoint: the committed geometry `toy` has its own trainer (make toy-model)")
    if a.geometry == "toy":
        args = ["--out", str(a.out), "--work", str(a.work), "--seed", str(a.seed),
                "--threads", str(a.threads)]
        for k, v in (("--vae-steps", a.vae_steps), ("--vae-batch", a.vae_batch), ("--unet-steps", a.steps),
                     ("--unet-batch", a.batch), ("--unet-clips", a.clips), ("--unet-decay", a.decay or None)):
            if v is not None:
                args += [k, str(v)]
        return pretrain.main(args)
    res = pretrain_geometry(a.geometry, a.out, a.work, a.seed, vae_steps=a.vae_steps, vae_batch=a.vae_batch,
                            steps=a.steps, batch=a.batch, clips=a.clips, decay=a.decay, ema=a.ema,
                            stop_at=a.stop_at,
                            device=a.device, amp=a.amp, ckpt_every=a.ckpt_every,
                            export_checkpoint=a.export_checkpoint)
    log.info("stopped at step %s (resume: the same command without --stop-at)" % a.stop_at if res is None
             else f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
