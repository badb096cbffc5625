"""Wan 2.1 text-to-video (``WanTransformer3DModel``, ``AutoencoderKLWan``, UMT5) behind the
backbone interface.

* Latents ``(B, 16, F', H/8, W/8)`` (the transformer's own layout), F' = (F − 1)/4 + 1; the
  VAE normalises each channel with ``latents_mean``/``latents_std`` (:mod:`.latents`).
* Text: UMT5 encoder states of ``max_sequence_length`` = 512 tokens (the pipeline's default),
  computed with the attention mask and zeroed past the prompt's length, as
  ``WanPipeline._get_t5_prompt_embeds``; the transformer gets no mask (it attends to the zero
  states); the padding mask travels packed with the states for the motion features.
* Flow matching (:mod:`.flow`): ``z_σ = (1 − σ) z_0 + σ ε``, target ``ε − z_0``, σ = t/1000;
  sampling with the model's own scheduler (Wan 2.1 ships ``UniPCMultistepScheduler`` with flow
  sigmas and ``flow_shift`` 3.0 for 480p; a ``FlowMatchEulerDiscreteScheduler`` config works
  too), 50 steps, classifier-free guidance 5.0 (``WanPipeline.__call__`` defaults);
  inversion by Euler steps up the same sigmas.
* LoRA: finetrainers' Wan recipe ``blocks.*(to_q|to_k|to_v|to_out.0)`` (both attentions).
* Motion features: CA from the cross-attention ``blocks.{i}.attn2``, TSA from the same-position
  frame × frame block of the self-attention ``blocks.{i}.attn1``
  (:mod:`motionmatcher.backbones.dit_features`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Backbone, DiTDenoiser, DiTModel, dit_lora_targets
from .flow import FlowMatchSchedule

#: Wan2.1-T2V-1.3B-Diffusers transformer/config.json
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)

TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                        out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=4,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
TINY_VAE = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[True, True], latents_mean=[0.1, -0.2, 0.05, 0.0],
                latents_std=[1.5, 1.2, 0.9, 1.1], scale_factor_temporal=4, scale_factor_spatial=4)
TINY_TEXT = dict(vocab_size=98, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32,
                 dense_act_fn="gelu_new", is_gated_act=True, feed_forward_proj="gated-gelu",
                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
TINY_TEXT_LENGTH = 32
#: Wan2.1-T2V-1.3B-Diffusers scheduler/scheduler_config.json
WAN_SCHEDULER = dict(
    _class_name="UniPCMultistepScheduler", beta_end=0.02, beta_schedule="linear", beta_start=0.0001,
    disable_corrector=[], dynamic_thresholding_ratio=0.995, final_sigmas_type="zero", flow_shift=3.0,
    lower_order_final=True, num_train_timesteps=1000, predict_x0=True, prediction_type="flow_prediction",
    rescale_betas_zero_snr=False, sample_max_value=1.0, solver_order=2, solver_p=None, solver_type="bh2",
    steps_offset=0, thresholding=False, timestep_spacing="linspace", trained_betas=None,
    use_beta_sigmas=False, use_exponential_sigmas=False, use_flow_sigmas=True, use_karras_sigmas=False)
MAX_TEXT_LENGTH = 512
#: finetrainers' Wan LoRA recipe (bare-transformer module names; ``official`` targets)
OFFICIAL_LORA = r"blocks.*(to_q|to_k|to_v|to_out.0)"


class WanBackbone(Backbone):
    name = "wan"
    arch = "wan"
    denoiser_class = "WanTransformer3DModel"
    latent_layout = "BCFHW"
    prediction_type = "flow_prediction"
    supported_losses = ("motion_matching", "noise_prediction")
    supports_guidance = False
    sampling_defaults = {"num_steps": 50, "guidance_scale": 5.0}
    frame_chunk = 4

    def temporal_compression(self, vae_config=None) -> int:
        if vae_config is None:
            return 4
        r = getattr(vae_config, "scale_factor_temporal", None)
        return int(r) if r else 2 ** sum(bool(x) for x in vae_config.temperal_downsample)

    @staticmethod
    def spatial_compression(vae_config) -> int:
        r = getattr(vae_config, "scale_factor_spatial", None)
        return int(r) if r else 2 ** len(vae_config.temperal_downsample)

    def load(self, path: Path, device: torch.device, dtype: torch.dtype) -> DiTModel:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5EncoderModel

        from .models import model_identity
        from .base import load_tokenizer
        from .spec import read_json

        transformer = WanTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
        vae = AutoencoderKLWan.from_pretrained(path / "vae", torch_dtype=dtype)
        text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
        tokenizer = load_tokenizer(path)
        for m in (transformer, vae, text_encoder):
            m.requires_grad_(False).eval().to(device)
        length = min(MAX_TEXT_LENGTH, int(getattr(tokenizer, "model_max_length", MAX_TEXT_LENGTH)))
        return DiTModel(
            unet=DiTDenoiser(transformer, self, self.spatial_compression(vae.config)), vae=vae,
            text_encoder=text_encoder, tokenizer=tokenizer,
            scheduler_config=read_json(path / "scheduler" / "scheduler_config.json"),
            identity=model_identity(path), path=path, backbone=self, max_text_length=length,
            text_encoder_mask=True, zero_padding=True)

    def denoise(self, denoiser, x, t, states):
        return denoiser.transformer(x, t, states, return_dict=False)[0]

    def training_schedule(self, scheduler_config: dict):
        return FlowMatchSchedule(scheduler_config.get("num_train_timesteps", 1000))

    def lora_targets(self, targets: str) -> str:
        return dit_lora_targets(self.arch, targets, OFFICIAL_LORA)

    def write_tiny(self, out, seed: int = 0) -> Path:
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        from .tiny import TINY_DIT_VERSION, write_atomically, write_index, write_tokenizer

        def build(tmp: Path):
            torch.manual_seed(seed)
            WanTransformer3DModel(**TINY_TRANSFORMER).save_pretrained(tmp / "transformer")
            torch.manual_seed(seed + 1)
            AutoencoderKLWan(**TINY_VAE).save_pretrained(tmp / "vae")
            torch.manual_seed(seed + 2)
            UMT5EncoderModel(UMT5Config(**TINY_TEXT)).save_pretrained(tmp / "text_encoder")
            write_tokenizer(tmp / "tokenizer", TINY_TEXT_LENGTH)
            cfg = {k: v for k, v in WAN_SCHEDULER.items() if k != "_class_name"}
            UniPCMultistepScheduler(**cfg).save_pretrained(tmp / "scheduler")
            write_index(tmp, "WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan",
                         "UMT5EncoderModel", "UniPCMultistepScheduler")

        return write_atomically(out, {"tiny_model": "wan-tiny", "version": TINY_DIT_VERSION, "seed": seed}, build)
