"""Every ```python block of README.md runs as written, in order, in one namespace (as a reader
pasting them into one session would), on the embedded SmolLM2."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_the_examples_it_promises():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    joined = "\n".join(blocks)
    assert len(blocks) >= 3
    for name in ("generate_text", "generate_diffusion", "forward", "opd_loss_from_rollouts"):
        assert name in joined


def test_readme_python_blocks_run_as_written():
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(python_blocks(README.read_text(encoding="utf-8"))):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    printed = out.getvalue()
    assert "Paris" in printed  # the AR teacher answers
    loss, per_response = namespace["loss"], namespace["aux"]["loss_mask"].sum(-1)
    assert float(loss) > 0 and per_response.tolist() == [0, 6]  # as the README says
