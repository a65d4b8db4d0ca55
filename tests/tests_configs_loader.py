"""Load an ml_collections config file (`get_config(arg)`) without absl flags."""
import importlib.util
from pathlib import Path


def load_config(path, arg: str = ""):
    spec = importlib.util.spec_from_file_location(f"config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
