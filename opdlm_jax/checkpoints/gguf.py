"""GGUF (llama.cpp) files -> (ModelConfig, params, tokenizer metadata).

Every tensor is dequantized to float32 with the `gguf` package, renamed to its HF name, and
turned into our parameter tree by the same table the safetensors loader uses
(`hf_mapping.params_from_hf_tensors`), so both formats share one set of checks.

Two GGUF conventions to undo on the way:
- Shapes are stored innermost-first (ggml `ne` order); the numpy data the reader hands out is
  already in torch order [out, in], which is what the HF mapping expects.
- llama.cpp's converter permutes the q and k rows of *llama*-architecture models so that its
  interleaved (GPT-J style) RoPE works; we use HF's rotate-half RoPE, so those rows are
  un-permuted here. Qwen2/Qwen3 GGUFs are written unpermuted (llama.cpp runs them in NEOX mode).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

import numpy as np

from opdlm_jax.checkpoints.hf_mapping import CheckpointError, params_from_hf_tensors
from opdlm_jax.models.config import ModelConfig

# GGUF architecture -> (our family, whether q/k rows were permuted by the converter).
SUPPORTED_ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False), "qwen3": ("qwen3", False)}

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_MISSING = object()


class GGUFError(CheckpointError):
    """A file that is not a readable GGUF model of a supported kind."""


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerInfo:
    """The tokenizer a GGUF file describes, as stored in its `tokenizer.*` metadata."""
    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE), "llama" (sentencepiece), ...
    pre: str | None  # tokenizer.ggml.pre: llama.cpp's name for the pre-tokenizer split
    tokens: tuple[str, ...]
    token_types: tuple[int, ...] | None  # 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
    merges: tuple[str, ...] | None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    unk_token_id: int | None = None
    pad_token_id: int | None = None
    eot_token_id: int | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    add_space_prefix: bool = False
    chat_template: str | None = None
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class GGUFFile:
    """An open (memory-mapped) GGUF file and its path, so every error can name the file."""
    path: str
    reader: Any  # gguf.GGUFReader


def _tensor_data_end(start: int, tensor_infos: list) -> int:
    """The byte where the last tensor's data ends, from the tensor infos (no data touched)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    end = start
    for info in tensor_infos:
        _, _, _, dims, raw_type, offset = info.parts
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_type[0]))]
        end = max(end, start + int(offset[0]) + int(np.prod(dims)) * type_size // block)
    return end


def _reader(path: str):
    """gguf.GGUFReader that checks the file holds every tensor's bytes before slicing them (the
    plain reader says "cannot reshape" about a truncated file)."""
    from gguf import GGUFReader

    class CheckedReader(GGUFReader):
        def _build_tensors(self, start_offs, fields):
            try:
                expected = _tensor_data_end(start_offs, fields)
            except Exception:  # noqa: BLE001 - an unknown type or layout: the reader reports it
                expected = 0
            if expected > len(self.data):
                raise GGUFError(f"{path} is truncated: expected {expected} bytes, found {len(self.data)} "
                                "(an interrupted download or copy?)")
            super()._build_tensors(start_offs, fields)

    return CheckedReader(path, "r")


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open `path` with `gguf.GGUFReader`; errors name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if os.path.isdir(path):
        raise GGUFError(f"{path} is a directory, not a GGUF file")
    try:
        return GGUFFile(path, _reader(path))
    except GGUFError:
        raise
    except IndexError as e:  # the reader ran off the end of the metadata
        raise GGUFError(f"{path} is truncated: its header ends early ({os.path.getsize(path)} bytes)") from e
    except Exception as e:  # bad magic, truncated header, unknown value type, empty file, ...
        raise GGUFError(f"{path} is not a valid GGUF file ({type(e).__name__}: {e})") from e


def field(gf: GGUFFile, key: str, default: Any = _MISSING) -> Any:
    """One metadata value (scalars as Python scalars, arrays as lists)."""
    f = gf.reader.fields.get(key)
    if f is None:
        if default is _MISSING:
            raise GGUFError(f"{gf.path}: required GGUF metadata key {key!r} is missing")
        return default
    try:
        return f.contents()
    except Exception as e:
        raise GGUFError(f"{gf.path}: cannot read GGUF metadata {key!r}: {e}") from e


def architecture(gf: GGUFFile) -> str:
    arch = field(gf, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(f"{gf.path}: unsupported GGUF architecture {arch!r}; "
                        f"supported: {tuple(SUPPORTED_ARCHITECTURES)}")
    return arch


def config_from_gguf(gf: GGUFFile, **numerics) -> ModelConfig:
    """ModelConfig from the `{arch}.*` and `tokenizer.ggml.*` metadata; numerics passed through."""
    arch = architecture(gf)
    family, _ = SUPPORTED_ARCHITECTURES[arch]
    names = {t.name for t in gf.reader.tensors}
    hidden = int(field(gf, f"{arch}.embedding_length"))
    heads = int(field(gf, f"{arch}.attention.head_count"))
    kv_heads = int(field(gf, f"{arch}.attention.head_count_kv", heads))
    head_dim = int(field(gf, f"{arch}.attention.key_length", hidden // heads))
    value_dim = int(field(gf, f"{arch}.attention.value_length", head_dim))
    rope_dim = int(field(gf, f"{arch}.rope.dimension_count", head_dim))
    if value_dim != head_dim or rope_dim != head_dim:
        raise GGUFError(f"{gf.path}: key/value/rope dims {head_dim}/{value_dim}/{rope_dim} differ; "
                        "only full-rotary attention with equal key and value dims is supported")
    if "rope_freqs.weight" in names:
        # Llama 3.1-style frequency factors are stored as a tensor, not as metadata.
        raise GGUFError(f"{gf.path}: rope_freqs.weight (per-frequency RoPE factors) is not supported")
    vocab = field(gf, f"{arch}.vocab_size", None)
    if vocab is None:
        vocab = len(field(gf, "tokenizer.ggml.tokens"))
    eos = _opt_int(gf, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        family=family,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(field(gf, f"{arch}.feed_forward_length")),
        num_layers=int(field(gf, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_float32_value(field(gf, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=_float32_value(field(gf, f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(gf, arch),
        max_position_embeddings=int(field(gf, f"{arch}.context_length", 4096)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias="blk.0.attn_q.bias" in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
        bos_token_id=_opt_int(gf, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (eos,),
        pad_token_id=_opt_int(gf, "tokenizer.ggml.padding_token_id"),
        **numerics,
    )


def _float32_value(x) -> float:
    # GGUF stores these as float32: 1e-5 reads back as 9.99999974e-06. The shortest decimal that
    # rounds to the same float32 is the value the converter was given.
    return float(str(np.float32(x)))


def _rope_scaling(gf: GGUFFile, arch: str) -> dict | None:
    kind = field(gf, f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(field(gf, f"{arch}.rope.scaling.factor"))}
    raise GGUFError(f"{gf.path}: RoPE scaling {kind!r} is not supported (only 'linear')")


def hf_name(gguf_name: str) -> str:
    """GGUF tensor name -> HF Llama/Qwen tensor name (`blk.3.attn_q.weight` -> `model.layers.3...`)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.match(gguf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise GGUFError(f"GGUF tensor {gguf_name!r} has no HF counterpart in the supported architectures")
    layer, part, kind = m.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"


def unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved RoPE pairs -> rotate-half halves).

    The converter maps each head's rows [h0 | h1] (two halves of head_dim/2) to interleaved
    (h0[0], h1[0], h0[1], h1[1], ...); reshaping as (heads, head_dim/2, 2) and swapping the last
    two row axes puts the halves back. Works for weights [rows, in] and biases [rows].
    """
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise GGUFError(f"cannot un-permute {rows} rows over {n_heads} heads")
    rest = weight.shape[1:]
    return (weight.reshape(n_heads, rows // n_heads // 2, 2, *rest)
            .swapaxes(1, 2).reshape(weight.shape))


def hf_tensor_source(gf: GGUFFile, config: ModelConfig) -> tuple[Callable[[str], np.ndarray], list[str]]:
    """(get_tensor, names) over the file in HF naming and layout; tensors dequantized lazily."""
    from gguf.quants import dequantize

    _, permuted = SUPPORTED_ARCHITECTURES[architecture(gf)]
    by_hf = {}
    for t in gf.reader.tensors:
        try:
            name = hf_name(t.name)
        except GGUFError as e:
            raise GGUFError(f"{gf.path}: {e}") from None
        if name in by_hf:
            raise GGUFError(f"{gf.path}: two GGUF tensors map to {name}")
        by_hf[name] = t
    heads_of = {"q_proj": config.num_heads, "k_proj": config.num_kv_heads}

    def get_tensor(name: str) -> np.ndarray:
        t = by_hf[name]
        expected = tuple(int(n) for n in reversed(t.shape))  # ggml ne order -> numpy order
        try:
            value = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            value = value.reshape(expected)  # a no-op unless the reader flattened it
        except Exception as e:  # unsupported quant type, truncated data
            raise GGUFError(f"{gf.path}: cannot read tensor {t.name} ({t.tensor_type.name}, "
                            f"shape {expected}): {e}") from e
        proj = name.split(".")[-2]
        if permuted and proj in heads_of:
            value = unpermute_rows(value, heads_of[proj])
        return value

    return get_tensor, sorted(by_hf)


def _opt_int(gf: GGUFFile, key: str) -> int | None:
    v = field(gf, key, None)
    return None if v is None else int(v)


def tokenizer_info(gf: GGUFFile) -> GGUFTokenizerInfo:
    types = field(gf, "tokenizer.ggml.token_type", None)
    merges = field(gf, "tokenizer.ggml.merges", None)
    return GGUFTokenizerInfo(
        model=field(gf, "tokenizer.ggml.model"),
        pre=field(gf, "tokenizer.ggml.pre", None),
        tokens=tuple(field(gf, "tokenizer.ggml.tokens")),
        token_types=None if types is None else tuple(int(x) for x in types),
        merges=None if merges is None else tuple(merges),
        bos_token_id=_opt_int(gf, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_opt_int(gf, "tokenizer.ggml.eos_token_id"),
        unk_token_id=_opt_int(gf, "tokenizer.ggml.unknown_token_id"),
        pad_token_id=_opt_int(gf, "tokenizer.ggml.padding_token_id"),
        eot_token_id=_opt_int(gf, "tokenizer.ggml.eot_token_id"),
        add_bos_token=bool(field(gf, "tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(field(gf, "tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(field(gf, "tokenizer.ggml.add_space_prefix", False)),
        chat_template=field(gf, "tokenizer.chat_template", None),
        path=gf.path,
    )


def read_tokenizer_info(path: str | os.PathLike) -> GGUFTokenizerInfo:
    """Tokenizer metadata only (tensors stay memory-mapped and untouched)."""
    return tokenizer_info(open_gguf(path))


def load_gguf(path: str | os.PathLike, *, param_dtype: str = "float32", dtype: str = "float32",
              scan_layers: bool = False, remat_policy: str = "none",
              ) -> tuple[ModelConfig, dict, GGUFTokenizerInfo]:
    """(config, params, tokenizer metadata) from a llama/qwen2/qwen3 GGUF file.

    Every tensor is dequantized to float32, then cast to `param_dtype`; params are host numpy
    arrays (as from `load_hf_checkpoint`), stacked per layer when `scan_layers`.
    """
    gf = open_gguf(path)
    config = config_from_gguf(gf, param_dtype=param_dtype, dtype=dtype, scan_layers=scan_layers,
                              remat_policy=remat_policy)
    get_tensor, names = hf_tensor_source(gf, config)
    try:
        params = params_from_hf_tensors(config, get_tensor, names)
    except GGUFError:
        raise  # already names the file
    except CheckpointError as e:
        raise GGUFError(f"{gf.path}: {e}") from e
    return config, params, tokenizer_info(gf)
