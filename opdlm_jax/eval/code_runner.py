"""Test runner executed INSIDE the sandbox: `python -I code_runner.py MARKER` in a directory
holding `solution.py` and `tests.json` (written by `opdlm_jax.eval.code_exec`).

A standalone script (standard library only). It prints MARKER as its last line only after every
test passed; the evaluator requires exit status 0 AND that line, so a solution that exits early
(`sys.exit(0)`, `os._exit(0)`) or kills its process fails. Test kinds (tests.json "kind"):
  asserts  each statement of "asserts" executed in the solution's namespace
  pytest   "test_code" executed after `from solution import *`; each `def test_*` called in order
  fn_call  "fn_name"(*args) == expected for each case (a one-element expected list is unwrapped
           when the result is not a list, as the reference's TACO runner does)
  stdio    solution.py run as a program per case with the case's input on stdin; its stdout
           compared with the expected output ("compare": "strip" or "tokens")
"""
import json
import os
import re
import subprocess
import sys


def fail(msg):
    sys.stderr.write("FAIL " + msg[:2000] + "\n")
    sys.stderr.flush()
    os._exit(1)


def load_solution():
    """Import solution.py as the module `solution`; an exit during import is a failure."""
    sys.path.insert(0, os.getcwd())
    try:
        import solution  # noqa: F401
    except SystemExit as e:
        fail(f"the solution exited while being imported (SystemExit {e.code!r})")
    except BaseException as e:  # noqa: BLE001 - any error in the solution is its failure
        fail(f"importing the solution raised {type(e).__name__}: {e}")
    return sys.modules["solution"]


def namespace_of(module):
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


def run_statements(ns, code, what):
    try:
        exec(compile(code, what, "exec"), ns)
    except SystemExit as e:
        fail(f"{what}: SystemExit {e.code!r} during the tests")
    except BaseException as e:  # noqa: BLE001
        fail(f"{what}: {type(e).__name__}: {e}")


def main():
    marker = sys.argv[1]
    with open("tests.json", encoding="utf-8") as f:
        tests = json.load(f)
    kind = tests["kind"]
    if kind == "stdio":
        compare = tests.get("compare", "strip")
        for i, case in enumerate(tests["cases"]):
            with open("case_input.txt", "w", encoding="utf-8") as f:
                f.write(case.get("input") or "")
            with open("case_input.txt", "rb") as fin, open("case_output.txt", "wb") as fout:
                try:
                    rc = subprocess.run([sys.executable, "-I", "solution.py"], stdin=fin, stdout=fout,
                                        stderr=subprocess.DEVNULL,
                                        timeout=tests.get("case_timeout_s")).returncode
                except subprocess.TimeoutExpired:
                    fail(f"case {i}: time limit")
            if rc != 0:
                fail(f"case {i}: the program exited with status {rc}")
            with open("case_output.txt", encoding="utf-8", errors="replace") as f:
                got = f.read()
            want = case.get("output") or ""
            if compare == "tokens":
                same = got.split() == want.split()
            else:
                same = got.strip() == want.strip()
            if not same:
                fail(f"case {i}: expected {want.strip()[:200]!r}, got {got.strip()[:200]!r}")
    else:
        module = load_solution()
        ns = namespace_of(module)
        if kind == "asserts":
            for i, stmt in enumerate(tests["asserts"]):
                run_statements(ns, stmt, f"test {i}")
        elif kind == "pytest":
            code = tests["test_code"]
            run_statements(ns, code, "test_code")
            names = re.findall(r"^def (test_\w+)\s*\(", code, flags=re.MULTILINE)
            if not names:
                fail("test_code defines no test_* function")
            for name in names:
                run_statements(ns, f"{name}()", name)
        elif kind == "fn_call":
            fn = ns.get(tests["fn_name"])
            if not callable(fn):
                fail(f"the solution defines no function {tests['fn_name']!r}")
            for i, case in enumerate(tests["cases"]):
                try:
                    got = fn(*case["args"])
                except SystemExit as e:
                    fail(f"case {i}: SystemExit {e.code!r}")
                except BaseException as e:  # noqa: BLE001
                    fail(f"case {i}: {type(e).__name__}: {e}")
                want = case["expected"]
                if isinstance(want, list) and len(want) == 1 and not isinstance(got, (list, tuple)):
                    want = want[0]
                if got != want:
                    fail(f"case {i}: expected {want!r:.200}, got {got!r:.200}")
        else:
            fail(f"unknown test kind {kind!r}")
    sys.stdout.flush()
    sys.stdout.write("\n" + marker + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip atexit handlers the solution may have registered


if __name__ == "__main__":
    main()
