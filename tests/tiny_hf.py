"""A tiny HF checkpoint directory (random Llama + byte-level ChatML tokenizer) for trainer tests."""
from pathlib import Path

import jax
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from opdlm_jax.checkpoints.hf import save_hf_checkpoint
from opdlm_jax.models import ModelConfig, init_params

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SPECIALS + alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", chat_template=CHATML)


def make_tiny_hf_dir(path: Path, seed: int = 0) -> Path:
    tok = byte_tokenizer()
    config = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                         eos_token_ids=(tok.convert_tokens_to_ids("<|im_end|>"),), max_position_embeddings=512)
    params = init_params(config, jax.random.PRNGKey(seed))
    save_hf_checkpoint(config, params, path, tokenizer=tok)
    return Path(path)


def write_prompts(path: Path, n: int = 24) -> Path:
    import json

    rows = [{"prompt": f"What is {i} + {i + 1}? Answer with just the number.", "domain": "math",
             "answer": str(2 * i + 1)} if i % 2 else {"prompt": f"Say hello number {i}.", "domain": "chat"}
            for i in range(n)]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)
