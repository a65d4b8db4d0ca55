"""Prompt sets in the reference format: one record = {"prompt", "domain", optional "answer"}.

Files are JSONL (one JSON object a line, blank lines skipped) or Parquet (columns `prompt`,
`domain`, optional `answer`; read with pyarrow). Other keys/columns are ignored. Every problem is
raised as a `PromptDataError` (a `BadInput`, so a `ValueError`) whose message names the file and
the record: an empty set, a missing field, a wrong type, an empty prompt, a domain outside the
allowed set, bad JSON.

Domains are free strings (the paper uses math / code / science / chat, the demo set math / chat /
continuation); pass `allowed_domains` to restrict them. `require_answer_for` names domains whose
records must carry a non-empty answer (e.g. ("math",) for a set graded by answer matching).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence, Union

from opdlm_jax.errors import BadInput

PathLike = Union[str, "os.PathLike[str]"]

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
REQUIRED_FIELDS = ("prompt", "domain")


class PromptDataError(BadInput):
    """A prompt set that cannot be used as it is; the message names the file and the record
    (bad input: exit code 2 at the command line)."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """One prompt. `index` is its 0-based position in the set it was read from."""
    prompt: str
    domain: str
    answer: Optional[str] = None
    index: int = 0

    def to_dict(self) -> dict:
        out = {"prompt": self.prompt, "domain": self.domain}
        if self.answer is not None:
            out["answer"] = self.answer
        return out


def _type_name(value: Any) -> str:
    return type(value).__name__


def validate_record(raw: Any, index: int, where: str, *,
                    allowed_domains: Optional[Collection[str]] = None,
                    require_answer_for: Collection[str] = ()) -> PromptRecord:
    """Check one raw record (a mapping) and return it as a `PromptRecord`.

    `where` names the place for error messages, e.g. "data/train.jsonl:12 (record 11)".
    A `None` answer (JSON null, Parquet null) counts as no answer.
    """
    if isinstance(raw, PromptRecord):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise PromptDataError(f"{where}: expected an object with fields 'prompt' and 'domain', "
                              f"got {_type_name(raw)}")
    for key in REQUIRED_FIELDS:
        if key not in raw or raw[key] is None:
            raise PromptDataError(f"{where}: missing required field {key!r}")
    prompt, domain, answer = raw["prompt"], raw["domain"], raw.get("answer")
    if not isinstance(prompt, str):
        raise PromptDataError(f"{where}: field 'prompt' must be a string, got "
                              f"{_type_name(prompt)} ({prompt!r:.60})")
    if not prompt.strip():
        raise PromptDataError(f"{where}: field 'prompt' is empty")
    if not isinstance(domain, str):
        raise PromptDataError(f"{where}: field 'domain' must be a string, got "
                              f"{_type_name(domain)} ({domain!r:.60})")
    if not domain:
        raise PromptDataError(f"{where}: field 'domain' is empty")
    if allowed_domains is not None and domain not in allowed_domains:
        raise PromptDataError(f"{where}: domain {domain!r} is not allowed; expected one of "
                              f"{', '.join(sorted(allowed_domains))}")
    if answer is not None and not isinstance(answer, str):
        raise PromptDataError(f"{where}: field 'answer' must be a string or absent, got "
                              f"{_type_name(answer)} ({answer!r:.60})")
    if domain in require_answer_for and (answer is None or not answer.strip()):
        # a blank gold answer cannot grade anything: treat it as missing
        raise PromptDataError(f"{where}: a {domain!r} record needs an 'answer'"
                              + ("" if answer is None else " (it is empty)"))
    return PromptRecord(prompt=prompt, domain=domain, answer=answer, index=index)


def validate_records(raws: Iterable[Any], source: str = "<records>", *,
                     allowed_domains: Optional[Collection[str]] = None,
                     require_answer_for: Collection[str] = ()) -> list[PromptRecord]:
    """Validate in-memory records (dicts or `PromptRecord`s); indices are renumbered 0..n-1."""
    records = [validate_record(raw, i, f"{source} (record {i})", allowed_domains=allowed_domains,
                               require_answer_for=require_answer_for)
               for i, raw in enumerate(raws)]
    if not records:
        raise PromptDataError(f"{source}: the prompt set is empty (no records)")
    return records


def _format_of(path: Path, file_format: Optional[str]) -> str:
    if file_format is not None:
        if file_format not in ("jsonl", "parquet"):
            raise PromptDataError(f"{path}: unknown file_format {file_format!r}; "
                                  "expected 'jsonl' or 'parquet'")
        return file_format
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise PromptDataError(f"{path}: cannot tell the format from the suffix {suffix!r}; use one "
                          f"of {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)} or pass file_format")


def _read_jsonl(path: Path) -> Iterable[tuple[Any, str]]:
    with path.open("r", encoding="utf-8") as f:
        n = 0
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno} (record {n})"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptDataError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from None
            yield raw, where
            n += 1


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise PromptDataError("reading or writing Parquet prompt sets needs pyarrow: "
                              "pip install pyarrow") from e
    return pq


def _read_parquet(path: Path) -> Iterable[tuple[Any, str]]:
    pq = _pyarrow_parquet()
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise PromptDataError(f"{path}: cannot read as Parquet: {e}") from None
    missing = [c for c in REQUIRED_FIELDS if c not in table.column_names]
    if missing and table.num_rows:
        raise PromptDataError(f"{path} (record 0): missing required field {missing[0]!r} "
                              f"(the file has columns {table.column_names})")
    for i, raw in enumerate(table.to_pylist()):
        yield raw, f"{path} (record {i})"


def read_prompt_records(path: PathLike, *, file_format: Optional[str] = None,
                        allowed_domains: Optional[Collection[str]] = None,
                        require_answer_for: Collection[str] = ()) -> list[PromptRecord]:
    """Read and validate a JSONL or Parquet prompt set, in file order.

    The format comes from the suffix (.jsonl/.json/.ndjson, .parquet/.pq) unless `file_format`
    ("jsonl" | "parquet") is given.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptDataError(f"{path}: prompt file not found")
    fmt = _format_of(path, file_format)
    rows = _read_jsonl(path) if fmt == "jsonl" else _read_parquet(path)
    records = [validate_record(raw, i, where, allowed_domains=allowed_domains,
                               require_answer_for=require_answer_for)
               for i, (raw, where) in enumerate(rows)]
    if not records:
        raise PromptDataError(f"{path}: the prompt set is empty (no records)")
    return records


