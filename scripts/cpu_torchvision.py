"""Make PyPI's torchvision (a CUDA build) importable next to a CPU torch, for the real-vLLM venv: its C++ ops link
against CUDA libraries and do not load, and registering their Python side then fails (`operator torchvision::nms does
not exist`), which breaks `import transformers`. vLLM's vision models need torchvision's Python transforms only, so
the registrations are made conditional on the ops having loaded (the file is found, not imported: importing it is
what fails). Run with the venv's python; idempotent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REGISTRATIONS = """from torchvision import (
    _autograd_registrations,
    _meta_registrations,
    datasets,"""
CONDITIONAL = """if extension._has_ops():  # a CUDA build of the ops next to a CPU torch: register them only when they loaded
    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401
from torchvision import (
    datasets,"""


def main() -> None:
    spec = importlib.util.find_spec("torchvision")
    assert spec is not None and spec.origin is not None, "torchvision is not installed"
    init = Path(spec.origin)
    text = init.read_text()
    if CONDITIONAL not in text:
        assert REGISTRATIONS in text, f"{init}: an unknown torchvision layout; check this script against it"
        init.write_text(text.replace(REGISTRATIONS, CONDITIONAL))


if __name__ == "__main__":
    main()
