"""CogVideoX (``CogVideoXTransformer3DModel``, ``AutoencoderKLCogVideoX``, T5) behind the
backbone interface.

* Latents: the transformer takes ``(B, F', C, h, w)``; the pipeline keeps ``(B, C, F', h, w)``
  and :class:`~.base.DiTDenoiser` permutes. F' = (F − 1)/4 + 1; ``z = scaling_factor · μ``.
* Text: T5 encoder states of ``max_text_seq_length`` = 226 tokens, padded, encoded *without*
  the attention mask and not zeroed, as ``CogVideoXPipeline._get_t5_prompt_embeds``; the
  transformer's joint attention sees all 226 (no mask). The padding mask travels packed with
  the states for the motion features (CA renormalised over the prompt's own tokens).
* v-prediction on ``alphas_cumprod`` of ``CogVideoXDDIMScheduler`` (scaled-linear betas, SNR
  shift 3, zero terminal SNR, trailing spacing)::

      z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε,   v = √ᾱ_t ε − √(1−ᾱ_t) z_0

  The ``noise_prediction`` loss is ``‖v̂ − v‖²``, which equals the diffusers CogVideoX LoRA
  example's loss ``‖x̂_0 − z_0‖² / (1 − ᾱ_t)`` (x̂_0 = √ᾱ z_t − √(1−ᾱ) v̂, so
  x̂_0 − z_0 = −√(1−ᾱ)(v̂ − v)). One step: DDIM (η = 0) from (x̂_0, ε̂) with
  ε̂ = √ᾱ v̂ + √(1−ᾱ) z_t, which never divides by √ᾱ (ᾱ_999 = 0 here).
* Sampling with ``CogVideoXDDIMScheduler`` (the 2B pipeline's; the 5B ships
  ``CogVideoXDPMScheduler``, whose ancestral steps are stochastic: we sample with DDIM on the
  same ᾱ, a stated departure), 50 steps, guidance 6.0 (``CogVideoXPipeline.__call__``).
* RoPE (5B: ``use_rotary_positional_embeddings``) built as the pipeline's
  ``_prepare_rotary_positional_embeddings``.
* LoRA: diffusers' ``examples/cogvideo/train_cogvideox_lora.py`` targets
  ``to_k, to_q, to_v, to_out.0`` (every attention: here the joint ``attn1``).
* Motion features: CA = the video-query × text-key block of the joint ``attn1``, renormalised
  over the (unpadded) text keys; TSA = its same-position frame × frame video block.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Backbone, DiTDenoiser, DiTModel, dit_lora_targets, load_tokenizer

#: CogVideoX-2b transformer/config.json
COGVIDEOX_2B = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                    flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, text_embed_dim=4096,
                    num_layers=30, dropout=0.0, attention_bias=True, sample_width=90, sample_height=60,
                    sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                    activation_fn="gelu-approximate", timestep_activation_fn="silu",
                    norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
                    temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=False,
                    use_learned_positional_embeddings=False)
TINY_TRANSFORMER = dict(COGVIDEOX_2B, num_attention_heads=2, attention_head_dim=16, in_channels=4,
                        out_channels=4, time_embed_dim=32, text_embed_dim=32, num_layers=4,
                        sample_width=8, sample_height=8, sample_frames=9, max_text_seq_length=32)
TINY_VAE = dict(in_channels=3, out_channels=3,
                down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
                block_out_channels=(8, 16, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4,
                temporal_compression_ratio=4, sample_height=32, sample_width=32, scaling_factor=0.7)
TINY_TEXT = dict(vocab_size=98, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32,
                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
#: CogVideoX-2b scheduler/scheduler_config.json
COGVIDEOX_SCHEDULER = dict(
    _class_name="CogVideoXDDIMScheduler", beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085,
    clip_sample=False, clip_sample_range=1.0, num_train_timesteps=1000, prediction_type="v_prediction",
    rescale_betas_zero_snr=True, sample_max_value=1.0, set_alpha_to_one=True, snr_shift_scale=3.0,
    steps_offset=0, timestep_spacing="trailing", trained_betas=None)
#: diffusers' examples/cogvideo/train_cogvideox_lora.py (bare-transformer module names)
OFFICIAL_LORA = r".*(to_q|to_k|to_v|to_out\.0)"
COGVIDEOX_SCHEDULERS = ("CogVideoXDDIMScheduler", "CogVideoXDPMScheduler")


def sampling_scheduler(config: dict):
    """CogVideoX's DDIM scheduler (for a DPM config too: same ᾱ, deterministic steps)."""
    from diffusers import CogVideoXDDIMScheduler

    cfg = {k: v for k, v in dict(config).items() if k != "_class_name"}
    return CogVideoXDDIMScheduler.from_config(cfg)


