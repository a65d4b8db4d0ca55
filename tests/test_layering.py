"""One direction per layer: no package imports a package above it, the library never imports
`experiments`, and the import graph printed in docs/ARCHITECTURE.md is the current one."""
from pathlib import Path

from import_graph import LAYERS, markdown, package_graph, upward_imports

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_has_a_layer():
    assert set(package_graph()) <= set(LAYERS)


def test_no_upward_imports_and_no_experiments():
    assert upward_imports() == []


def test_a_planted_upward_import_is_caught(tmp_path, monkeypatch):
    import import_graph

    fake = tmp_path / "opdlm_jax"
    (fake / "decoding").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "decoding" / "bad.py").write_text("from opdlm_jax.train.step import StepConfig\n")
    (fake / "train" / "ok.py").write_text("import experiments.configs.common\n")
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    monkeypatch.setattr(import_graph, "PACKAGE", fake)
    assert sorted(upward_imports()) == [("decoding", "train"), ("train", "experiments")]


def test_architecture_doc_shows_the_current_graph():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert markdown() in doc, "regenerate with: python tests/import_graph.py"
