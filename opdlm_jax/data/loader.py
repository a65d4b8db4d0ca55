"""Checkpointable prompt iterators: grain over the tfds data source, or plain python.

    it = make_prompt_iterator("train.jsonl", tokenizer, batch_size=128, seed=0,
                              max_prompt_tokens=1024, data_dir="/data/tfds")
    batch = next(it)            # PromptBatch: token_ids (list of lists), domains, answers, ...
    state = it.get_state()      # a JSON-able dict; save it next to the train state
    it2 = make_prompt_iterator(...same arguments...); it2.set_state(state)   # same next batches

Pipeline (both backends, per host):
  records -> this host's shard (records shard_index, shard_index + shard_count, ...)
          -> shuffle by `seed`, a new permutation each epoch -> repeat (`num_epochs`, None = forever)
          -> chat template + suffix + tokenize (`chat_format.encode_record`)
          -> drop prompts longer than `max_prompt_tokens` (counted in `num_skipped`), or raise
          -> batches of `batch_size` records (python lists; padding is the trainer's job).

backend="grain": `grain.MapDataset` (source -> slice -> shuffle -> repeat -> map) turned into a
`grain.IterDataset`; the source is the tfds array_record data source when a path and `data_dir`
are given, else the records in memory. backend="python": the same stages in plain python
(numpy permutations), no tfds and no grain. The two backends shuffle differently: a state can only
be restored into an iterator of the same backend and the same settings, which `set_state` checks.

Checkpoint state: {"backend", "signature", "elements" (the element iterator's position),
"num_batches", "num_skipped"}. Batching happens in this module, after grain, so a batch is
always formed from whole records and a restored iterator continues at the next record.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from opdlm_jax.data.chat_format import ChatFormat, encode_record
from opdlm_jax.data.prompt_records import (PathLike, PromptDataError, PromptRecord, load_records,
                                           records_fingerprint)

BACKENDS = ("grain", "python")
STATE_VERSION = 1


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


def _shard_bounds(n: int, shard_index: int, shard_count: int, drop_remainder: bool) -> int:
    """How many records are sharded (n, or n rounded down to a multiple of shard_count)."""
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
                         f"shard_count={shard_count}")
    used = n - n % shard_count if drop_remainder else n
    if len(range(shard_index, used, shard_count)) == 0:
        raise PromptDataError(f"shard {shard_index} of {shard_count} gets no record from a prompt "
                              f"set of {n} records")
    return used


class _PythonElements:
    """Plain-python element iterator: shard -> per-epoch permutation -> repeat -> encode."""

    def __init__(self, records: Sequence[PromptRecord], encoder: _Encoder, *, seed: int,
                 shuffle: bool, num_epochs: Optional[int], shard_index: int, shard_count: int,
                 shard_drop_remainder: bool):
        used = _shard_bounds(len(records), shard_index, shard_count, shard_drop_remainder)
        self._records = list(records[shard_index:used:shard_count])
        self._encoder, self._seed, self._shuffle = encoder, seed, shuffle
        self._num_epochs = num_epochs
        self._epoch, self._position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self._records)
        if not self._shuffle:
            return np.arange(n)
        return np.random.default_rng([self._seed, epoch]).permutation(n)

    def __len__(self) -> int:
        return len(self._records)

    def __next__(self) -> _Encoded:
        if self._position == len(self._records):
            self._epoch, self._position = self._epoch + 1, 0
            self._order = self._epoch_order(self._epoch)
        if self._num_epochs is not None and self._epoch >= self._num_epochs:
            raise StopIteration
        record = self._records[int(self._order[self._position])]
        self._position += 1
        return self._encoder(record)

    def get_state(self) -> dict:
        return {"epoch": self._epoch, "position": self._position}

    def set_state(self, state: Mapping) -> None:
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        self._order = self._epoch_order(self._epoch)


class _GrainElements:
    """grain element iterator over a random-access source (tfds data source or a list)."""

    def __init__(self, source: Sequence, encoder: _Encoder, *, seed: int, shuffle: bool,
                 num_epochs: Optional[int], shard_index: int, shard_count: int,
                 shard_drop_remainder: bool, read_threads: int):
        import grain
        used = _shard_bounds(len(source), shard_index, shard_count, shard_drop_remainder)
        ds = grain.MapDataset.source(source)[shard_index:used:shard_count]
        self._len = len(ds)
        if shuffle:
            ds = ds.shuffle(seed=seed)  # grain reshuffles each epoch (seed combined with epoch)
        ds = ds.repeat(num_epochs).map(encoder)
        read_options = grain.ReadOptions(num_threads=read_threads,
                                         prefetch_buffer_size=max(1, 4 * read_threads))
        self._it = ds.to_iter_dataset(read_options).__iter__()

    def __len__(self) -> int:
        return self._len

    def __next__(self) -> _Encoded:
        return next(self._it)

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: Mapping) -> None:
        self._it.set_state(dict(state))


class PromptIterator(Iterator[PromptBatch]):
    """Batches of `batch_size` encoded prompts; checkpointable with get_state / set_state.

    `num_skipped` counts prompts dropped as too long (on_too_long="skip") since the start, also
    across a restore. With a finite `num_epochs` the last batch may be short unless
    `drop_remainder`.
    """

    def __init__(self, elements, batch_size: int, *, backend: str, signature: str,
                 drop_remainder: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._elements, self.batch_size, self.backend = elements, batch_size, backend
        self.signature, self.drop_remainder = signature, drop_remainder
        self.num_batches, self.num_skipped = 0, 0
        self.shard_size = len(elements)

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
        return {"version": STATE_VERSION, "backend": self.backend, "signature": self.signature,
                "elements": self._elements.get_state(), "num_batches": self.num_batches,
                "num_skipped": self.num_skipped}

    def set_state(self, state: Mapping) -> None:
        """Continue from a `get_state()` of an iterator built with the same settings."""
        if state.get("version") != STATE_VERSION or state.get("backend") != self.backend:
            raise ValueError(f"cannot restore a {state.get('backend')!r} iterator state "
                             f"(version {state.get('version')}) into a {self.backend!r} iterator "
                             f"(version {STATE_VERSION})")
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
                         backend: str = "grain", data_dir: Optional[PathLike] = None, *,
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
    backend: "grain" (default) or "python".
    data_dir: with backend="grain" and a path, the tfds array_record dataset is built (once) and
      read from here; without it grain reads the records from memory.
    split: "train" or "heldout" (the latter needs `heldout_path`, with the tfds source).
    num_epochs: None repeats forever. read_threads: grain's reading threads (0: in line).
    precheck_lengths: tokenize this host's whole shard up front, so that on_too_long="error"
      fails at construction instead of when the stream reaches the record; default: on when
      on_too_long="error" and max_prompt_tokens is set.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if shard_options is not None:
        shard_index, shard_count = shard_options.shard_index, shard_options.shard_count
        shard_drop_remainder = shard_options.drop_remainder
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    fmt = dataclasses.replace(chat_format or ChatFormat(), max_prompt_tokens=max_prompt_tokens,
                              on_too_long=on_too_long)
    encoder = _Encoder(tokenizer, fmt)
    is_path = isinstance(records_or_path, (str, os.PathLike))
    use_tfds = backend == "grain" and is_path and data_dir is not None

    if use_tfds:
        from opdlm_jax.data.tfds_builder import prepare_prompt_dataset, prompt_data_source
        builder = prepare_prompt_dataset(records_or_path, data_dir, heldout_path=heldout_path,
                                         allowed_domains=allowed_domains)
        source = prompt_data_source(builder, split)
        data_id = builder.builder_config.name + f"/{split}"
    else:
        path = records_or_path
        if split != "train":
            if not is_path or heldout_path is None:
                raise ValueError(f"split={split!r} needs a path and heldout_path; with a list "
                                 "of records pass the held-out records themselves")
            path = heldout_path
        source = load_records(path, allowed_domains=allowed_domains)
        data_id = records_fingerprint(source)

    signature = _signature(data=data_id, seed=int(seed), shuffle=shuffle, num_epochs=num_epochs,
                           shard=[shard_index, shard_count, shard_drop_remainder],
                           batch_size=batch_size, drop_remainder=drop_remainder,
                           fmt=dataclasses.asdict(fmt), backend=backend)
    if precheck_lengths is None:
        precheck_lengths = on_too_long == "error" and max_prompt_tokens is not None
    if precheck_lengths:
        used = _shard_bounds(len(source), shard_index, shard_count, shard_drop_remainder)
        for i in range(shard_index, used, shard_count):
            encoder(source[i])  # raises PromptTooLongError with on_too_long="error"
    kwargs = dict(seed=int(seed), shuffle=shuffle, num_epochs=num_epochs,
                  shard_index=shard_index, shard_count=shard_count,
                  shard_drop_remainder=shard_drop_remainder)
    if backend == "grain":
        elements = _GrainElements(source, encoder, read_threads=read_threads, **kwargs)
    else:
        elements = _PythonElements(source, encoder, **kwargs)
    return PromptIterator(elements, batch_size, backend=backend, signature=signature,
                          drop_remainder=drop_remainder)
