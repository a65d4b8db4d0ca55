"""Checkpoint formats: HF safetensors directories, GGUF files, tokenizers."""
