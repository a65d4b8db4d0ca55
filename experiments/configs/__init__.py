"""One ml_collections config per paper table or figure; `get_config(arg)` in each file."""
