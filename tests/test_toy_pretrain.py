"""Toy geometries (motionmatcher.toy.geometries): the matched layer's grid, read off the actual
forward, and bit-exact resume of both pretraining stages from checkpoints (tiny step counts)."""

from __future__ import annotations

import json

import pytest
import torch

from motionmatcher.toy import geometries, pretrain


@pytest.mark.parametrize("name, hw", [("toy", (2, 2)), ("unet-res", (8, 8)), ("wan-toy", (8, 8))])
def test_matched_layer_grid(name, hw):
    """32 px frames: toy VAE /4 -> 8x8 latent, down_blocks.2 after two downsamplings: 8/4 = 2;
    unet-res VAE /1 -> 32x32, 32/4 = 8; wan-toy VAE /2 -> 16x16, patch 2 -> 8x8 tokens."""
    g = geometries.matched_grid(name)
    assert g["ca_hw"] == hw
    if geometries.get(name).kind == "unet3d":
        assert g["ca_layers"] == ["down_blocks.2.attentions.0"]  # the config's scale factors 4, 4
        assert all(n.startswith("down_blocks.2.temp_attentions.0") for n in g["tsa_layers"])
        assert g["tsa_positions"] == hw[0] * hw[1]  # temporal attention sequences: one per position
        assert g["latent"] == (4, 8, 4 * hw[0], 4 * hw[1])
    else:
        assert g["tokens_per_frame"] == 64 and g["frames"] == 9 and g["latent"] == (4, 9, 16, 16)
        assert g["block"] == 14 * 8 // 30  # Wan-1.3B's block 14 at the same relative depth


def _state(mods) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, m in enumerate(mods) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", ["unet-res", "wan-toy", "wan-toy-word"])
def test_resume_is_bit_exact(name, tmp_path):
    """VAE 3 steps + denoiser 3 steps in one go == stopped after VAE step 1, resumed, stopped
    after denoiser step 1, resumed (two processes' worth of restarts)."""
    kw = dict(vae_steps=3, vae_batch=8 if name == "unet-res" else 1, steps=3, batch=1, clips=2,
              ckpt_every=1000)
    ref = geometries.pretrain_geometry(name, None, tmp_path / "a", 0, **kw)
    assert geometries.pretrain_geometry(name, None, tmp_path / "b", 0, vae_stop_at=1, **kw) is None
    assert (tmp_path / "b" / "vae_ckpt").is_dir()
    assert geometries.pretrain_geometry(name, None, tmp_path / "b", 0, stop_at=1, **kw) is None
    den = "unet_ckpt" if name == "unet-res" else "dit_ckpt"
    assert (tmp_path / "b" / den).is_dir()
    res = geometries.pretrain_geometry(name, None, tmp_path / "b", 0, **kw)
    a, b = _state(ref), _state(res)
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]
    # and training did change the weights (the comparison is not vacuous): the denoiser's
    # initialisation (seed + 10, as the training functions) differs from the trained weights
    from diffusers import UNet3DConditionModel, WanTransformer3DModel

    cls = UNet3DConditionModel if name == "unet-res" else WanTransformer3DModel
    torch.manual_seed(0 + 10)
    init = cls(**geometries.get(name).build()["denoiser"]).state_dict()
    assert init.keys() == ref[0].state_dict().keys()
    assert not all(torch.equal(init[k], v) for k, v in ref[0].state_dict().items())


