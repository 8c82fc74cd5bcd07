"""The shipped model files as package data: installed as `emotion.model` (see pyproject.toml), read
with importlib.resources by `emotion.model_file.shipped_file`."""
