"""Motion features on the DiTs (motionmatcher.backbones.dit_features) against a naive reference.

The reference recomputes each captured layer's FULL attention map from the layer's own weights
and its inputs (read by a forward pre-hook), with RoPE re-derived here as a complex rotation of
interleaved pairs, then takes the block the feature is defined on and renormalises it. For
CogVideoX with RoPE, the rotary embedding of the reference comes from diffusers' CogVideoX
pipeline itself (``_prepare_rotary_positional_embeddings``), not from the forward under test.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline
from peft import LoraConfig

from motionmatcher.backbones import dit_features as df

TOL = 1e-5


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def perturb_zero_params(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def tiny_wan(num_layers=3):
    torch.manual_seed(0)
    m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=3, attention_head_dim=12, in_channels=4,
                              out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=num_layers,
                              rope_max_seq_len=32)
    perturb_zero_params(m)
    return m.eval()


def tiny_cog(num_layers=3, rope=True):
    torch.manual_seed(0)
    m = CogVideoXTransformer3DModel(num_attention_heads=3, attention_head_dim=16, in_channels=4, out_channels=4,
                                    time_embed_dim=8, text_embed_dim=16, num_layers=num_layers, sample_width=8,
                                    sample_height=8, sample_frames=9, max_text_seq_length=6,
                                    use_rotary_positional_embeddings=rope)
    perturb_zero_params(m)
    return m.eval()


def inputs(arch, bsz=2, frames=3, size=8, text_len=6, text_dim=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (bsz, 4, frames, size, size) if arch == "wan" else (bsz, frames, 4, size, size)
    lat = torch.randn(shape, generator=g)
    emb = torch.randn(bsz, text_len, text_dim, generator=g)
    mask = torch.ones(bsz, text_len, dtype=torch.bool)
    mask[0, 4:] = False  # sample 0: two padding tokens, zero embeddings as UMT5 padding
    emb[0, 4:] = 0
    return lat, emb, mask


# --- naive reference ----------------------------------------------------------------------------

def rope_complex(x, cos, sin):
    """Rotate interleaved pairs (x[2i], x[2i+1]) by the angle whose cos/sin are given (repeated
    per pair): multiplication by exp(iθ) in the complex plane."""
    theta = torch.atan2(sin[..., 0::2], cos[..., 0::2]).double()
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    r = torch.sqrt(cos[..., 0::2].double() ** 2 + sin[..., 0::2].double() ** 2)
    return torch.view_as_real(z * r * torch.exp(1j * theta)).flatten(-2).to(x.dtype)


def record_inputs(model, names):
    seen, handles = {}, []
    for n in names:
        def hook(mod, args, kwargs, n=n):
            seen[n] = (args, kwargs)
        handles.append(model.get_submodule(n).register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def heads(x, h):  # (B, L, h*d) -> (B, h, L, d)
    return x.unflatten(-1, (h, -1)).transpose(1, 2)


def tsa_block(a_video, frames):
    """(B,H,S,S) video x video attention -> same-position block renormalised, head mean (B,P,F,F)."""
    b, h, s, _ = a_video.shape
    p = s // frames
    a6 = a_video.reshape(b, h, frames, p, frames, p)
    idx = torch.arange(p)
    blk = a6[:, :, :, idx, :, idx]  # (P, B, H, F, F)
    blk = blk / blk.sum(-1, keepdim=True)
    return blk.mean(2).permute(1, 0, 2, 3)


def ca_block(a_text, mask):
    """(B,H,S,T) attention on text keys -> padding dropped, renormalised over T, head mean (B,S,T)."""
    blk = a_text * mask[:, None, None, :].to(a_text.dtype)
    return (blk / blk.sum(-1, keepdim=True)).mean(1)


def naive_wan(model, seen, ca_blocks, tsa_blocks, mask, frames):
    ca, tsa = [], []
    for i in tsa_blocks:
        attn = model.blocks[i].attn1
        (x, _, _, (cos, sin)), _ = seen[f"blocks.{i}.attn1"]
        q = rope_complex(attn.norm_q(attn.to_q(x)).unflatten(-1, (attn.heads, -1)), cos, sin).transpose(1, 2)
        k = rope_complex(attn.norm_k(attn.to_k(x)).unflatten(-1, (attn.heads, -1)), cos, sin).transpose(1, 2)
        a = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        tsa.append(tsa_block(a, frames))
    for i in ca_blocks:
        attn = model.blocks[i].attn2
        (x, enc, _, _), _ = seen[f"blocks.{i}.attn2"]
        q = heads(attn.norm_q(attn.to_q(x)), attn.heads)
        k = heads(attn.norm_k(attn.to_k(enc)), attn.heads)
        a = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        ca.append(ca_block(a, mask))
    return torch.stack(ca).mean(0), torch.stack(tsa).mean(0)


def cog_reference_rope(model, lat):
    stub = SimpleNamespace(vae_scale_factor_spatial=8, transformer=model)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(
        stub, lat.shape[3] * 8, lat.shape[4] * 8, lat.shape[1], lat.device)


def naive_cog_attention(model, i, seen, rope):
    attn = model.transformer_blocks[i].attn1
    _, kw = seen[f"transformer_blocks.{i}.attn1"]
    x, enc = kw["hidden_states"], kw["encoder_hidden_states"]
    t = enc.shape[1]
    joint = torch.cat([enc, x], 1)
    q = attn.norm_q(heads(attn.to_q(joint), attn.heads))
    k = attn.norm_k(heads(attn.to_k(joint), attn.heads))
    if rope is not None:
        cos, sin = rope
        q = torch.cat([q[:, :, :t], rope_complex(q[:, :, t:], cos, sin)], 2)
        k = torch.cat([k[:, :, :t], rope_complex(k[:, :, t:], cos, sin)], 2)
    return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1), t


def naive_cog(model, seen, ca_blocks, tsa_blocks, mask, frames, rope):
    ca, tsa = [], []
    for i in sorted(set(ca_blocks) | set(tsa_blocks)):
        a, t = naive_cog_attention(model, i, seen, rope)
        if i in ca_blocks:
            ca.append(ca_block(a[:, :, t:, :t], mask))
        if i in tsa_blocks:
            tsa.append(tsa_block(a[:, :, t:, t:], frames))
    return torch.stack(ca).mean(0), torch.stack(tsa).mean(0)


CASES = {
    "wan": (tiny_wan, "wan"),
    "cogvideox_rope": (lambda: tiny_cog(rope=True), "cogvideox"),
    "cogvideox_sincos": (lambda: tiny_cog(rope=False), "cogvideox"),
}


def run_case(case, ca_blocks=(1,), tsa_blocks=(0, 1), early_stop=True, chunk_bytes=df.DEFAULT_CHUNK_BYTES,
             requires_grad=False):
    make, arch = CASES[case]
    model = make()
    lat, emb, mask = inputs(arch)
    lat.requires_grad_(requires_grad)
    names = list(df.capture_layers(arch, ca_blocks, tsa_blocks))
    seen, handles = record_inputs(model, names)
    try:
        ca, tsa = df.dit_motion_features(model, arch, lat, 500, emb, ca_blocks=ca_blocks, tsa_blocks=tsa_blocks,
                                         text_mask=mask, early_stop=early_stop, chunk_bytes=chunk_bytes)
    finally:
        for h in handles:
            h.remove()
    frames, h, w = df.token_grid(model, arch, lat)
    if arch == "wan":
        ref_ca, ref_tsa = naive_wan(model, seen, ca_blocks, tsa_blocks, mask, frames)
    else:
        rope = cog_reference_rope(model, lat) if model.config.use_rotary_positional_embeddings else None
        ref_ca, ref_tsa = naive_cog(model, seen, ca_blocks, tsa_blocks, mask, frames, rope)
    return SimpleNamespace(model=model, lat=lat, emb=emb, mask=mask, ca=ca, tsa=tsa, grid=(frames, h, w),
                           ref_ca=ref_ca.reshape(ca.shape), ref_tsa=ref_tsa)


# --- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks", [((1,), (0, 1)), ((0, 1), (1, 2))], ids=["ca1-tsa01", "ca01-tsa12"])
@pytest.mark.parametrize("case", list(CASES))
def test_features_equal_renormalised_blocks_of_full_attention(case, blocks):
    r = run_case(case, ca_blocks=blocks[0], tsa_blocks=blocks[1])
    frames, h, w = r.grid
    assert r.ca.shape == (2, frames, h, w, 6) and r.tsa.shape == (2, h * w, frames, frames)
    assert r.ca.dtype == torch.float32 and r.tsa.dtype == torch.float32
    assert rel_err(r.ca, r.ref_ca) <= TOL
    assert rel_err(r.tsa, r.ref_tsa) <= TOL
    # the maps are not uniform (a wrong block / a dropped renormalisation would show)
    assert r.tsa.std() > 1e-3 and r.ca[1].std() > 1e-3


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_head_chunking_gives_the_same_maps(case):
    a = run_case(case)
    b = run_case(case, chunk_bytes=1)  # one head per chunk
    assert rel_err(b.ca, a.ca) <= 1e-6 and rel_err(b.tsa, a.tsa) <= 1e-6


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_padding_tokens_get_no_mass(case):
    r = run_case(case)
    assert torch.all(r.ca[0, ..., 4:] == 0)
    torch.testing.assert_close(r.ca[0, ..., :4].sum(-1), torch.ones_like(r.ca[0, ..., 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.ca[1].sum(-1), torch.ones_like(r.ca[1, ..., 0]), atol=1e-6, rtol=0)
    # sample 1 has no padding: all six tokens carry mass
    assert torch.all(r.ca[1] > 0)


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_early_stop_same_maps_and_later_blocks_never_run(case):
    make, arch = CASES[case]
    model = make(num_layers=4) if case == "wan" else tiny_cog(num_layers=4)
    lat, emb, mask = inputs(arch)
    blocks = model.blocks if arch == "wan" else model.transformer_blocks
    calls = []
    hook = blocks[2].register_forward_pre_hook(lambda *a: calls.append(1))
    kw = dict(ca_blocks=(1,), tsa_blocks=(0, 1), text_mask=mask)
    ca_s, tsa_s = df.dit_motion_features(model, arch, lat, 500, emb, early_stop=True, **kw)
    assert calls == []
    ca_f, tsa_f = df.dit_motion_features(model, arch, lat, 500, emb, early_stop=False, **kw)
    assert calls == [1]
    hook.remove()
    assert torch.equal(ca_s, ca_f) and torch.equal(tsa_s, tsa_f)


@pytest.mark.parametrize("case", list(CASES))
def test_capture_leaves_model_output_and_processors_unchanged(case):
    make, arch = CASES[case]
    model = make()
    lat, emb, mask = inputs(arch)
    procs = dict(model.attn_processors)

    def call():
        if arch == "wan":
            return model(lat, torch.tensor([500, 500]), emb, return_dict=False)[0]
        return model(lat, emb, torch.tensor([500, 500]), image_rotary_emb=df.cogvideox_rotary_emb(model, lat),
                     return_dict=False)[0]

    out_plain = call()
    outs = []
    handle = model.register_forward_hook(lambda m, a, o: outs.append(o[0]))
    df.dit_motion_features(model, arch, lat, torch.tensor([500, 500]), emb, ca_blocks=(1,), tsa_blocks=(0, 1),
                           early_stop=False)
    handle.remove()
    assert torch.equal(outs[0], out_plain)
    assert all(model.attn_processors[k] is v for k, v in procs.items())


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_gradients_match_naive_and_reach_only_lora(case):
    make, arch = CASES[case]
    model = make(num_layers=3) if case == "wan" else tiny_cog(num_layers=3)
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=df.lora_targets(arch), init_lora_weights=True))
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    lat, emb, mask = inputs(arch)
    lat.requires_grad_(True)
    names = list(df.capture_layers(arch, (1,), (0, 1)))
    seen, handles = record_inputs(model, names)
    ca, tsa = df.dit_motion_features(model, arch, lat, 500, emb, ca_blocks=(1,), tsa_blocks=(0, 1), text_mask=mask)
    for h in handles:
        h.remove()
    frames = df.token_grid(model, arch, lat)[0]
    wc = torch.randn(ca.shape, generator=torch.Generator().manual_seed(4))
    wt = torch.randn(tsa.shape, generator=torch.Generator().manual_seed(5))
    (ca * wc).sum().add((tsa * wt).sum()).backward(retain_graph=True)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    g_lat = lat.grad.clone()

    # only LoRA parameters receive gradients, and only those of blocks up to the last captured one
    assert grads and all("lora_" in n for n in grads)
    prefix = "blocks" if arch == "wan" else "transformer_blocks"
    assert not any(n.startswith(f"{prefix}.2.") for n in grads)
    assert any(n.startswith(f"{prefix}.1.") and g.abs().sum() > 0 for n, g in grads.items())

    # the chunked, checkpointed backward equals the backward through the naive maps
    model.zero_grad()
    lat.grad = None
    if arch == "wan":
        rc, rt = naive_wan(model, seen, (1,), (0, 1), mask, frames)
    else:
        rc, rt = naive_cog(model, seen, (1,), (0, 1), mask, frames, cog_reference_rope(model, lat))
    (rc.reshape(ca.shape) * wc).sum().add((rt * wt).sum()).backward()
    assert rel_err(g_lat, lat.grad) <= 1e-4
    for n, p in model.named_parameters():
        if n in grads:
            assert rel_err(grads[n], p.grad) <= 1e-4, n


def test_cross_position_flow_matches_ditflow_formula_and_its_gradient():
    model = tiny_wan()
    lat, emb, mask = inputs("wan")
    lat.requires_grad_(True)
    seen, handles = record_inputs(model, ["blocks.1.attn1"])
    _, flow = df.dit_motion_features(model, "wan", lat, 500, emb, ca_blocks=(1,), tsa_blocks=(1,),
                                     return_ca=False, mode="cross_position", flow_temperature=2.0)
    handles[0].remove()
    frames, h, w = df.token_grid(model, "wan", lat)
    p = h * w
    assert flow.shape == (2, p, frames, frames, 2)
    attn = model.blocks[1].attn1
    (x, _, _, (cos, sin)), _ = seen["blocks.1.attn1"]
    q = rope_complex(attn.norm_q(attn.to_q(x)).unflatten(-1, (attn.heads, -1)), cos, sin).transpose(1, 2)
    k = rope_complex(attn.norm_k(attn.to_k(x)).unflatten(-1, (attn.heads, -1)), cos, sin).transpose(1, 2)
    # DiTFlow compute_motion_flow: head-mean scores, per frame-pair softmax(temp * A), displacement
    a = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).mean(1)  # (B, S, S)
    ys, xs = torch.div(torch.arange(p), w, rounding_mode="floor"), torch.arange(p) % w
    ref = torch.zeros_like(flow)
    for b in range(2):
        for f1 in range(frames):
            for f2 in range(frames):
                blk = (2.0 * a[b, f1 * p:(f1 + 1) * p, f2 * p:(f2 + 1) * p]).softmax(-1)
                dx = (blk * (xs[None, :] - xs[:, None])).sum(1)
                dy = (blk * (ys[None, :] - ys[:, None])).sum(1)
                ref[b, :, f1, f2] = torch.stack([dx, dy], -1)
    assert rel_err(flow, ref) <= TOL
    wt = torch.randn(flow.shape, generator=torch.Generator().manual_seed(6))
    (flow * wt).sum().backward(retain_graph=True)
    g = lat.grad.clone()
    lat.grad = None
    (ref * wt).sum().backward()
    assert rel_err(g, lat.grad) <= 1e-4


def test_same_position_share_equals_naive_sum():
    model = tiny_cog(rope=True)
    lat, emb, mask = inputs("cogvideox")
    seen, handles = record_inputs(model, ["transformer_blocks.1.attn1"])
    share = df.same_position_share(model, "cogvideox", lat, 500, emb, blocks=(1,), query_chunk=7)
    handles[0].remove()
    a, t = naive_cog_attention(model, 1, seen, cog_reference_rope(model, lat))
    frames, h, w = df.token_grid(model, "cogvideox", lat)
    p = h * w
    av = a[:, :, t:, t:].reshape(2, 3, frames, p, frames, p)
    idx = torch.arange(p)
    same = av[:, :, :, idx, :, idx].sum(-1)  # (P, B, H, F)
    text = a[:, :, t:, :t].sum(-1)
    assert abs(share[1]["share"] - same.mean().item()) <= 1e-6
    assert abs(share[1]["text_share"] - text.mean().item()) <= 1e-6
    of_video = same / (1 - text.reshape(2, 3, frames, p).permute(3, 0, 1, 2))  # per query (P, B, H, F)
    assert abs(share[1]["share_of_video"] - of_video.mean().item()) <= 1e-6
    assert share[1]["uniform"] == pytest.approx(frames / (t + frames * p))


def test_bad_arguments_are_refused():
    model = tiny_wan()
    lat, emb, mask = inputs("wan")
    with pytest.raises(ValueError, match="arch"):
        df.dit_motion_features(model, "unet", lat, 500, emb, ca_blocks=(1,), tsa_blocks=(1,))
    with pytest.raises(ValueError, match="out of range"):
        df.dit_motion_features(model, "wan", lat, 500, emb, ca_blocks=(3,), tsa_blocks=(1,))
    with pytest.raises(ValueError, match="mode"):
        df.dit_motion_features(model, "wan", lat, 500, emb, ca_blocks=(1,), tsa_blocks=(1,), mode="x")
    with pytest.raises(ValueError, match="text_mask"):
        df.dit_motion_features(model, "wan", lat, 500, emb, ca_blocks=(1,), tsa_blocks=(1,), text_mask=mask[:, :3])


# --- the real architectures, on the meta device -------------------------------------------------

#: diffusers scripts/convert_wan_to_diffusers.py, "Wan-T2V-1.3B"
WAN_1_3B = dict(added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True, eps=1e-6, ffn_dim=8960,
                freq_dim=256, in_channels=16, num_attention_heads=12, num_layers=30, out_channels=16,
                patch_size=[1, 2, 2], qk_norm="rms_norm_across_heads", text_dim=4096)
#: diffusers scripts/convert_cogvideox_to_diffusers.py: 2B = defaults (30 layers, 30 heads, no RoPE) +
#: get_transformer_init_kwargs("1.0")
COGVIDEOX_2B = dict(num_layers=30, num_attention_heads=30, use_rotary_positional_embeddings=False, in_channels=16,
                    patch_size=2, patch_size_t=None, patch_bias=True, sample_height=60, sample_width=90,
                    sample_frames=49)


def real(arch):
    with torch.device("meta"):
        if arch == "wan":
            return WanTransformer3DModel(**WAN_1_3B)
        return CogVideoXTransformer3DModel(**COGVIDEOX_2B)


@pytest.mark.parametrize("arch,count", [("wan", 1_418_996_800), ("cogvideox", 1_693_783_872)])
def test_real_architectures_parameter_counts_and_lora_targets(arch, count):
    model = real(arch)
    n = sum(p.numel() for p in model.parameters())
    assert n == count  # Wan2.1-T2V-1.3B: 1.42B ("1.3B"); CogVideoX-2b: 1.69B
    names = [name for name, _ in model.named_modules()]
    hit = [name for name in names if re.fullmatch(df.lora_targets(arch), name)]
    assert all(isinstance(model.get_submodule(name), torch.nn.Linear) for name in hit)
    if arch == "wan":  # 30 blocks x (attn1, attn2) x (q, k, v, out) + ffn in/out
        assert len(hit) == 30 * (8 + 2)
        assert {re.sub(r"^blocks\.\d+\.", "", x) for x in hit} == {
            f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")} | {
            "ffn.net.0.proj", "ffn.net.2"}
        assert len([x for x in names if re.fullmatch(df.lora_targets(arch, cross_attention=False, ffn=False), x)]) \
            == 30 * 4
    else:
        assert len(hit) == 30 * (4 + 2)
        assert {re.sub(r"^transformer_blocks\.\d+\.", "", x) for x in hit} == {
            f"attn1.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")} | {"ff.net.0.proj", "ff.net.2"}
    # the peft-style list of diffusers' CogVideoX LoRA example hits the same attention modules
    official = [x for x in names if any(x.endswith("." + t) for t in ("to_q", "to_k", "to_v", "to_out.0"))]
    assert sorted(official) == sorted(x for x in hit if "ff" not in x.split(".")[2])


@pytest.mark.parametrize("arch", ["wan", "cogvideox"])
def test_real_architectures_capture_hooks_attach_where_intended(arch):
    model = real(arch)
    layers = df.DEFAULT_LAYERS[arch]
    if arch == "wan":  # 81 frames x 480 x 832 at 1/8: reduced to 5 latent frames of 6x8
        lat = torch.zeros(1, 16, 5, 6, 8, device="meta")
        emb = torch.zeros(1, 512, 4096, device="meta")
    else:
        lat = torch.zeros(1, 3, 16, 6, 8, device="meta")
        emb = torch.zeros(1, 226, 4096, device="meta")
    called = []
    for name, mod in model.named_modules():
        if name.endswith(("attn1", "attn2")):
            mod.register_forward_pre_hook(lambda m, a, name=name: called.append(name))
    ca, tsa = df.dit_motion_features(model, arch, lat, torch.zeros(1, device="meta"), emb,
                                     ca_blocks=layers["ca"], tsa_blocks=layers["tsa"])
    last = max(layers["ca"] + layers["tsa"])
    blocks = "blocks" if arch == "wan" else "transformer_blocks"
    assert max(int(n.split(".")[1]) for n in called) == last  # early stop after the last matched block
    wanted = df.capture_layers(arch, layers["ca"], layers["tsa"])
    if arch == "wan":
        assert wanted == {"blocks.14.attn2": ("ca",), "blocks.14.attn1": ("tsa",)}
    else:
        assert wanted == {f"{blocks}.15.attn1": ("ca", "tsa"), f"{blocks}.17.attn1": ("ca", "tsa")}
    frames, h, w = df.token_grid(model, arch, lat)
    assert ca.shape == (1, frames, h, w, emb.shape[1]) and tsa.shape == (1, h * w, frames, frames)
    # the model's own processors are back
    assert all(type(p).__name__ in ("WanAttnProcessor", "CogVideoXAttnProcessor2_0")
               for p in model.attn_processors.values())


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_gradient_checkpointed_model_gives_the_same_gradients(case):
    """diffusers' gradient checkpointing recomputes each block in the backward; the capture must
    not change what the block saves (it would raise CheckpointError or give wrong gradients)."""
    make, arch = CASES[case]
    grads = []
    for gc in (False, True):
        model = make().train()
        if gc:
            model.enable_gradient_checkpointing()
        lat, emb, mask = inputs(arch)
        lat.requires_grad_(True)
        ca, tsa = df.dit_motion_features(model, arch, lat, 500, emb, ca_blocks=(1,), tsa_blocks=(0, 1),
                                         text_mask=mask)
        (ca.square().sum() + tsa.square().sum()).backward()
        grads.append([lat.grad] + [p.grad for p in model.parameters()])
    assert rel_err(grads[1][0], grads[0][0]) <= 1e-5
    for a, b in zip(grads[0][1:], grads[1][1:]):
        assert (a is None) == (b is None)
        if a is not None and b.norm() > 0:
            assert rel_err(b, a) <= 1e-4


@pytest.mark.parametrize("case", ["wan", "cogvideox_rope"])
def test_maps_are_float32_under_bf16_autocast(case):
    make, arch = CASES[case]
    model = make()
    lat, emb, mask = inputs(arch)
    lat.requires_grad_(True)
    kw = dict(ca_blocks=(1,), tsa_blocks=(0, 1), text_mask=mask)
    ref_ca, ref_tsa = df.dit_motion_features(model, arch, lat, 500, emb, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ca, tsa = df.dit_motion_features(model, arch, lat, 500, emb, **kw)
    assert ca.dtype == torch.float32 and tsa.dtype == torch.float32
    # bf16 q/k (8-bit mantissa) through a few blocks: close to fp32, not equal
    assert 0 < rel_err(ca, ref_ca) < 5e-2 and 0 < rel_err(tsa, ref_tsa) < 5e-2
    (ca.sum() + tsa.square().sum()).backward()
    assert lat.grad is not None and torch.isfinite(lat.grad).all()


def test_attention_outside_sdpa_is_refused_naming_the_layer():
    from diffusers.models.attention_processor import AttnProcessor

    model = tiny_cog()
    model.transformer_blocks[1].attn1.set_processor(AttnProcessor())  # explicit baddbmm, no SDPA call
    lat, emb, mask = inputs("cogvideox")
    with pytest.raises(RuntimeError, match=r"transformer_blocks\.1\.attn1: .*scaled_dot_product_attention"):
        df.dit_motion_features(model, "cogvideox", lat, 500, emb, ca_blocks=(1,), tsa_blocks=(1,))
