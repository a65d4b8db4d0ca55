"""One declarative table between our parameter tree and HF Llama / Qwen2 / Qwen3 tensor names.

The same table drives loading (`params_from_hf_tensors`) and export (`hf_tensors_from_params`),
so the two directions cannot drift apart. A rule applies exactly when the model (as built by
`opdlm_jax.models.init_params` for the config) has that parameter, so biases, q/k norms and the
untied `lm_head` need no separate switches here. The functions also translate `config.json`
into `ModelConfig` and back.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np
from flax import traverse_util

from opdlm_jax.errors import BadInput
from opdlm_jax.models.config import ModelConfig, freeze_rope_scaling
from opdlm_jax.models.forward import init_params
from opdlm_jax.models.rope import SUPPORTED_ROPE_TYPES


class CheckpointError(BadInput):
    """A checkpoint whose contents do not fit the model (missing, extra or misshapen tensors...):
    bad input, exit code 2 at the command line."""


# ---------------------------------------------------------------------------------------------
# The conversion table.

@dataclasses.dataclass(frozen=True)
class Transform:
    """How one HF tensor maps to one of our arrays.

    kind "copy": same layout. "flat": HF stores our array flattened (biases [H*D] vs [H, D]).
    "linear": a torch Linear weight [out, in]; our kernel is [in..., out...] with the first
    `split` dims forming `in` (q/k/v: [d | H, D]; o_proj: [H, D | d]), i.e. transpose + reshape.
    """
    kind: str
    split: int = 1

    def hf_shape(self, ours: tuple) -> tuple:
        if self.kind == "linear":
            return (math.prod(ours[self.split:]), math.prod(ours[:self.split]))
        return (math.prod(ours),) if self.kind == "flat" else tuple(ours)

    def to_ours(self, hf: np.ndarray, ours: tuple) -> np.ndarray:
        return (hf.T if self.kind == "linear" else hf).reshape(ours)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            return x.reshape(math.prod(x.shape[:self.split]), -1).T
        return x.reshape(-1) if self.kind == "flat" else x


COPY, FLAT = Transform("copy"), Transform("flat")
LINEAR, LINEAR_FROM_HEADS = Transform("linear", 1), Transform("linear", 2)

_L = "layers_{i}/"
_HL = "model.layers.{i}."
# (our path, HF name, transform); "{i}" is the layer index.
TABLE: tuple[tuple[str, str, Transform], ...] = (
    ("embedding", "model.embed_tokens.weight", COPY),
    (_L + "attn_norm/scale", _HL + "input_layernorm.weight", COPY),
    (_L + "attn/q_proj/kernel", _HL + "self_attn.q_proj.weight", LINEAR),
    (_L + "attn/q_proj/bias", _HL + "self_attn.q_proj.bias", FLAT),
    (_L + "attn/k_proj/kernel", _HL + "self_attn.k_proj.weight", LINEAR),
    (_L + "attn/k_proj/bias", _HL + "self_attn.k_proj.bias", FLAT),
    (_L + "attn/v_proj/kernel", _HL + "self_attn.v_proj.weight", LINEAR),
    (_L + "attn/v_proj/bias", _HL + "self_attn.v_proj.bias", FLAT),
    (_L + "attn/o_proj/kernel", _HL + "self_attn.o_proj.weight", LINEAR_FROM_HEADS),
    (_L + "attn/q_norm/scale", _HL + "self_attn.q_norm.weight", COPY),
    (_L + "attn/k_norm/scale", _HL + "self_attn.k_norm.weight", COPY),
    (_L + "mlp_norm/scale", _HL + "post_attention_layernorm.weight", COPY),
    (_L + "mlp/gate_proj/kernel", _HL + "mlp.gate_proj.weight", LINEAR),
    (_L + "mlp/up_proj/kernel", _HL + "mlp.up_proj.weight", LINEAR),
    (_L + "mlp/down_proj/kernel", _HL + "mlp.down_proj.weight", LINEAR),
    ("final_norm/scale", "model.norm.weight", COPY),
    ("lm_head", "lm_head.weight", LINEAR),
)

# Non-persistent buffers some older exports contain; never parameters.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One concrete row of the table for one config: a leaf of the unscanned tree."""
    path: tuple  # path in the unscanned tree, e.g. ("layers_0", "attn", "q_proj", "kernel")
    layer: int | None
    hf_name: str
    transform: Transform
    shape: tuple  # our (unscanned) shape

    def param_path(self, scan_layers: bool) -> tuple:
        # Scanned trees keep every layer in one subtree `layers`, stacked on axis 0.
        return ("layers",) + self.path[1:] if scan_layers and self.layer is not None else self.path


