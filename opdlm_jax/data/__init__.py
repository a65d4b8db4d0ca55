"""Prompt sets: reading and validation, tfds array_record storage (no TensorFlow), chat
formatting, and checkpointable grain prompt iterators.

`tfds_builder` is imported on demand (tensorflow_datasets takes a second or two to import).
"""
from opdlm_jax.data.chat_format import (DEFAULT_DOMAIN_SUFFIXES, MATH_SUFFIX, ChatFormat,
                                        PromptTooLongError, encode_record, encode_records,
                                        prompt_token_ids, user_content)
from opdlm_jax.data.loader import (PromptBatch, PromptIterator, host_shard_options,
                                   make_prompt_iterator)
from opdlm_jax.data.prompt_records import (PromptDataError, PromptRecord, load_records,
                                           read_prompt_records, validate_records,
                                           write_prompt_records)

__all__ = [
    "DEFAULT_DOMAIN_SUFFIXES", "MATH_SUFFIX", "ChatFormat", "PromptTooLongError", "encode_record",
    "encode_records", "prompt_token_ids", "user_content", "PromptBatch", "PromptIterator",
    "host_shard_options", "make_prompt_iterator", "PromptDataError", "PromptRecord",
    "load_records", "read_prompt_records", "validate_records", "write_prompt_records",
]
