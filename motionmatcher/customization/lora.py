"""LoRA adapters on a ``UNet3DConditionModel``, injected with peft.

diffusers' ``UNet3DConditionModel`` has no ``PeftAdapterMixin``, so adapters are injected with
:func:`peft.inject_adapter_in_model` and saved/loaded in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``): the result loads with plain peft
onto a base UNet (:func:`load_adapter` is exactly that).

LoRA (Hu et al.): for a frozen linear layer W, ``h = W x + (alpha / r) · B A x`` with
A ∈ R^{r×d_in}, B ∈ R^{d_out×r}; B starts at zero so the adapted model equals the base one.
As the official LoRA of MotionMatcher, DDPM-LoRA (the same code) and MotionDirector
(``utils/lora.py``, ``LoraInjectedLinear``): A ~ N(0, (1/r)²) whatever d_in (peft's default,
Kaiming-uniform, gives std 1/√(3·d_in): 2–4× smaller on Zeroscope's wide layers), and training
dropout on the up projection's output, ``h = W x + (alpha / r) · dropout(B A x)``
(:func:`dropout_after_up`; peft's own is on the input).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from ..files.tensor_files import read_checked
from .module_index import index_of

DEFAULT_ADAPTER = "motion"

_TRANSFORMER = r".*(attentions\.\d+|transformer_in)\."
_ATTN = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
_FF = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"

#: Every linear layer of every spatial (``Transformer2DModel``) and temporal
#: (``TransformerTemporalModel``, ``transformer_in`` included) transformer: attention
#: q/k/v/out, feed-forward, proj_in/proj_out.
ALL_TRANSFORMER_LINEARS = rf"{_TRANSFORMER}(proj_in|proj_out|{_ATTN}|{_FF})"
#: Spatial transformers only: self-attention q/k/v/out and feed-forward (MotionDirector's
#: spatial path).
SPATIAL_SELF_ATTN_FF = rf".*\.attentions\.\d+\.(transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)|{_FF})"
#: Temporal transformers only (``temp_attentions`` and ``transformer_in``): attention and
#: feed-forward.
TEMPORAL_ATTN_FF = rf".*(temp_attentions\.\d+|transformer_in)\.({_ATTN}|{_FF})"
#: Official MotionMatcher (``utils/lora.py``, ``_find_modules_v2``): the spatial transformers'
#: self-attention and feed-forward, the temporal transformers' (``transformer_in`` included)
#: ``attn1``, ``attn2`` and feed-forward; never the spatial cross-attention (``attn2`` of
#: ``attentions.*``) nor ``proj_in``/``proj_out``. The default of ``motionmatcher`` and
#: ``ddpm_lora``.
MOTIONMATCHER_TARGETS = rf"{SPATIAL_SELF_ATTN_FF}|{TEMPORAL_ATTN_FF}"
#: q/k/v projections of the temporal attention blocks (``temp_attentions``; both ``attn1`` and
#: ``attn2`` are temporal self-attention there), ``transformer_in`` excluded (VMC's trained set).
TEMPORAL_ATTN_QKV = r".*temp_attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v)"

#: Named module sets (regexes ``re.fullmatch``-ed against module names, as peft does). Used for
#: LoRA targets and for the modules a full fine-tune trains (motionmatcher.customization.training).
TARGETS = {
    "motionmatcher": MOTIONMATCHER_TARGETS,
    "all_transformer_linears": ALL_TRANSFORMER_LINEARS,
    "spatial_self_attn_ff": SPATIAL_SELF_ATTN_FF,
    "temporal_attn_ff": TEMPORAL_ATTN_FF,
    "temporal_attn_qkv": TEMPORAL_ATTN_QKV,
}


def lora_config(rank: int = 32, dropout: float = 0.1, targets: str = "motionmatcher",
                alpha: float | None = None) -> LoraConfig:
    """A peft :class:`LoraConfig`; ``targets`` is a key of :data:`TARGETS` or a regex."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        target_modules=TARGETS.get(targets, targets),
        # the official LoRA (cloneofsimo lora.py in MotionMatcher, MotionDirector):
        # lora_down ~ N(0, (1/r)^2), lora_up = 0; peft's "gaussian" is exactly that (std 1/r)
        init_lora_weights="gaussian",
    )


def _dropout_on_output(module, args, output):
    """Forward hook on ``lora_B``: its child dropout on the up projection's output."""
    return module.lora_dropout(output)


