"""Memory and time of DiT motion-feature capture: chunked (the library) versus naive (full map).

One step of the feature part of MotionMatcher on a DiT: the forward up to the last matched block,
CA and TSA from its attention, a loss on them and the backward to the latents. Two captures:

* ``chunked`` -- :func:`motionmatcher.backbones.dit_features.dit_motion_features`: CA and TSA from
  the model's own post-RoPE q/k per head chunk, never the full map;
* ``naive`` -- the same layers wrapped the same way, but each capture materialises the layer's
  full attention ``softmax(q kᵀ/√d)`` (B, H, L, L) (L = all keys: video, plus text on CogVideoX)
  and cuts the CA / TSA blocks out of it, renormalised -- what a straightforward port of the
  UNet's capturing processor does.

Model: the real architecture's blocks (Wan2.1-T2V-1.3B: dim 1536, 12 heads, ffn 8960; CogVideoX-2b:
dim 1920, 30 heads), random weights, built ``--depth`` blocks deep (the forward stops after the
last matched block anyway: deeper blocks would never run). At full depth the matched blocks are
:data:`DEFAULT_LAYERS`; at a reduced depth the last ``len(DEFAULT_LAYERS)`` blocks. Each variant
runs in its own process (peak memory not inherited); CPU memory is the peak RSS increase over the
built model (approximate, see ``_measure``), GPU memory ``max_memory_allocated``.

The script also prints the projected map memory at native size (analytic: what each capture
holds per matched layer) and the same-position attention share (:func:`same_position_share`) of
the model it built (random weights: the mechanism, not a trained model's figure).

Usage::

    # CPU, reduced (what a shared 2-core box affords; re-measure on an idle machine for timings)
    .venv/bin/python benchmarks/dit_features.py --arch wan --frames 5 --height 30 --width 52 --depth 2 --threads 2
    .venv/bin/python benchmarks/dit_features.py --arch cogvideox --frames 3 --height 32 --width 44 --depth 2 --threads 2
    # GPU, native (benchmarks/gpu_check.sh)
    .venv/bin/python benchmarks/dit_features.py --arch wan --native --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _measure import measured, memory_kind, run_children  # noqa: E402

#: diffusers scripts/convert_wan_to_diffusers.py ("Wan-T2V-1.3B") and
#: scripts/convert_cogvideox_to_diffusers.py (2B: 30 layers, 30 heads, no RoPE, version "1.0")
CONFIGS = {
    "wan": dict(added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True, eps=1e-6, ffn_dim=8960,
                freq_dim=256, in_channels=16, num_attention_heads=12, num_layers=30, out_channels=16,
                patch_size=[1, 2, 2], qk_norm="rms_norm_across_heads", text_dim=4096),
    "cogvideox": dict(num_layers=30, num_attention_heads=30, use_rotary_positional_embeddings=False, in_channels=16,
                      patch_size=2, patch_size_t=None, patch_bias=True, sample_height=60, sample_width=90,
                      sample_frames=49),
}
#: the tiny random configs of tests/test_dit_features.py (text_dim 16, 6 text tokens)
TINY = {
    "wan": dict(patch_size=(1, 2, 2), num_attention_heads=3, attention_head_dim=12, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=16, ffn_dim=32, num_layers=3, rope_max_seq_len=32),
    "cogvideox": dict(num_attention_heads=3, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
                      text_embed_dim=16, num_layers=3, sample_width=8, sample_height=8, sample_frames=9,
                      max_text_seq_length=6, use_rotary_positional_embeddings=True),
}
#: native latent sizes: Wan 81 x 480 x 832 -> 21 x 60 x 104; CogVideoX 49 x 480 x 720 -> 13 x 60 x 90
NATIVE = {"wan": (21, 60, 104), "cogvideox": (13, 60, 90)}
TEXT_LEN = {"wan": 512, "cogvideox": 226}
VARIANTS = ("chunked", "naive")


def matched_blocks(arch: str, depth: int) -> dict[str, tuple[int, ...]]:
    from motionmatcher.backbones.dit_features import DEFAULT_LAYERS

    layers = DEFAULT_LAYERS[arch]
    if depth > max(layers["ca"] + layers["tsa"]):
        return layers
    n = len(layers["tsa"])
    blocks = tuple(range(max(0, depth - n), depth))
    return {"ca": blocks, "tsa": blocks}


def build(arch: str, depth: int, device: torch.device, seed: int):
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    torch.manual_seed(seed)
    cfg = dict(CONFIGS[arch], num_layers=depth)
    with torch.device(device):
        model = (WanTransformer3DModel if arch == "wan" else CogVideoXTransformer3DModel)(**cfg)
    model.requires_grad_(False)
    return model.eval()


def inputs(arch: str, frames: int, height: int, width: int, device, seed: int):
    g = torch.Generator().manual_seed(seed + 1)
    shape = (1, 16, frames, height, width) if arch == "wan" else (1, frames, 16, height, width)
    lat = torch.randn(shape, generator=g).to(device)
    emb = torch.randn(1, TEXT_LEN[arch], 4096, generator=g).to(device)
    mask = torch.zeros(1, TEXT_LEN[arch], dtype=torch.bool, device=device)
    mask[:, :24] = True  # a 24-token prompt, the rest padding
    return lat, emb, mask


def naive_features(model, arch, lat, t, emb, mask, ca_blocks, tsa_blocks):
    """CA/TSA cut out of each layer's full attention map (B, H, L, L)."""
    from motionmatcher.backbones import dit_features as df

    frames, h, w = df.token_grid(model, arch, lat)
    text_len, pos = emb.shape[1], h * w
    sums = {"ca": [], "tsa": []}

    def make_cb(name, kinds):
        def cb(q, k, scale):
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            with torch.autocast(q.device.type, enabled=False):
                a = (torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale).softmax(-1)  # full map
                off = text_len if arch == "cogvideox" else 0
                av = a[:, :, off:]
                if "ca" in kinds:
                    blk = av[..., :text_len] * mask[:, None, None, :]
                    sums["ca"].append((blk / blk.sum(-1, keepdim=True)).mean(1))
                if "tsa" in kinds:
                    b, nh = a.shape[:2]
                    a6 = av[..., off:].reshape(b, nh, frames, pos, frames, pos)
                    idx = torch.arange(pos, device=a.device)
                    blk = a6[:, :, :, idx, :, idx]  # (P, B, H, F, F)
                    sums["tsa"].append((blk / blk.sum(-1, keepdim=True)).mean(2).permute(1, 0, 2, 3))
        return cb

    layers = df.capture_layers(arch, ca_blocks, tsa_blocks)
    last = max(ca_blocks + tsa_blocks)
    with df._wrapped_processors(model, {n: make_cb(n, kinds) for n, kinds in layers.items()}):
        df._forward(model, arch, lat, t, emb, f"{df._BLOCKS[arch]}.{last}")
    ca = torch.stack(sums["ca"]).mean(0).reshape(lat.shape[0], frames, h, w, text_len)
    return ca, torch.stack(sums["tsa"]).mean(0)