class CogVideoXBackbone(Backbone):
    name = "cogvideox"
    arch = "cogvideox"
    denoiser_class = "CogVideoXTransformer3DModel"
    latent_layout = "BFCHW"
    prediction_type = "v_prediction"
    supported_losses = ("motion_matching", "noise_prediction")
    supports_guidance = False
    sampling_defaults = {"num_steps": 50, "guidance_scale": 6.0}

    def temporal_compression(self, vae_config=None) -> int:
        return int(getattr(vae_config, "temporal_compression_ratio", 4)) if vae_config is not None else 4

    def load(self, path: Path, device: torch.device, dtype: torch.dtype) -> DiTModel:
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import T5EncoderModel

        from .models import model_identity
        from .spec import read_json

        transformer = CogVideoXTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
        vae = AutoencoderKLCogVideoX.from_pretrained(path / "vae", torch_dtype=dtype)
        text_encoder = T5EncoderModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
        tokenizer = load_tokenizer(path)
        for m in (transformer, vae, text_encoder):
            m.requires_grad_(False).eval().to(device)
        spatial = 2 ** (len(vae.config.block_out_channels) - 1)
        return DiTModel(
            unet=DiTDenoiser(transformer, self, spatial), vae=vae, text_encoder=text_encoder,
            tokenizer=tokenizer, scheduler_config=read_json(path / "scheduler" / "scheduler_config.json"),
            identity=model_identity(path), path=path, backbone=self,
            max_text_length=int(transformer.config.max_text_seq_length),
            text_encoder_mask=False, zero_padding=False)

    @staticmethod
    def rotary_embedding(transformer, latent_shape, device):
        """``image_rotary_emb`` for a native latent of shape (B, F', C, h, w), as the pipeline
        builds it (None for the 2B's sin-cos positions)."""
        cfg = transformer.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        frames, h, w = latent_shape[1], latent_shape[3], latent_shape[4]
        p, p_t = cfg.patch_size, cfg.patch_size_t
        gh, gw = h // p, w // p
        base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
        if p_t is None:
            crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
            return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                           grid_size=(gh, gw), temporal_size=frames, device=device)
        return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
                                       temporal_size=(frames + p_t - 1) // p_t, grid_type="slice",
                                       max_size=(base_h, base_w), device=device)

    def denoise(self, denoiser, x, t, states):
        rope = self.rotary_embedding(denoiser.transformer, x.shape, x.device)
        return denoiser.transformer(hidden_states=x, encoder_hidden_states=states, timestep=t,
                                    image_rotary_emb=rope, return_dict=False)[0]

    def training_schedule(self, scheduler_config: dict):
        return sampling_scheduler(scheduler_config)

    def lora_targets(self, targets: str) -> str:
        return dit_lora_targets(self.arch, targets, OFFICIAL_LORA)

    def write_tiny(self, out, seed: int = 0) -> Path:
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        from .tiny import TINY_DIT_VERSION, write_atomically, write_index, write_tokenizer

        def build(tmp: Path):
            torch.manual_seed(seed)
            CogVideoXTransformer3DModel(**TINY_TRANSFORMER).save_pretrained(tmp / "transformer")
            torch.manual_seed(seed + 1)
            AutoencoderKLCogVideoX(**TINY_VAE).save_pretrained(tmp / "vae")
            torch.manual_seed(seed + 2)
            T5EncoderModel(T5Config(**TINY_TEXT)).save_pretrained(tmp / "text_encoder")
            write_tokenizer(tmp / "tokenizer", TINY_TRANSFORMER["max_text_seq_length"])
            sampling_scheduler(COGVIDEOX_SCHEDULER).save_pretrained(tmp / "scheduler")
            write_index(tmp, "CogVideoXPipeline", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX",
                         "T5EncoderModel", "CogVideoXDDIMScheduler")

        return write_atomically(out, {"tiny_model": "cogvideox-tiny", "version": TINY_DIT_VERSION, "seed": seed},
                                build)
