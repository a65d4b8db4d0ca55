"""Table 6: OPDLM-0.6B / OPDLM-1.7B (full-vocabulary forward KL, as the reference does for them).

Reproduce:
    python -m experiments.main --config experiments/configs/table6_small.py:qwen3-0.6b,/path/to/Qwen3-0.6B \
        --workdir gs://bucket/opdlm/table6-0.6b
Cheap CPU variant:
    python -m experiments.main --config experiments/configs/table6_small.py:toy --workdir /tmp/t6
Cost of the toy variant on a 2-core CPU: about 8 min, as table1.py:toy (the same shapes; that
one measured 8.4 min wall, 3.9 CPU-min, first step at 3 min, on a shared machine, 2026-12-02)
and a 0.48 GB workdir (one params-only SmolLM2 checkpoint). The recipe needs a TPU slice.
"""
from experiments.configs.common import recipe, toy


def get_config(arg: str = "qwen3-0.6b"):
    parts = (arg or "qwen3-0.6b").split(",")
    if parts[0] == "toy":
        return toy(recipe("qwen3-0.6b"))
    model, model_dir = parts[0], (parts[1] if len(parts) > 1 else "")
    if model not in ("qwen3-0.6b", "qwen3-1.7b"):
        raise ValueError(f"table6 covers qwen3-0.6b and qwen3-1.7b, got {model!r}")
    return recipe(model, model_dir)
