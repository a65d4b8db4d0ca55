"""Table 1: OPDLM-4B / OPDLM-8B with the paper's recipe (docs/METHOD.md, sections 5-6).

Reproduce (TPU VM, the Qwen3 weights in a local HF directory):
    python -m experiments.main --config experiments/configs/table1.py:qwen3-4b,/path/to/Qwen3-4B \
        --workdir gs://bucket/opdlm/table1-4b
    python -m experiments.main --config experiments/configs/table1.py:qwen3-8b,/path/to/Qwen3-8B ...
Cheap CPU variant (the embedded SmolLM2, a few steps):
    python -m experiments.main --config experiments/configs/table1.py:toy --workdir /tmp/t1
Cost of the toy variant on a 2-core CPU: about 8 min (table1.py:toy measured 8.4 min wall, 3.9
CPU-min, first step at 3 min, on a shared machine, 2026-12-02) and a 0.48 GB workdir (one
params-only SmolLM2 checkpoint). The recipe itself needs a TPU slice (tpu/README.md).
"""
from experiments.configs.common import recipe, toy


def get_config(arg: str = "qwen3-4b"):
    parts = (arg or "qwen3-4b").split(",")
    if parts[0] == "toy":
        return toy(recipe("qwen3-4b"))
    model, model_dir = parts[0], (parts[1] if len(parts) > 1 else "")
    if model not in ("qwen3-4b", "qwen3-8b"):
        raise ValueError(f"table1 covers qwen3-4b and qwen3-8b, got {model!r}")
    return recipe(model, model_dir)