@functools.lru_cache(maxsize=32)
def entries(config: ModelConfig) -> tuple[Entry, ...]:
    """The table expanded for `config`, restricted to the parameters the model really has."""
    base = config.replace(scan_layers=False, remat_policy="none")
    abstract = jax.eval_shape(functools.partial(init_params, base), jax.random.PRNGKey(0))
    shapes = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract, sep="/").items()}
    out, covered = [], set()
    for ours, hf, transform in TABLE:
        layers = range(config.num_layers) if "{i}" in ours else [None]
        for i in layers:
            path = ours.format(i=i)
            if path in shapes:
                covered.add(path)
                out.append(Entry(tuple(path.split("/")), i, hf.format(i=i), transform, shapes[path]))
    if uncovered := sorted(set(shapes) - covered):
        # The model grew a parameter the table does not know: fail here, not with a silent gap.
        raise NotImplementedError(f"no HF mapping for model parameters {uncovered}")
    return tuple(out)


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def params_from_hf_tensors(config: ModelConfig, get_tensor: Callable[[str], np.ndarray],
                           available_names: Iterable[str]) -> dict:
    """Build our parameter tree from HF-named tensors, fetched one at a time.

    Returns host numpy arrays in `config.param_dtype` (callers `device_put` them with their
    shardings), stacked on a leading layer axis when `config.scan_layers`. Raises
    `CheckpointError` naming any missing, unexpected or misshapen tensor.
    """
    table = entries(config)
    available = set(available_names)
    if missing := [e.hf_name for e in table if e.hf_name not in available]:
        raise CheckpointError(f"missing tensor(s) for a {config.family} model: {_names(missing)}")
    # A tied model's file may repeat the embedding as lm_head.weight; transformers ignores it too.
    optional = {"lm_head.weight"} if config.tie_word_embeddings else set()
    used = {e.hf_name for e in table} | optional
    if unexpected := sorted(n for n in available - used if not _IGNORED.search(n)):
        raise CheckpointError(
            f"unexpected tensor(s), not used by a {config.family} model with this config: "
            f"{_names(unexpected)}")

    dtype = np.dtype(config.jnp_param_dtype)
    flat: dict[tuple, np.ndarray] = {}
    for e in table:
        hf = np.asarray(get_tensor(e.hf_name))
        want = e.transform.hf_shape(e.shape)
        if tuple(hf.shape) != want:
            raise CheckpointError(
                f"shape mismatch for tensor {e.hf_name}: expected {want}, got {tuple(hf.shape)}")
        value = e.transform.to_ours(hf, e.shape).astype(dtype)
        key = e.param_path(config.scan_layers)
        if key != e.path:  # scanned: fill a preallocated stack, so peak memory stays ~1x
            stack = flat.setdefault(key, np.empty((config.num_layers,) + e.shape, dtype))
            stack[e.layer] = value
        else:
            flat[key] = np.ascontiguousarray(value)
        del hf, value
    return traverse_util.unflatten_dict(flat)


