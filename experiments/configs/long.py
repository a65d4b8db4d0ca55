"""The long conversion of the embedded model (issue: does the parallelism deliver?), one student per run.

    python -m experiments.main --config experiments/configs/long.py:shifted --workdir runs/long_shifted
    python -m experiments.main --config experiments/configs/long.py:same_position --workdir runs/long_same_position

Each invocation trains for at most `train.stop_after_minutes` (90) minutes, saves the full state
(parameters, AdamW moments, data position: an exact resume) and exits 75; rerunning the same command
continues from there, up to `train.steps` RL steps. Held-out evaluation after the RL steps in
`train.eval_steps` and every `train.eval_every` (experiments/long.py); curves.md / curves.png in
the workdir after every invocation. One RL step: 8 prompts, responses up to 32 tokens (<= 256
rollout tokens), about 16 s on a 2-core CPU with bfloat16 compute; each evaluation about 4 minutes.
Disk: one checkpoint with the AdamW moments, 1.4 GB.

`:ablations` (experiments/long_ablations.py) trains the shifted student from scratch once per
training-side change (learning rate x4, rollout temperature 0.6, reverse KL, and no change) for 40
RL steps each (~7k rollout tokens, about 15 minutes per variant with its evaluation and probe):

    python -m experiments.main --config experiments/configs/long.py:ablations --workdir runs/long_ablations

`:smoke` is the same pipeline at toy size (2 steps, 4 prompts, 16 tokens, 2 math / 2 chat
prompts) for the tests.
"""
import ml_collections

from experiments.configs.common import recipe, toy

ARGS = ("shifted", "same_position", "smoke", "ablations")
# Training-side factors of tokens per round (issue: does the parallelism deliver?, item 4): one
# change each to the shifted student, as dotted overrides of the train config.
ABLATION_VARIANTS = {
    "baseline": (),
    "reverse_kl": (("loss.divergence", "reverse_kl"),),  # mode-seeking: rewards confident positions
    "lr_4x": (("optimizer.learning_rate", 2e-4), ("optimizer.end_learning_rate", 2e-4)),
    "temperature_06": (("rollout.temperature", 0.6),),  # rollouts nearer the greedy decoding it is scored on
}


def get_config(arg: str = "shifted"):
    if arg not in ARGS:
        raise ValueError(f"long.py takes one of {ARGS}, got {arg!r}")
    if arg == "ablations":
        return _ablations()
    smoke = arg == "smoke"
    c = ml_collections.ConfigDict()
    c.experiment = "long"
    t = toy(recipe("qwen3-0.6b"))
    t.scan_layers = True
    t.dtype = "bfloat16"  # float32 master weights; bf16 compute is the faster CPU setting (BENCHMARKS.md)
    t.rollout.alignment = "shifted" if smoke else arg
    t.steps = 2 if smoke else 2000  # an upper bound: the time box ends each invocation
    t.stop_after_minutes = 0.0 if smoke else 90.0
    t.batch_size = t.minibatch_size = 4 if smoke else 8
    budget = 16 if smoke else 32
    t.curriculum.update(start=budget, end=budget, bucket=budget)
    # Constant learning rate (the demo's): a run that may be continued has no planned end to decay to.
    t.optimizer.update(learning_rate=5e-5, end_learning_rate=5e-5, warmup_rl_steps=0)
    t.checkpoint_every = 1 if smoke else 20
    t.keep_checkpoints = 1
    t.checkpoint_params_only = False  # exact resume: the AdamW moments are saved too
    # An evaluation costs about 4 minutes (100 math prompts x 2 thresholds x 64 tokens, block
    # diffusion at batch 100): early points for the log-scale token axis, then every 80 steps.
    t.eval_steps = (1,) if smoke else (10, 40)
    t.eval_every = 0 if smoke else 80
    c.train = t
    c.eval = ml_collections.ConfigDict(dict(n_math=2 if smoke else 100, n_chat=2 if smoke else 32,
                                            max_new_tokens=8 if smoke else 64, thresholds=[0.9, 0.7]))
    return c


def _ablations():
    c = get_config("shifted")
    c.experiment = "long_ablations"
    c.steps = 40  # the long run's second evaluation point: the baseline row repeats it
    c.variants = ml_collections.ConfigDict(ABLATION_VARIANTS)
    c.only = ""  # comma-separated names to run a subset; empty = all
    # The untrained student and the AR teacher on the same held-out set (the shifted long run's)
    c.reference = "experiments/results/long/shifted/reference.json"
    c.probe = ml_collections.ConfigDict(dict(n=32, thresholds=[0.9, 0.7, 0.5]))
    return c
