"""Checkpointable prompt iterators over grain: the same pipeline on a laptop CPU and a TPU host.

    it = make_prompt_iterator("train.jsonl", tokenizer, batch_size=128, seed=0,
                              max_prompt_tokens=1024, data_dir="/data/tfds")
    batch = next(it)            # PromptBatch: token_ids (list of lists), domains, answers, ...
    state = it.get_state()      # a JSON-able dict; save it next to the train state
    it2 = make_prompt_iterator(...same arguments...); it2.set_state(state)   # same next batches

Pipeline per host, a `grain.MapDataset` turned into a `grain.IterDataset`:
  records -> this host's shard (records shard_index, shard_index + shard_count, ...)
          -> shuffle by `seed`, a new permutation each epoch -> repeat (`num_epochs`, None = forever)
          -> chat template + suffix + tokenize (`chat_format.encode_record`)
then here: drop prompts longer than `max_prompt_tokens` (counted in `num_skipped`), or raise,
and batches of `batch_size` records (python lists; padding is the trainer's job).

The records are read and validated first, so a missing or malformed file fails before tfds or
grain is imported and before anything is written. grain then reads them from the tfds
array_record dataset under `data_dir` (built once, see `tfds_builder`), or from memory without a
`data_dir`. Both hold the same records in the same order: same batches, interchangeable states.

Checkpoint state: {"version", "signature", "elements" (grain's iterator position), "num_batches",
"num_skipped"}. Batching happens in this module, after grain, so a batch is always formed from
whole records and a restored iterator continues at the next record.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from opdlm_jax.data.chat_format import ChatFormat, encode_record
from opdlm_jax.data.prompt_records import (PathLike, PromptDataError, PromptRecord, load_records,
                                           records_fingerprint)

STATE_VERSION = 2  # version 1 also named a backend ("grain" or the removed "python")
SPLITS = ("train", "heldout")


@dataclasses.dataclass
class PromptBatch:
    """B prompts, unpadded. `indices` are the records' positions in their prompt set."""
    token_ids: list[list[int]]
    domains: list[str]
    answers: list[Optional[str]]
    indices: list[int]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass(frozen=True)
class _Encoded:
    record: PromptRecord
    ids: Optional[list[int]]  # None: too long, skipped


class _Encoder:
    """The map stage: a stored example or record -> `_Encoded`."""

    def __init__(self, tokenizer, fmt: ChatFormat):
        self.tokenizer, self.fmt = tokenizer, fmt

    def __call__(self, element: Any) -> _Encoded:
        if isinstance(element, PromptRecord):
            record = element
        else:  # an example from the tfds data source
            from opdlm_jax.data.tfds_builder import decode_example
            record = decode_example(element)
        return _Encoded(record, encode_record(self.tokenizer, record, self.fmt))