def dropout_after_up(unet: torch.nn.Module, adapter_name: str) -> None:
    """Move adapter ``adapter_name``'s dropout from the input (peft: ``B A dropout(x)``) to the
    output of the up projection, as the official LoRA: ``dropout(lora_up(lora_down(x))) · s``
    (MotionMatcher / MotionDirector ``utils/lora.py``, ``LoraInjectedLinear.forward``). The
    ``nn.Dropout`` becomes a child ``lora_dropout`` of ``lora_B[adapter_name]``, applied by a
    forward hook: no weights, so the state dict keys stay peft's; still a module named
    ``*.lora_dropout*`` (train/eval mode, ``p``, checkpointing snapshots and
    :func:`motionmatcher.customization.diffusion.base_dropout_disabled`'s exception all see it)."""
    for layer in tuner_layers(unet):
        drops = getattr(layer, "lora_dropout", {})
        if adapter_name in drops and isinstance(drops[adapter_name], torch.nn.Dropout):
            up = layer.lora_B[adapter_name]
            up.add_module("lora_dropout", drops[adapter_name])
            drops[adapter_name] = torch.nn.Identity()
            up.register_forward_hook(_dropout_on_output)


def add_lora(unet: torch.nn.Module, config: LoraConfig, adapter_name: str = DEFAULT_ADAPTER):
    """Inject a LoRA adapter into ``unet`` in place, freeze the base, return the LoRA params."""
    unet.requires_grad_(False)
    was_training = unet.training
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    dropout_after_up(unet, adapter_name)
    unet.train(was_training)  # injected modules (dropout) follow the model's mode
    params = []
    for name, p in unet.named_parameters():
        trainable = f".{adapter_name}." in name and "lora_" in name
        p.requires_grad_(trainable)
        if trainable:
            params.append(p)
    return params


def tuner_layers(unet: torch.nn.Module) -> list[BaseTunerLayer]:
    index = index_of(unet)  # inside the training loop: listed once (customization.module_index)
    if index is not None:
        return list(index.tuner_layers)
    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def set_lora_enabled(unet: torch.nn.Module, enabled: bool) -> None:
    for layer in tuner_layers(unet):
        layer.enable_adapters(enabled)


@contextmanager
def lora_disabled(unet: torch.nn.Module):
    """Run the base model: every adapter off inside the block; adapter state and the
    ``requires_grad`` flags (which peft's ``enable_adapters`` touches) restored after."""
    layers = tuner_layers(unet)
    states = [layer.disable_adapters for layer in layers]
    flags = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield unet
    finally:
        for layer, disabled in zip(layers, states):
            layer.enable_adapters(not disabled)
        for p, flag in flags:
            p.requires_grad_(flag)


def set_lora_scale(unet: torch.nn.Module, scale: float, adapter_name: str | None = None) -> None:
    """Multiply each adapter's contribution by ``scale`` (on top of alpha / r); 1.0 restores."""
    for layer in tuner_layers(unet):
        for name in layer.scaling:
            if adapter_name is None or name == adapter_name:
                layer.scaling[name] = scale * layer.lora_alpha[name] / layer.r[name]


def save_adapter(unet: torch.nn.Module, out_dir: str | os.PathLike, config: LoraConfig,
                 adapter_name: str = DEFAULT_ADAPTER) -> Path:
    """Save in peft format: ``adapter_config.json`` + ``adapter_model.safetensors``, the weights
    with a content hash (:func:`motionmatcher.files.tensor_files.write_checked`; refused if not finite),
    written atomically with the umask's permissions."""
    from ..files.tensor_files import write_checked

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    write_checked(out / "adapter_model.safetensors", state, metadata={"format": "pt"},
                  step=f"training of adapter {adapter_name!r}")
    config.save_pretrained(out)
    return out


