"""Table 4 (ablation, 4B, same prompts): Off-Policy / OPDLM_off / OPDLM.

Off-Policy: the teacher's responses, random masking, the teacher's soft targets. OPDLM_off: the
student's own rollouts, random masking. OPDLM: own rollouts, trajectory states (per block).
Reproduce one row:
    python -m experiments.main --config experiments/configs/table4_ablation.py:off_policy,/path/to/Qwen3-4B \
        --workdir gs://bucket/opdlm/table4-off_policy          # rows: off_policy | opdlm_off | opdlm
Cheap CPU variant of a row:
    python -m experiments.main --config experiments/configs/table4_ablation.py:opdlm_off,toy --workdir /tmp/t4
Cost of the toy variant on a 2-core CPU: about 8 min, as table1.py:toy (the same shapes; that
one measured 8.4 min wall, 3.9 CPU-min, first step at 3 min, on a shared machine, 2026-12-02)
and a 0.48 GB workdir (one params-only SmolLM2 checkpoint). The recipe needs a TPU slice.
"""
from experiments.configs.common import recipe, toy

ROWS = ("off_policy", "opdlm_off", "opdlm")


def get_config(arg: str = "opdlm"):
    parts = (arg or "opdlm").split(",")
    row = parts[0]
    if row not in ROWS:
        raise ValueError(f"table4 rows are {ROWS}, got {row!r}")
    rest = parts[1] if len(parts) > 1 else ""
    if rest == "toy":
        return toy(recipe("qwen3-4b"), method=row)
    c = recipe("qwen3-4b", rest)
    c.method = row
    return c