def _shard_slice(n: int, shard_index: int, shard_count: int, drop_remainder: bool) -> slice:
    """This host's records among n (the last n % shard_count dropped with drop_remainder)."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                         f"shard_count={shard_count}")
    used = n - n % shard_count if drop_remainder else n
    shard = slice(shard_index, used, shard_count)
    if not range(n)[shard]:
        raise PromptDataError(f"shard {shard_index} of {shard_count} gets no record from a prompt "
                              f"set of {n} records")
    return shard


def _grain_elements(source: Sequence, encoder: _Encoder, *, seed: int, shuffle: bool,
                    num_epochs: Optional[int], shard: slice, read_threads: int) -> Any:
    """A grain iterator of `_Encoded` over records or a tfds source: shard -> shuffle -> repeat
    -> encode."""
    import grain
    ds = grain.MapDataset.source(source)[shard]
    if shuffle:
        ds = ds.shuffle(seed=seed)  # grain reshuffles each epoch (seed combined with epoch)
    ds = ds.repeat(num_epochs).map(encoder)
    read_options = grain.ReadOptions(num_threads=read_threads,
                                     prefetch_buffer_size=max(1, 4 * read_threads))
    return ds.to_iter_dataset(read_options).__iter__()


class PromptIterator(Iterator[PromptBatch]):
    """Batches of `batch_size` encoded prompts; checkpointable with get_state / set_state.

    `num_skipped` counts prompts dropped as too long (on_too_long="skip") since the start, also
    across a restore. With a finite `num_epochs` the last batch may be short unless
    `drop_remainder`.
    """

    def __init__(self, elements: Any, shard_size: int, batch_size: int, *, signature: str,
                 drop_remainder: bool = False):
        """elements: a grain iterator of `_Encoded` over a shard of `shard_size` records."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._elements, self.shard_size, self.batch_size = elements, shard_size, batch_size
        self.signature, self.drop_remainder = signature, drop_remainder
        self.num_batches, self.num_skipped = 0, 0

    def __iter__(self) -> "PromptIterator":
        return self

    def __next__(self) -> PromptBatch:
        kept: list[_Encoded] = []
        skipped_in_a_row = 0
        while len(kept) < self.batch_size:
            try:
                element = next(self._elements)
            except StopIteration:
                break
            if element.ids is None:
                self.num_skipped += 1
                skipped_in_a_row += 1
                if skipped_in_a_row > self.shard_size:
                    raise PromptDataError(
                        f"every prompt of this shard ({self.shard_size} records) is longer than "
                        "max_prompt_tokens: nothing to batch")
                continue
            skipped_in_a_row = 0
            kept.append(element)
        if not kept or (self.drop_remainder and len(kept) < self.batch_size):
            raise StopIteration
        self.num_batches += 1
        return PromptBatch(token_ids=[e.ids for e in kept],
                           domains=[e.record.domain for e in kept],
                           answers=[e.record.answer for e in kept],
                           indices=[e.record.index for e in kept],
                           prompts=[e.record.prompt for e in kept])

    def get_state(self) -> dict:
        """A JSON-serializable dict: where the next batch starts."""
        return {"version": STATE_VERSION, "signature": self.signature,
                "elements": self._elements.get_state(), "num_batches": self.num_batches,
                "num_skipped": self.num_skipped}

    def set_state(self, state: Mapping) -> None:
        """Continue from a `get_state()` of an iterator built with the same settings."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cannot restore a data-iterator state of version "
                             f"{state.get('version')} into this loader (version {STATE_VERSION}); "
                             "version 1 came from the loader that also had a python backend")
        if state.get("signature") != self.signature:
            raise ValueError("the saved iterator state comes from a different prompt set or "
                             "different settings (records, seed, shard, batch size, chat format, "
                             "epochs); refusing to resume with it")
        self._elements.set_state(state["elements"])
        self.num_batches = int(state["num_batches"])
        self.num_skipped = int(state["num_skipped"])


def _signature(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _default_shard(shard_index: Optional[int], shard_count: Optional[int]) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax
        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    return int(shard_index), int(shard_count)


def host_shard_options(drop_remainder: bool = False):
    """`grain.sharding.ShardOptions` for this JAX process (one shard per host)."""
    import grain
    import jax
    return grain.sharding.ShardOptions(shard_index=jax.process_index(),
                                       shard_count=jax.process_count(),
                                       drop_remainder=drop_remainder)


def make_prompt_iterator(records_or_path: Union[PathLike, Sequence[Union[PromptRecord, Mapping]]],
                         tokenizer, batch_size: int, seed: int = 0,
                         max_prompt_tokens: Optional[int] = None, on_too_long: str = "skip",
                         shard_index: Optional[int] = None, shard_count: Optional[int] = None,
                         data_dir: Optional[PathLike] = None, *,
                         chat_format: Optional[ChatFormat] = None, split: str = "train",
                         heldout_path: Optional[PathLike] = None, shuffle: bool = True,
                         num_epochs: Optional[int] = None, drop_remainder: bool = False,
                         shard_options=None, shard_drop_remainder: bool = False,
                         read_threads: int = 0, precheck_lengths: Optional[bool] = None,
                         allowed_domains: Optional[Sequence[str]] = None) -> PromptIterator:
    """A checkpointable iterator of `PromptBatch`es over a prompt file or a list of records.

    records_or_path: a .jsonl/.parquet path, or records (dicts or `PromptRecord`s).
    batch_size: records per batch on this host. seed: the shuffle seed (same seed, same order).
    max_prompt_tokens / on_too_long: see `chat_format.ChatFormat` (they override `chat_format`'s).
    shard_index / shard_count: this host's shard; default jax.process_index() / process_count().
      `shard_options` (a `grain.sharding.ShardOptions`) may be given instead.
    data_dir: the tfds array_record dataset is built here (once per content) and grain reads it;
      None: grain reads the records from memory (same batches).
    split: "train" or "heldout" (the records of `heldout_path`).
    num_epochs: None repeats forever. read_threads: grain's reading threads (0: in line).
    precheck_lengths: tokenize this host's whole shard up front, so that on_too_long="error"
      fails at construction instead of when the stream reaches the record; default: on when
      on_too_long="error" and max_prompt_tokens is set.
    """
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if split not in SPLITS or (split == "heldout" and heldout_path is None):
        raise ValueError(f"split must be one of {SPLITS} ('heldout' with heldout_path), "
                         f"got {split!r}")
    if shard_options is not None:
        shard_index, shard_count = shard_options.shard_index, shard_options.shard_count
        shard_drop_remainder = shard_options.drop_remainder
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    fmt = dataclasses.replace(chat_format or ChatFormat(), max_prompt_tokens=max_prompt_tokens,
                              on_too_long=on_too_long)
    encoder = _Encoder(tokenizer, fmt)
    # Validate first: a bad file fails before tfds/grain are imported or anything is written.
    train = load_records(records_or_path, allowed_domains=allowed_domains)
    heldout = None if heldout_path is None else load_records(heldout_path,
                                                             allowed_domains=allowed_domains)
    records = train if split == "train" else heldout
    shard = _shard_slice(len(records), shard_index, shard_count, shard_drop_remainder)
    if precheck_lengths is None:
        precheck_lengths = on_too_long == "error" and max_prompt_tokens is not None
    if precheck_lengths:
        for record in records[shard]:
            encoder(record)  # raises PromptTooLongError with on_too_long="error"

    source: Sequence = records
    if data_dir is not None:
        from opdlm_jax.data.tfds_builder import build_prompt_dataset, prompt_data_source
        is_path = isinstance(records_or_path, (str, os.PathLike))
        builder = build_prompt_dataset(train, data_dir, heldout=heldout,
                                       name=Path(records_or_path).stem if is_path else "records")
        source = prompt_data_source(builder, split)

    signature = _signature(data=records_fingerprint(records), seed=int(seed), shuffle=shuffle,
                           num_epochs=num_epochs,
                           shard=[shard_index, shard_count, shard_drop_remainder],
                           batch_size=batch_size, drop_remainder=drop_remainder,
                           fmt=dataclasses.asdict(fmt))
    elements = _grain_elements(source, encoder, seed=int(seed), shuffle=shuffle,
                               num_epochs=num_epochs, shard=shard, read_threads=read_threads)
    return PromptIterator(elements, len(records[shard]), batch_size, signature=signature,
                          drop_remainder=drop_remainder)
