"""Fig. 3/5: accuracy vs tokens per round: thresholds 0.80-0.95 and static at block 4, and blocks
8 and 16 at threshold 0.9, on held-out math prompts, for a trained run (or any model).

Reproduce (after table1.py finished into RUN_DIR):
    python -m experiments.main --config experiments/configs/fig3_parallelism.py:RUN_DIR --workdir RUN_DIR/fig3
Cheap CPU variant (the embedded SmolLM2 teacher as the model, 8 prompts):
    python -m experiments.main --config experiments/configs/fig3_parallelism.py:toy --workdir /tmp/fig3
Cost of the toy variant on a 2-core CPU: 3.5 min wall, 3.2 CPU-min (measured on a shared machine,
2026-12-02); its workdir holds only sweep.json and config.json (a few KB).
"""
import ml_collections

from experiments.configs.common import DEMO_PROMPTS


def get_config(arg: str = "toy"):
    c = ml_collections.ConfigDict()
    c.experiment = "sweep"
    c.run_dir = "" if arg in ("", "toy") else arg  # a training workdir; empty = c.model untrained
    c.model = "smollm2-135m"
    c.prompts = str(DEMO_PROMPTS / "heldout.jsonl")
    c.alignment = "same_position"
    c.thresholds = [0.8, 0.85, 0.9, 0.95]
    c.block_sizes = [4, 8, 16]
    toy = arg in ("", "toy")
    c.n_math = 8 if toy else 500
    c.max_new_tokens = 16 if toy else 2048
    return c
