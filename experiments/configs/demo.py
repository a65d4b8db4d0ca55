"""The embedded-default demo (`make demo`): SmolLM2-135M-Instruct converted on this CPU.

    python -m experiments.main --config experiments/configs/demo.py --workdir runs/demo        # 24 min (2 cores)
    python -m experiments.main --config experiments/configs/demo.py:quick --workdir runs/quick # 2 min
    python -m experiments.main --config experiments/configs/demo.py:seeds --workdir runs/seeds # 23 min
    python -m experiments.main --config experiments/configs/demo.py:seeds_baselines --workdir runs/seeds_b  # 20 min

Times are wall clock on an idle 2-core CPU (README). Disk: each run keeps one params-only
checkpoint (0.48 GB), so the workdir is about 2.4 GB for the full demo (5 runs) and 1 GB for
`:quick` (7.0 GB and 2.9 GB when checkpoints held the AdamW moments too); `:seeds` 2.9 GB.

`:seeds` trains the two OPDLM rows (same-position and shifted) over seeds 0, 1, 2 at the full
demo's budget, without the baselines and the sweep, so the table shows the spread next to the effect;
`:seeds_baselines` does the same for the Table 4 baselines (OPDLM_off, Off-Policy).

OPDLM (same-position, the reference; shifted, an extra row) and the baselines of Table 4
(OPDLM_off, Off-Policy) and Table 10 (SFT with the BD3LM loss), at the same budget, then the
evaluation table (see experiments/demo.py).
"""
import ml_collections

from experiments.configs.common import recipe, toy


def get_config(arg: str = ""):
    if arg not in ("", "quick", "seeds", "seeds_baselines"):
        raise ValueError(f"demo.py takes '', 'quick', 'seeds' or 'seeds_baselines', got {arg!r}")
    quick = arg == "quick"
    c = ml_collections.ConfigDict()
    c.experiment = "demo"
    c.train = toy(recipe("qwen3-0.6b"))
    c.train.scan_layers = True
    c.train.steps = 2 if quick else 10
    c.train.batch_size = c.train.minibatch_size = 4 if quick else 8
    c.train.curriculum.update(start=16 if quick else 32, end=16 if quick else 32, bucket=16 if quick else 32)
    c.train.checkpoint_every = c.train.steps
    c.train.keep_checkpoints = 1
    runs = [("opdlm_same_position", "opdlm", "same_position"), ("opdlm_shifted", "opdlm", "shifted"),
            ("opdlm_off", "opdlm_off", "same_position"), ("off_policy", "off_policy", "same_position"),
            ("sft_bd3lm", "sft", "same_position")]
    if quick or arg == "seeds":
        runs = runs[:2]
    elif arg == "seeds_baselines":
        runs = runs[2:4]
    c.seeds = [0, 1, 2] if arg.startswith("seeds") else [0]
    c.runs = [ml_collections.ConfigDict(dict(name=n, method=m, alignment=a)) for n, m, a in runs]
    c.eval = ml_collections.ConfigDict(dict(n_math=8 if quick else 20, n_chat=4 if quick else 8,
                                            max_new_tokens=16 if quick else 32))
    c.sweep = ml_collections.ConfigDict(dict(run="" if arg else "opdlm_shifted",
                                             thresholds=[0.7, 0.9], block_sizes=[8]))
    return c
