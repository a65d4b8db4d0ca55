"""Tables 10-11 (4B): SFT with the BD3LM loss on the teacher's responses vs OPDLM; evaluate each
under static and dynamic (threshold 0.9) decoding (fig3_parallelism.py:eval,<run> does the sweep).

Reproduce one row:
    python -m experiments.main --config experiments/configs/table10_sft.py:sft,/path/to/Qwen3-4B \
        --workdir gs://bucket/opdlm/table10-sft                # rows: sft | opdlm
Cheap CPU variant:
    python -m experiments.main --config experiments/configs/table10_sft.py:sft,toy --workdir /tmp/t10
Cost of the toy variant on a 2-core CPU: about 8 min, as table1.py:toy (the same shapes; that
one measured 8.4 min wall, 3.9 CPU-min, first step at 3 min, on a shared machine, 2026-12-02)
and a 0.48 GB workdir (one params-only SmolLM2 checkpoint). The recipe needs a TPU slice.
"""
from experiments.configs.common import recipe, toy

ROWS = ("sft", "opdlm")


def get_config(arg: str = "sft"):
    parts = (arg or "sft").split(",")
    row = parts[0]
    if row not in ROWS:
        raise ValueError(f"table10 rows are {ROWS}, got {row!r}")
    rest = parts[1] if len(parts) > 1 else ""
    if rest == "toy":
        return toy(recipe("qwen3-4b"), method=row)
    c = recipe("qwen3-4b", rest)
    c.method = row
    return c
