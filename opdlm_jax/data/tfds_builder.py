"""A prompt set (JSONL / Parquet) as a tfds `array_record` dataset, with no TensorFlow.

    builder = prepare_prompt_dataset("train.jsonl", data_dir, heldout_path="heldout.jsonl")
    source = builder.as_data_source("train")      # random access: len(source), source[i]
    builder = build_prompt_dataset(records, data_dir, name="train")   # records already validated

tfds writes and reads `array_record` files without TensorFlow; `as_data_source()` gives a
random-access source for grain. `as_dataset()` and TFRecord need TensorFlow: not used here.

Layout: `<data_dir>/opdlm_prompts/<config>/1.0.0/`, where the config name is `name` (the train
file's stem) plus a digest of the validated records of both splits. Preparing is idempotent: a
second call with the same content finds the finished dataset and reuses it; changed content gets a
new config directory, never a stale one. Examples keep file order (shuffling is the loader's job)
and carry `index`, the record's 0-based position in its file, so errors can name it.

On several hosts sharing one `data_dir`, let one process prepare first (the others then reuse it),
or give each host a local `data_dir`: tfds writes to a temporary folder and renames it, and two
hosts generating at once would race on that rename.

Stored features: prompt (text), domain (text), answer (text, "" when absent), has_answer (bool),
index (int64). `decode_example` turns a stored example back into a `PromptRecord`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

import numpy as np

from opdlm_jax.data.prompt_records import (PathLike, PromptRecord, read_prompt_records,
                                           records_fingerprint)

try:  # tfds is only needed for this module; keep the rest of the package importable without it
    import tensorflow_datasets as tfds
except ImportError:  # pragma: no cover
    tfds = None

DATASET_NAME = "opdlm_prompts"
FILE_FORMAT = "array_record"
TRAIN, HELDOUT = "train", "heldout"


def _require_tfds():
    if tfds is None:  # pragma: no cover
        raise ImportError("the tfds prompt dataset needs tensorflow-datasets and array-record: "
                          "pip install tensorflow-datasets array-record (TensorFlow is not needed)")
    if importlib.util.find_spec("importlib_resources") is None:  # pragma: no cover
        # tfds 4.9.x imports it when preparing a builder defined inside a package, but its
        # metadata only requires it on Python < 3.9.
        raise ImportError("preparing a tfds dataset needs importlib_resources (tfds 4.9 uses it "
                          "without declaring it): pip install importlib_resources")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def decode_example(example: dict) -> PromptRecord:
    """A stored example (as read from `as_data_source`) back to a `PromptRecord`."""
    answer = _text(example["answer"]) if bool(example["has_answer"]) else None
    return PromptRecord(prompt=_text(example["prompt"]), domain=_text(example["domain"]),
                        answer=answer, index=int(example["index"]))


def _encode_example(record: PromptRecord) -> dict:
    return {"prompt": record.prompt, "domain": record.domain, "answer": record.answer or "",
            "has_answer": record.answer is not None, "index": record.index}


if tfds is not None:

    class OpdlmPrompts(tfds.core.GeneratorBasedBuilder):
        """Prompt records from a JSONL/Parquet file; splits train and (optional) heldout.

        Constructed with the already validated records (`train_records`, `heldout_records`), which
        are only read when the dataset has to be generated.
        """
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "prompt, domain, answer, has_answer, index."}

        def __init__(self, *, train_records=None, heldout_records=None, **kwargs):
            self._train_records = train_records
            self._heldout_records = heldout_records
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Prompt set for on-policy distillation (prompt, domain, answer).",
                features=tfds.features.FeaturesDict({
                    "prompt": tfds.features.Text(),
                    "domain": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                    "has_answer": tfds.features.Scalar(dtype=np.bool_),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }),
                disable_shuffling=True,  # keep file order; the loader shuffles by seed
            )

        def _split_generators(self, dl_manager):
            if self._train_records is None:
                raise RuntimeError(f"{DATASET_NAME}: the dataset at {self.data_dir} is not "
                                   "prepared and no records were given to generate it")
            splits = {TRAIN: self._generate_examples(self._train_records)}
            if self._heldout_records is not None:
                splits[HELDOUT] = self._generate_examples(self._heldout_records)
            return splits

        def _generate_examples(self, records):
            for r in records:
                yield r.index, _encode_example(r)


def _config_name(name: str, digest: str) -> str:
    stem = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "prompts"
    return f"{stem[:40]}_{digest[:16]}"


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    from tensorflow_datasets.core.utils import tqdm_utils
    before = tqdm_utils._active  # pylint: disable=protected-access
    tfds.display_progress_bar(enabled)
    try:
        yield
    finally:
        tfds.display_progress_bar(before)


def prepare_prompt_dataset(train_path: PathLike, data_dir: PathLike, *,
                           heldout_path: Optional[PathLike] = None,
                           allowed_domains: Optional[Collection[str]] = None,
                           require_answer_for: Collection[str] = (),
                           show_progress: bool = False) -> "OpdlmPrompts":
    """Validate the prompt file(s), then `build_prompt_dataset` (named after the train file).

    Validation errors (`PromptDataError`) are raised before anything is written.
    """
    read = functools.partial(read_prompt_records, allowed_domains=allowed_domains,
                             require_answer_for=require_answer_for)
    train = read(train_path)
    heldout = None if heldout_path is None else read(heldout_path)
    return build_prompt_dataset(train, data_dir, heldout=heldout, name=Path(train_path).stem,
                                show_progress=show_progress)


def build_prompt_dataset(train: Sequence[PromptRecord], data_dir: PathLike, *,
                         heldout: Optional[Sequence[PromptRecord]] = None, name: str = "prompts",
                         show_progress: bool = False) -> "OpdlmPrompts":
    """Build (once) the array_record dataset of already validated records under `data_dir`.

    Returns the prepared builder: `builder.as_data_source("train")` / `("heldout")`. The same
    records (and `name`) find the dataset already built and reuse it.
    """
    _require_tfds()
    digest = records_fingerprint(train) + (records_fingerprint(heldout) if heldout else "none")
    digest = hashlib.sha256(digest.encode()).hexdigest()
    config = tfds.core.BuilderConfig(
        name=_config_name(name, digest),
        description=f"{name}: {len(train)} train, {len(heldout or ())} heldout records")
    builder = OpdlmPrompts(train_records=train, heldout_records=heldout, config=config,
                           data_dir=str(data_dir), file_format=FILE_FORMAT)
    if not builder.is_prepared():
        with _progress_bar(show_progress):
            builder.download_and_prepare(file_format=FILE_FORMAT)
    return builder


def prompt_data_source(builder, split: str = TRAIN):
    """`builder.as_data_source(split)` with a clear error for a split that was not built."""
    available = list(builder.info.splits.keys())
    if split not in available:
        raise KeyError(f"{DATASET_NAME} at {builder.data_dir} has no split {split!r}; "
                       f"it has {available}")
    return builder.as_data_source(split)
