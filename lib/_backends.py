"""Which deep-learning framework each backend needs, the error raised when it is missing, what each backend
package exports, and the guard that keeps PyTorch's `triton` from being loaded after TensorFlow."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

# backend subpackage → (modules it imports, pip extra that installs them)
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "pt": (("torch",), "pt"),
    "tf": (("tensorflow", "keras", "h5py"), "tf"),
    "flax": (("jax", "flax", "optax", "msgpack"), "flax"),
}


def missing_modules(backend: str) -> list[str]:
    """The modules `twinformers.<backend>` needs that are not installed (empty when it can be imported)."""
    modules, _ = BACKENDS[backend]
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_hint(backend: str, missing: list[str]) -> str:
    """'X is not installed' / 'X and Y are not installed', and the pip command that installs them."""
    names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    verb = "is" if len(missing) == 1 else "are"
    return f"{names} {verb} not installed: pip install 'twinformers[{BACKENDS[backend][1]}]'"


def require_backend(backend: str) -> None:
    """Raise ImportError naming the pip extra if a module `twinformers.<backend>` needs is not installed."""
    missing = missing_modules(backend)
    if missing:
        raise ImportError(f"twinformers.{backend} needs {', '.join(missing)}; {install_hint(backend, missing)}")
    if backend == "pt":
        guard_triton_after_tensorflow()


def model_exports(package: str) -> dict[str, Any]:
    """Name → class of every model class and auto class the backend package `package` (`twinformers.pt`, ...)
    exports, in the family tables' order (`conversion.tables.model_classes`, then `AUTO_CLASSES`)."""
    from .conversion.tables import AUTO_CLASSES, TABLES, model_classes

    exports = {}
    for family in TABLES:
        module = importlib.import_module(f"{package}.{family}")
        exports.update({name: getattr(module, name) for name in model_classes(family)})
    auto = importlib.import_module(f"{package}.auto")
    exports.update({name: getattr(auto, name) for name in AUTO_CLASSES})
    return exports


# ----------------------------------------------------------------------------------------- triton guard
TRITON_AFTER_TENSORFLOW = (
    "twinformers refused to import triton: TensorFlow is already loaded in this process, and loading triton "
    "after it crashes the interpreter (both ship their own LLVM; triton's start-up code binds to TensorFlow's "
    "copy — a segmentation fault, not an exception). PyTorch runs without triton on CPU. To use "
    "torch.compile with triton next to TensorFlow, import triton (or torch._dynamo) before tensorflow; "
    "see docs/troubleshooting.md."
)


class _RefuseTriton(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(TRITON_AFTER_TENSORFLOW, name="triton")

    def exec_module(self, module):  # never reached: create_module raises
        raise ImportError(TRITON_AFTER_TENSORFLOW, name="triton")


class _TritonAfterTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `triton` as usual until TensorFlow is loaded; from then on, its import raises ImportError.

    PyTorch imports triton lazily, from `torch._dynamo` — reached by `torch.compile`, optimizer steps,
    `torch.utils.checkpoint`, or random fills on the meta device — and treats an ImportError as "triton is not
    installed", so the PyTorch twin keeps working where the import would have crashed the process.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "triton" or "tensorflow" not in sys.modules:
            return None
        found = importlib.machinery.PathFinder.find_spec(name, path)
        if found is None:
            return None  # not installed: the ordinary ModuleNotFoundError
        return importlib.machinery.ModuleSpec(name, _RefuseTriton(), origin=found.origin)


def guard_triton_after_tensorflow() -> None:
    """Install the triton guard once (idempotent); a no-op for triton once it is loaded."""
    if not any(isinstance(finder, _TritonAfterTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TritonAfterTensorFlow())


# ----------------------------------------------------------------------------------------- quiet TensorFlow
class _SilencedStderrLoader(importlib.abc.Loader):
    """Runs another loader with file descriptor 2 pointed at /dev/null: TensorFlow's C++ start-up lines
    (absl's "All log messages before absl::InitializeLog()", "Could not find cuda drivers") are written
    during `import tensorflow`, before TF_CPP_MIN_LOG_LEVEL applies."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilencedStderrLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ logging out of the command line's output unless asked for with
    TF_CPP_MIN_LOG_LEVEL=0 or 1: the default level becomes 3, which hides its runtime lines (e.g. "failed call
    to cuInit" on a machine without a GPU), and the lines printed while TensorFlow is being imported go to
    /dev/null. Python errors and warnings after the import are unaffected."""
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level in ("0", "1") or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