def child(args, variant: str) -> dict:
    from motionmatcher.backbones import dit_features as df

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.arch, args.depth, device, args.seed)
    lat, emb, mask = inputs(args.arch, args.frames, args.height, args.width, device, args.seed)
    layers = matched_blocks(args.arch, args.depth)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args.dtype]
    lat.requires_grad_(True)
    t = torch.tensor([700.0], device=device)
    res = {"variant": variant, "layers": layers}
    try:
        with measured(device) as m:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                if variant == "chunked":
                    ca, tsa = df.dit_motion_features(model, args.arch, lat, t, emb, ca_blocks=layers["ca"],
                                                     tsa_blocks=layers["tsa"], text_mask=mask)
                else:
                    ca, tsa = naive_features(model, args.arch, lat, t, emb, mask, layers["ca"], layers["tsa"])
            loss = ca.square().mean() + tsa.square().mean()
            loss.backward()
        seconds = [m["seconds"]]
        for _ in range(args.repeat - 1):  # timing only: the minimum is the least disturbed by other load
            lat.grad = None
            with measured(device) as m2:
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    if variant == "chunked":
                        ca, tsa = df.dit_motion_features(model, args.arch, lat, t, emb, ca_blocks=layers["ca"],
                                                         tsa_blocks=layers["tsa"], text_mask=mask)
                    else:
                        ca, tsa = naive_features(model, args.arch, lat, t, emb, mask, layers["ca"], layers["tsa"])
                (ca.square().mean() + tsa.square().mean()).backward()
            seconds.append(m2["seconds"])
        res.update(seconds=min(seconds), all_seconds=seconds, peak_bytes=m["peak_bytes"], loss=loss.item())
        if args.save_maps and ca.numel() * 4 < 200 * 2**20:
            from safetensors.torch import save_file

            save_file({"ca": ca.detach().float().cpu().contiguous(), "tsa": tsa.detach().float().cpu().contiguous()},
                      str(Path(args.save_maps) / f"{variant}.safetensors"))
    except torch.OutOfMemoryError as e:
        res.update(error=f"out of memory: {str(e).splitlines()[0]}")
    return res


