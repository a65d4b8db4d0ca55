"""opdlm-chat: a trained run's student and its teacher answer each turn, multi-turn, until /quit."""
import io

from opdlm_jax import chat


def test_chat_with_a_run_two_turns_then_quit(tiny_run):
    args = chat.build_parser().parse_args(["--checkpoint", str(tiny_run), "--max-new-tokens", "8"])
    inp, out, err = io.StringIO("Hello\n\n/reset\nWhat is 2+2?\nAnd 3+3?\n/quit\nnever read\n"), io.StringIO(), io.StringIO()
    assert chat.chat(args, inp=inp, out=out, err=err) == 0
    text = out.getvalue()
    assert text.count("teacher> ") == 3 and text.count("student> ") == 3
    assert "[ar: " in text and "[diffusion: " in text and "(new conversation)" in text
    assert "never read" not in text and err.getvalue() == ""  # a trained run: no untrained-student note
    speakers = chat.speakers(args, io.StringIO())
    assert [s.name for s in speakers] == ["teacher", "student"]
    assert speakers[1].decoding.sampler.alignment == speakers[1].model.run_meta["alignment"]