def write_prompt_records(records: Sequence[Union[PromptRecord, Mapping]], path: PathLike, *,
                         file_format: Optional[str] = None) -> Path:
    """Write records as JSONL or Parquet (format from the suffix); returns the path."""
    path = Path(path)
    fmt = _format_of(path, file_format)
    rows = [validate_record(r, i, f"{path} (record {i})").to_dict()
            for i, r in enumerate(records)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        pq = _pyarrow_parquet()
        import pyarrow as pa
        schema = pa.schema([("prompt", pa.string()), ("domain", pa.string()),
                            ("answer", pa.string())])
        table = pa.table({k: [row.get(k) for row in rows] for k in ("prompt", "domain", "answer")},
                         schema=schema)
        pq.write_table(table, path)
    return path


def records_fingerprint(records: Sequence[PromptRecord]) -> str:
    """A hex digest of the records' content and order (prompt, domain, answer)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.prompt, r.domain, r.answer], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def load_records(records_or_path: Union[PathLike, Sequence[Union[PromptRecord, Mapping]]], *,
                 allowed_domains: Optional[Collection[str]] = None,
                 require_answer_for: Collection[str] = ()) -> list[PromptRecord]:
    """A path -> `read_prompt_records`; a sequence of dicts/records -> `validate_records`."""
    if isinstance(records_or_path, (str, os.PathLike)):
        return read_prompt_records(records_or_path, allowed_domains=allowed_domains,
                                   require_answer_for=require_answer_for)
    return validate_records(records_or_path, allowed_domains=allowed_domains,
                            require_answer_for=require_answer_for)