def projected(arch: str) -> list[tuple[str, float, float]]:
    """(what, naive GB, chunked GB) held per matched layer at native size, fp32."""
    frames, h, w = NATIVE[arch]
    cfg = CONFIGS[arch]
    heads, d = cfg["num_attention_heads"], cfg.get("attention_head_dim", 64)
    ph = 2
    s_vid = frames * (h // ph) * (w // ph)
    pos = (h // ph) * (w // ph)
    t = TEXT_LEN[arch]
    keys = s_vid + (t if arch == "cogvideox" else 0)
    full = heads * keys * keys * 4
    ca = s_vid * t * 4
    tsa = pos * frames * frames * 4
    gb = 1e9
    # naive: the full map of every head (Wan: attn1 for TSA plus attn2's (H, S, T) for CA; CogVideoX:
    # one joint map gives both), held for the backward; chunked: the head-averaged CA/TSA outputs,
    # plus one head chunk's transient (scores, softmax, grad)
    naive_ca = heads * s_vid * t * 4 if arch == "wan" else 0
    rows = [
        (f"tokens: video {frames}x{h // ph}x{w // ph} = {s_vid}, keys {keys}, heads {heads}, d {d}", 0, 0),
        ("full attention map(s), all heads, held for the backward", (full + naive_ca) / gb, 0),
        ("head-averaged CA + TSA outputs (B=1)", (ca + tsa) / gb, (ca + tsa) / gb),
        ("largest transient (chunked: one head of CA: scores, softmax, grad)", 0, 3 * s_vid * t * 4 / gb),
    ]
    flops_naive = 2 * heads * keys * keys * d
    flops_chunk = 2 * heads * (s_vid * t + pos * frames * frames) * d
    rows.append((f"score FLOPs per layer (fwd): naive {flops_naive / 1e12:.2f} T, chunked {flops_chunk / 1e12:.3f} T",
                 0, 0))
    return rows


def share_report(args) -> dict:
    from motionmatcher.backbones import dit_features as df

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.tiny:
        from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

        torch.manual_seed(args.seed)
        model = (WanTransformer3DModel if args.arch == "wan" else CogVideoXTransformer3DModel)(**TINY[args.arch])
        g = torch.Generator().manual_seed(args.seed + 1)
        shape = (1, 4, 8, 16, 16) if args.arch == "wan" else (1, 8, 4, 16, 16)
        lat, emb = torch.randn(shape, generator=g), torch.randn(1, 6, 16, generator=g)
        blocks = (0, 1, 2)
    else:
        model = build(args.arch, args.depth, device, args.seed)
        lat, emb, _ = inputs(args.arch, args.frames, args.height, args.width, device, args.seed)
        blocks = matched_blocks(args.arch, args.depth)["tsa"]
    return df.same_position_share(model, args.arch, lat, torch.tensor([700.0], device=device), emb, blocks=blocks)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("wan", "cogvideox"), default="wan")
    p.add_argument("--frames", type=int, default=5, help="latent frames")
    p.add_argument("--height", type=int, default=30, help="latent height")
    p.add_argument("--width", type=int, default=52, help="latent width")
    p.add_argument("--depth", type=int, default=2, help="blocks built (30 = the real depth)")
    p.add_argument("--native", action="store_true", help="native latent size and the real depth prefix")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="autocast of the model forward")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="steps timed per variant (the minimum is printed)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--no-share", action="store_true", help="skip the same-position share")
    p.add_argument("--share-only", action="store_true", help="only the same-position share")
    p.add_argument("--tiny", action="store_true", help="with --share-only: the tests' tiny models (8x8x8 tokens)")
    p.add_argument("--save-maps", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.native:
        args.frames, args.height, args.width = NATIVE[args.arch]
        args.depth = max(max(v) for v in matched_blocks(args.arch, 30).values()) + 1
    if args._child == "share":
        print("RESULT " + json.dumps(share_report(args)))
        return
    if args._child:
        print("RESULT " + json.dumps(child(args, args._child)))
        return

    device = torch.device(args.device)
    if args.share_only:
        share = share_report(args)
        print(f"# same-position attention share, {args.arch} {'tiny' if args.tiny else 'real blocks'}, random weights")
        for blk, s in share.items():
            print(f"block {blk}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items()))
        return
    print(f"# {args.arch}: latent {args.frames}x{args.height}x{args.width}, depth {args.depth}, "
          f"layers {matched_blocks(args.arch, args.depth)}, {args.device} {args.dtype}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        argv_child = [a for a in (argv if argv is not None else sys.argv[1:])] + ["--save-maps", tmp]
        if args.native:
            argv_child += ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
                           "--depth", str(args.depth)]
        results = run_children(__file__, argv_child, args.variants, "variant")
        print(f"| capture | time (s, min of {args.repeat}) | peak memory ({memory_kind(device)}) | loss |")
        print("| --- | --- | --- | --- |")
        for r in results:
            if "error" in r:
                print(f"| {r['variant']} | - | {r['error']} | - |")
            else:
                print(f"| {r['variant']} | {r['seconds']:.2f} | {r['peak_bytes'] / 2**20:.0f} MiB | {r['loss']:.6g} |")
        files = {v: Path(tmp) / f"{v}.safetensors" for v in VARIANTS}
        if all(f.exists() for f in files.values()):
            from safetensors.torch import load_file

            a, b = load_file(str(files["chunked"])), load_file(str(files["naive"]))
            for key in ("ca", "tsa"):
                err = ((a[key].double() - b[key].double()).norm() / b[key].double().norm()).item()
                print(f"maps {key}: relative difference chunked vs naive {err:.2e}")
    print(f"\n# projected per matched layer at native size ({args.arch}, fp32, B=1)")
    print("| what | naive (GB) | chunked (GB) |")
    print("| --- | --- | --- |")
    for what, n, c in projected(args.arch):
        print(f"| {what} | {n:.3f} | {c:.3f} |" if (n or c) else f"| {what} | | |")
    if not args.no_share:
        share = run_children(__file__, [a for a in (argv if argv is not None else sys.argv[1:])], ["share"],
                             "share")[0]
        print("\n# same-position attention share (random weights)")
        for blk, s in share.items():
            print(f"block {blk}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items()))


if __name__ == "__main__":
    main()