def load_adapter(unet: torch.nn.Module, adapter_dir: str | os.PathLike,
                 adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Inject and load a saved adapter onto a base ``unet`` with plain peft (frozen)."""
    adapter_dir = Path(adapter_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    weights = adapter_dir / "adapter_model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"adapter {adapter_dir}: missing {f.name}")
    config = LoraConfig(**{k: v for k, v in json.loads(cfg_file.read_text()).items()
                           if k in LoraConfig.__dataclass_fields__})
    config.inference_mode = True
    was_training = unet.training
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    unet.train(was_training)
    state = read_checked(weights, device=unet.device)[0]  # content hash checked before use
    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter {weights}: {len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    activate_adapters(unet)  # a second loaded adapter must not switch the first one off
    unet.requires_grad_(False)


# ---- several named adapters on one UNet (MotionDirector's spatial + temporal paths) ----------
#
# peft's ``inject_adapter_in_model`` makes the *newly injected* adapter the active one on every
# LoRA layer of the model, including the layers that only carry an earlier adapter: after
# injecting "spatial" then "temporal", the spatial layers would silently compute nothing.
# :func:`activate_adapters` puts every layer back to "all of its own adapters active"
# (``BaseTunerLayer.set_adapter(list)``).


def adapter_names(unet: torch.nn.Module) -> list[str]:
    """Names of the LoRA adapters injected into ``unet`` (sorted)."""
    names: set[str] = set()
    for layer in tuner_layers(unet):
        names.update(layer.lora_A.keys())
    return sorted(names)


def activate_adapters(unet: torch.nn.Module, names=None) -> None:
    """Make every adapter in ``names`` (default: all) active at once on each LoRA layer that
    carries it; ``requires_grad`` flags are left as they were."""
    flags = [(p, p.requires_grad) for p in unet.parameters()]
    for layer in tuner_layers(unet):
        own = [a for a in layer.lora_A.keys() if names is None or a in names]
        if own and list(layer.active_adapters) != own:
            layer.set_adapter(own)
    for p, flag in flags:
        if p.requires_grad != flag:
            p.requires_grad_(flag)


def add_loras(unet: torch.nn.Module, configs: dict[str, LoraConfig]) -> dict[str, list[torch.nn.Parameter]]:
    """Inject several named adapters (``{name: LoraConfig}``), all active at once; freeze the
    base and make exactly the adapters' LoRA weights trainable. Returns ``{name: params}``."""
    import warnings

    unet.requires_grad_(False)
    was_training = unet.training
    for name, config in configs.items():
        with warnings.catch_warnings():  # "multiple adapters in the model": intended here
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            inject_adapter_in_model(config, unet, adapter_name=name)
        dropout_after_up(unet, name)
    unet.train(was_training)
    activate_adapters(unet, list(configs))
    out: dict[str, list[torch.nn.Parameter]] = {name: [] for name in configs}
    for pname, p in unet.named_parameters():
        hit = next((n for n in configs if f".{n}." in pname and "lora_" in pname), None)
        p.requires_grad_(hit is not None)
        if hit is not None:
            out[hit].append(p)
    empty = [n for n, ps in out.items() if not ps]
    if empty:
        raise ValueError(f"LoRA adapter(s) {empty} matched no module of the UNet")
    return out


@contextmanager
def adapters_disabled(unet: torch.nn.Module, names):
    """Switch the adapters ``names`` off inside the block (the others stay as they are); each
    layer's active adapters, enabled flag and ``requires_grad`` flags are restored after."""
    names = set([names] if isinstance(names, str) else names)
    changed = []
    flags = [(p, p.requires_grad) for layer in tuner_layers(unet) for p in layer.parameters()]
    for layer in tuner_layers(unet):
        active = list(layer.active_adapters)
        keep = [a for a in active if a not in names]
        if keep == active:
            continue
        changed.append((layer, active, layer.disable_adapters))
        if keep:
            layer.set_adapter(keep)
        else:
            layer.enable_adapters(False)
    try:
        yield unet
    finally:
        for layer, active, disabled in changed:
            layer.set_adapter(active)
            if layer.disable_adapters != disabled:
                layer.enable_adapters(not disabled)
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


def adapter_state_dict(unet: torch.nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """One adapter's weights with peft's keys (as in ``adapter_model.safetensors``), fp32 CPU."""
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def load_adapter_state(unet: torch.nn.Module, config: LoraConfig, state: dict[str, torch.Tensor],
                       adapter_name: str) -> None:
    """Inject adapter ``adapter_name`` with ``config`` and load ``state`` (peft keys) into it
    (frozen; every injected adapter stays active)."""
    import warnings

    config.inference_mode = True
    was_training = unet.training
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")
        inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    unet.train(was_training)
    param = next(unet.parameters())
    state = {k: v.to(param.device) for k, v in state.items()}
    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter {adapter_name}: {len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    activate_adapters(unet)
    unet.requires_grad_(False)


def lora_config_from_dict(d: dict) -> LoraConfig:
    """A :class:`LoraConfig` from its saved JSON (unknown keys ignored)."""
    return LoraConfig(**{k: v for k, v in d.items() if k in LoraConfig.__dataclass_fields__})