def hf_tensors_from_params(config: ModelConfig, params: Mapping) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, numpy array in HF layout) for every parameter, in the stored dtype."""
    flat = traverse_util.flatten_dict(params)
    for e in entries(config):
        key = e.param_path(config.scan_layers)
        if key not in flat:
            raise CheckpointError(f"params have no leaf {'/'.join(key)} (needed for {e.hf_name})")
        value = flat[key] if key == e.path else flat[key][e.layer]
        value = np.asarray(value)
        if value.shape != e.shape:
            raise CheckpointError(
                f"shape mismatch for parameter {'/'.join(e.path)}: expected {e.shape}, got {value.shape}")
        yield e.hf_name, np.ascontiguousarray(e.transform.to_hf(value))


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig.

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
_ARCH_OF = {family: arch for arch, family in ARCHITECTURES.items()}
_NUMERICS = ("param_dtype", "dtype", "scan_layers", "remat_policy")
# transformers' defaults where a config.json leaves a field out.
_DEFAULT_MAX_POSITIONS = {"llama": 2048, "qwen2": 32768, "qwen3": 32768}
_DEFAULT_THETA = 10000.0


def _family(hf: Mapping[str, Any]) -> str:
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if archs:
        raise ValueError(f"unsupported architecture {archs[0]!r}; supported: {tuple(ARCHITECTURES)}")
    model_type = hf.get("model_type")
    if model_type in _ARCH_OF:
        return model_type
    raise ValueError(f"unsupported model_type {model_type!r} (no architectures field); "
                     f"supported: {tuple(ARCHITECTURES)}")


def _rope(hf: Mapping[str, Any], max_positions: int) -> tuple[float, dict | None]:
    """(theta, scaling dict or None) from either config.json dialect.

    transformers 4.x writes top-level `rope_theta` / `rope_scaling`; 5.x writes `rope_parameters`
    (theta, type and scaling keys together). Same precedence as transformers 5: a non-empty
    legacy `rope_scaling` wins, theta comes from the dict first, then the top level.
    """
    params = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    if "full_attention" in params:  # 5.x per-layer-type nesting; these families use one kind
        params = dict(params["full_attention"])
    theta = float(params.pop("rope_theta", hf.get("rope_theta", _DEFAULT_THETA)))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    params.pop("type", None)
    partial = params.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise ValueError(f"partial_rotary_factor={partial} is not supported")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope type {rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}")
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        params.setdefault("original_max_position_embeddings", max_positions)
    return theta, {"rope_type": rope_type, **params}


def _require(hf: Mapping[str, Any], key: str):
    if hf.get(key) is None:
        raise ValueError(f"config.json has no {key!r}")
    return hf[key]


def config_from_hf(hf_config: Mapping[str, Any], **numerics) -> ModelConfig:
    """A transformers config.json dict -> ModelConfig. `numerics`: param_dtype, dtype,
    scan_layers, remat_policy (the checkpoint does not fix these)."""
    if unknown := set(numerics) - set(_NUMERICS):
        raise TypeError(f"unknown numerics option(s) {sorted(unknown)}; expected some of {_NUMERICS}")
    hf = hf_config
    family = _family(hf)
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=True is not supported (the MLP has no biases)")
    if hf.get("use_sliding_window"):
        raise ValueError("use_sliding_window=True is not supported (full attention only)")
    if family == "qwen2":
        attention_bias = True  # Qwen2 always has q/k/v biases and no o_proj bias
    elif hf.get("attention_bias"):
        # For llama/qwen3, HF's attention_bias also adds an o_proj bias, which the model lacks.
        raise ValueError(f"attention_bias=True is not supported for {family} "
                         "(it also adds an o_proj bias, which this model does not have)")
    else:
        attention_bias = False
    hidden, heads = _require(hf, "hidden_size"), _require(hf, "num_attention_heads")
    # Qwen3Config defaults head_dim to 128, the others to hidden / heads.
    head_dim = hf.get("head_dim") or (128 if family == "qwen3" else hidden // heads)
    max_positions = hf.get("max_position_embeddings") or _DEFAULT_MAX_POSITIONS[family]
    theta, scaling = _rope(hf, max_positions)
    eos = hf.get("eos_token_id")
    eos_ids = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    return ModelConfig(
        family=family, vocab_size=_require(hf, "vocab_size"), hidden_size=hidden,
        intermediate_size=_require(hf, "intermediate_size"),
        num_layers=_require(hf, "num_hidden_layers"), num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=theta,
        rope_scaling=freeze_rope_scaling(scaling), max_position_embeddings=max_positions,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=attention_bias, qk_norm=family == "qwen3",
        bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids,
        pad_token_id=hf.get("pad_token_id"), mask_token_id=hf.get("mask_token_id"), **numerics)


def hf_config_from(config: ModelConfig) -> dict:
    """ModelConfig -> a config.json dict that transformers 5.x (and 4.x) loads."""
    c = config
    if c.qk_norm != (c.family == "qwen3") or c.attention_bias != (c.family == "qwen2"):
        raise ValueError(f"a {c.family} config with qk_norm={c.qk_norm}, attention_bias="
                         f"{c.attention_bias} has no transformers equivalent")
    scaling = c.rope_scaling_dict
    rope_parameters = {"rope_type": "default", "rope_theta": c.rope_theta, **(scaling or {})}
    eos = list(c.eos_token_ids)
    out = {
        "architectures": [_ARCH_OF[c.family]], "model_type": c.family,
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim, "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "rope_parameters": rope_parameters,
        # Legacy spelling for transformers 4.x readers (5.x agrees: same values).
        "rope_theta": c.rope_theta, "rope_scaling": scaling,
        "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": c.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": c.pad_token_id,
        "torch_dtype": c.param_dtype, "dtype": c.param_dtype,
    }
    if c.family in ("llama", "qwen3"):
        out["attention_bias"] = False
    if c.family == "llama":
        out["mlp_bias"] = False
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.num_layers)
    if c.mask_token_id is not None:  # not a transformers field; kept so our own loader reads it back
        out["mask_token_id"] = c.mask_token_id
    return out