def test_weight_average_is_the_exponential_moving_average(tmp_path):
    """`wan-toy-word` exports the moving average of its weights: after step s (from 0),
    θ̄ = d·θ̄ + (1 − d)·θ with d = min(0.999, (1 + s)/(10 + s)) and θ̄ = the initialisation
    before step 0, recomputed here from the raw weights of the checkpoint after each of 3
    steps; the run returns the average, not the raw weights."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    assert geometries.get("wan-toy-word").ema == 0.999
    kw = dict(vae_steps=1, vae_batch=1, steps=3, batch=1, clips=2, ckpt_every=1)
    torch.manual_seed(0 + 10)  # the transformer's initialisation in train_dit
    avg = {k: v.clone() for k, v in WanTransformer3DModel(**geometries.get("wan-toy-word").build()["denoiser"])
           .state_dict().items()}
    for s in range(3):
        res = geometries.pretrain_geometry("wan-toy-word", None, tmp_path, 0, stop_at=s + 1, **kw)
        ck = load_file(str(tmp_path / "dit_ckpt" / "state.safetensors"))
        d = min(0.999, (1 + s) / (10 + s))
        for k in avg:
            avg[k] = d * avg[k] + (1 - d) * ck[f"model.transformer.{k}"]
        raw = {k[len("model.transformer."):]: v for k, v in ck.items() if k.startswith("model.transformer.")}
        ema = {k[len("model.ema_transformer."):]: v for k, v in ck.items()
               if k.startswith("model.ema_transformer.")}
        assert ema.keys() == avg.keys()
        for k, v in ema.items():
            torch.testing.assert_close(v, avg[k], rtol=0, atol=1e-6)
    assert res is not None  # the last call reached the recipe's end (stop_at == steps)
    trained = res[0].state_dict()
    assert all(torch.equal(trained[k], ema[k]) for k in ema)
    assert not all(torch.equal(raw[k], ema[k]) for k in ema)


def test_resume_without_the_encoded_clips_is_bit_exact(tmp_path):
    """A work directory carried over in git (`checkpoints/wan-toy-word`) has no
    `latents.safetensors` (ignored: 300 MB): resuming re-encodes the clips from the VAE
    checkpoint, and the run goes on as if they had been kept."""
    kw = dict(vae_steps=2, vae_batch=1, steps=3, batch=2, clips=3, ckpt_every=1000)
    ref = geometries.pretrain_geometry("wan-toy-word", None, tmp_path / "a", 0, **kw)
    assert geometries.pretrain_geometry("wan-toy-word", None, tmp_path / "b", 0, stop_at=1, **kw) is None
    (tmp_path / "b" / "latents.safetensors").unlink()
    res = geometries.pretrain_geometry("wan-toy-word", None, tmp_path / "b", 0, **kw)
    assert (tmp_path / "b" / "latents.safetensors").exists()
    a, b = _state(ref), _state(res)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_other_recipe_refused(tmp_path, monkeypatch):
    kw = dict(vae_steps=1, vae_batch=1, steps=1, batch=1, clips=1)
    geometries.pretrain_geometry("wan-toy", None, tmp_path, 0, vae_stop_at=0, **kw)
    with pytest.raises(ValueError, match="another recipe .differs in steps"):
        geometries.pretrain_geometry("wan-toy", None, tmp_path, 0, **dict(kw, steps=2))
    # the same step counts with another architecture (the first wan-toy's text encoder) are
    # another recipe too: its checkpoints would not even load
    monkeypatch.setattr(geometries, "WAN_TOY_TEXT", {})
    with pytest.raises(ValueError, match="another recipe .differs in configs"):
        geometries.pretrain_geometry("wan-toy", None, tmp_path, 0, **kw)
    monkeypatch.undo()
    assert geometries.pretrain_geometry("wan-toy", None, tmp_path, 0, vae_stop_at=0, **kw) is None


def test_toy_geometry_is_the_committed_recipe(monkeypatch, tmp_path):
    """``--geometry toy`` runs motionmatcher.toy.pretrain.main with the committed configs."""
    g = geometries.get("toy")
    assert g.build() == {"vae": pretrain.TOY_VAE, "denoiser": pretrain.TOY_UNET,
                         "text": pretrain.TOY_TEXT_ENCODER}
    seen = []
    monkeypatch.setattr(pretrain, "main", lambda argv: seen.append(argv) or 0)
    assert geometries.main(["--geometry", "toy", "--out", "o", "--work", "w", "--steps", "4475"]) == 0
    assert seen == [["--out", "o", "--work", "w", "--seed", "0", "--threads", "1", "--unet-steps", "4475"]]


def test_wan_toy_export_loads_through_its_backbone(tmp_path):
    """The end of a Wan geometry's run (`make toy-model-dit`): the trained parts are written as a
    Wan diffusers directory (fp16) that `backbones.load_model` loads, with the recipe stamp (its
    write_index import was broken by a refactor and only failed after 2 hours of pretraining)."""
    from motionmatcher.backbones import load_model

    kw = dict(vae_steps=1, vae_batch=1, steps=1, batch=1, clips=1, ckpt_every=1000)
    den, vae, te = geometries.pretrain_geometry("wan-toy", tmp_path / "model", tmp_path / "work", 0, **kw)
    out = tmp_path / "model"
    stamp = json.loads((out / "toy_model.json").read_text())
    assert stamp["geometry"] == "wan-toy" and stamp["frames"] == 9
    model = load_model(out)
    assert stamp["configs"]["text"]["d_model"] == model.text_encoder.config.d_model == 64
    assert stamp["configs"]["vae"]["base_dim"] == model.vae.config.base_dim == 16
    assert stamp["decay"] == geometries.get("wan-toy").decay == 750
    assert type(model.transformer).__name__ == "WanTransformer3DModel"
    saved = model.transformer.state_dict()
    for k, v in den.state_dict().items():  # the trained weights, rounded to fp16
        assert torch.equal(saved[k].float(), v.to(torch.float16).float()), k


def test_word_tokenizer_covers_every_caption(tmp_path):
    """`wan-toy-word`'s tokenizer: one id per caption word (hand-tokenised example), and no
    caption the world writes -- plain, with motion words, with an unprompted appearance, two
    objects -- has an unknown word."""
    import numpy as np

    from motionmatcher.backbones.base import load_tokenizer
    from motionmatcher.toy import pretrain_dit, world

    n = pretrain_dit.write_word_tokenizer(tmp_path / "tokenizer", 32)
    tok = load_tokenizer(tmp_path)
    vocab = pretrain_dit.word_vocab()
    assert n == len(vocab) == len(world.caption_words()) + 5
    words = "a red circle moving down - right on a gray background".split()
    assert tok("A red circle moving down-right on a gray background").input_ids == \
        [vocab[w] for w in words] + [vocab["</s>"]]
    assert tok("a purple circle").input_ids == [vocab["a"], vocab["<unk>"], vocab["circle"], vocab["</s>"]]
    rng = np.random.default_rng(0)
    longest = 0
    for i in range(600):
        spec = world.sample_clip(rng, split=("train", "heldout")[i % 2], n_frames=9)
        if i % 3 == 0:
            world.add_appearance(spec, rng)
        ids = tok(spec.caption()).input_ids
        assert vocab["<unk>"] not in ids, spec.caption()
        longest = max(longest, len(ids))
    assert longest <= 32


@pytest.mark.parametrize("name,ckpt,denoiser", [("wan-toy", "dit_ckpt", "transformer"),
                                                   ("unet-res", "unet_ckpt", "unet")])
def test_export_checkpoint_writes_the_checkpoint_of_a_run_under_way(name, ckpt, denoiser, tmp_path):
    """`--export-checkpoint`: the denoiser's weights of the last checkpoint (step 2 of a 4-step
    recipe), rounded to fp16, as a model the backbone loads; the stamp says the step. With the
    VAE stage unfinished there is nothing to export: an error. Both denoiser kinds (the DiT's
    and the UNet's trainers)."""
    from safetensors.torch import load_file

    from motionmatcher.backbones import load_model

    work, out = tmp_path / "work", tmp_path / "model"
    vae_batch = 8 if name == "unet-res" else 1
    kw = dict(vae_steps=2, vae_batch=vae_batch, steps=4, batch=1, clips=1, ckpt_every=1000)
    cli = ["--geometry", name, "--out", str(out), "--work", str(work), "--vae-steps", "2",
           "--vae-batch", str(vae_batch), "--steps", "4", "--batch", "1", "--clips", "1",
           "--export-checkpoint"]
    with pytest.raises(ValueError, match="no checkpoint to export"):
        geometries.main(cli)
    assert geometries.pretrain_geometry(name, None, work, 0, vae_stop_at=1, **kw) is None
    with pytest.raises(ValueError, match="VAE stage is at step 1 of 2"):
        geometries.main(cli)
    assert geometries.pretrain_geometry(name, None, work, 0, stop_at=2, **kw) is None
    if name == "wan-toy":  # an export needs no training data: nothing is re-encoded
        (work / "latents.safetensors").unlink()
    assert geometries.main(cli) == 0
    assert (work / "latents.safetensors").exists() == (name != "wan-toy")
    stamp = json.loads((out / "toy_model.json").read_text())
    assert stamp["exported_step"] == 2 and stamp["steps"] == 4
    assert json.loads((work / ckpt / "state.json").read_text())["step"] == 2  # nothing trained
    ck = load_file(str(work / ckpt / "state.safetensors"))
    saved = getattr(load_model(out), denoiser).state_dict()
    assert saved
    for k, v in saved.items():
        assert torch.equal(v, ck[f"model.{denoiser}.{k}"].to(torch.float16).to(v.dtype)), k
    assert geometries.pretrain_geometry(name, None, work, 0, **kw)[0] is not None  # still resumes


def test_wan_toy_word_exports_its_word_tokenizer(tmp_path):
    """`wan-toy-word` differs from `wan-toy` only in its tokenizer (and the text encoder's
    vocabulary): the model directory carries that tokenizer and the backbone encodes a caption
    into one token per word."""
    from motionmatcher.backbones import load_model
    from motionmatcher.toy import pretrain_dit

    a, b = geometries.get("wan-toy").build(), geometries.get("wan-toy-word").build()
    assert a["denoiser"] == b["denoiser"] and a["vae"] == b["vae"]
    assert {k for k in a["text"] if a["text"][k] != b["text"][k]} == {"vocab_size"}
    kw = dict(vae_steps=1, vae_batch=1, steps=1, batch=1, clips=1, ckpt_every=1000)
    geometries.pretrain_geometry("wan-toy-word", tmp_path / "model", tmp_path / "work", 0, **kw)
    model = load_model(tmp_path / "model")
    assert model.text_encoder.config.vocab_size == len(pretrain_dit.word_vocab())
    assert model.max_text_length == 32
    assert len(model.tokenizer("a red circle on a gray background").input_ids) == 8
    assert json.loads((tmp_path / "model" / "toy_model.json").read_text())["tokenizer"] == "word"


def test_wan_toy_bow_text_states_do_not_depend_on_the_other_words(tmp_path):
    """`wan-toy-bow` is `wan-toy-word` with a layer-less text encoder: through the exported
    model's own prompt encoding, "blue" has the same state in a caption of a held-out triple as
    in one of a training triple (with `wan-toy-word`'s 3 layers it does not)."""
    from motionmatcher.backbones import load_model

    a, b = geometries.get("wan-toy-word").build(), geometries.get("wan-toy-bow").build()
    assert {k for k in a["text"] if a["text"][k] != b["text"][k]} == {"num_layers"}
    assert (a["text"]["num_layers"], b["text"]["num_layers"]) == (3, 0)
    assert a["denoiser"] == b["denoiser"] and a["vae"] == b["vae"]
    prompts = ["a blue circle on a gray background", "a blue triangle on a black background"]
    same = {}
    for name in ("wan-toy-word", "wan-toy-bow"):
        kw = dict(vae_steps=1, vae_batch=1, steps=1, batch=1, clips=1, ckpt_every=1000)
        geometries.pretrain_geometry(name, tmp_path / name, tmp_path / f"work-{name}", 0, **kw)
        model = load_model(tmp_path / name)
        with torch.no_grad():
            states = model.encode_prompt(prompts)
        same[name] = torch.equal(states[0, 1], states[1, 1])  # position 1: "blue"
    assert same == {"wan-toy-word": False, "wan-toy-bow": True}


def test_committed_run_keeps_its_recipe_stamp():
    """`checkpoints/wan-toy-word` resumes only under the stamp it was written with: what came
    since (the geometry `wan-toy-vae3k`, the stamp computed by `recipe_stamp`) leaves it as it
    was."""
    from pathlib import Path

    committed = json.loads((Path(__file__).parents[1] / "checkpoints/wan-toy-word/recipe.json").read_text())
    g = geometries.get("wan-toy-word")
    stamp = geometries.recipe_stamp("wan-toy-word", 0, vae_steps=g.vae_steps, vae_batch=g.vae_batch,
                                    steps=g.steps, batch=g.batch, clips=g.clips, decay=g.decay, ema=g.ema)
    assert stamp == committed


def test_committed_toy_dit_is_its_run_exported(tmp_path):
    """`models/toy_wan` is what `make toy-model-dit` writes from the committed work directory
    `checkpoints/wan-toy-vae3k` at the end of its recipe: exporting that checkpoint again gives
    the same fp16 weights bit for bit, and the same stamp."""
    from pathlib import Path

    from safetensors.torch import load_file

    import shutil

    repo = Path(__file__).parents[1]
    g = geometries.get("wan-toy-vae3k")
    work = shutil.copytree(repo / "checkpoints/wan-toy-vae3k", tmp_path / "work",
                           ignore=shutil.ignore_patterns("latents.safetensors"))  # the repo is not written
    geometries.pretrain_geometry("wan-toy-vae3k", tmp_path / "m", work, 0, export_checkpoint=True)
    stamp = json.loads((tmp_path / "m" / "toy_model.json").read_text())
    assert stamp.pop("exported_step") == g.steps  # the recipe's end, not a run under way
    assert json.loads((repo / "models/toy_wan/toy_model.json").read_text()) == stamp
    for f in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
              "text_encoder/model.safetensors"):
        a, b = load_file(str(tmp_path / "m" / f)), load_file(str(repo / "models/toy_wan" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


def test_committed_toy_dit_draws_the_prompted_colour(tmp_path):
    """The committed toy DiT's colour gate on 8 held-out prompts (its full reading on 56:
    docs/toy_models.md): the prompted colour dominates in at least 7 (`toy_gate.py` exits 1
    below 80 %), and the objects move."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("toy_gate", repo / "benchmarks/toy_gate.py")
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    rc = gate.main(["--model", str(repo / "models/toy_wan"), "--n", "8", "--json", str(tmp_path / "g.json")])
    res = json.loads((tmp_path / "g.json").read_text())
    assert rc == 0, res
    assert res["colour_rate"] >= 7 / 8 and res["mean_displacement_px"] >= 1.0


def test_toy_benchmark_config_matches_the_committed_unet_at_8x8():
    """config/toy_benchmark.yaml's scale factors (1, 1) on models/toy_t2v (8x8 latent): the
    matched layers are down_blocks.0's, at 8x8 (docs/toy_models.md); the config's default (4, 4)
    gives down_blocks.2 at 2x2."""
    from pathlib import Path

    import yaml
    from diffusers import UNet3DConditionModel

    from motionmatcher.customization.motion_features import motion_layers

    root = Path(__file__).resolve().parents[1]
    kw = yaml.safe_load((root / "config/toy_benchmark.yaml").read_text())["methods"]["motionmatcher"]["train"]["loss_kwargs"]
    unet = UNet3DConditionModel.from_pretrained(root / "models/toy_t2v/unet")
    got = motion_layers(unet, 8, 8, kw["spatial_scale_factor"], kw["temporal_scale_factor"])
    assert got.ca_hw == got.tsa_hw == (8, 8)
    assert got.ca == ["down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    assert {n.split(".temp_attentions")[0] for n in got.tsa} == {"down_blocks.0"}
    assert motion_layers(unet, 8, 8, 4, 4).ca_hw == (2, 2)
