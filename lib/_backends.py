"""Which deep-learning framework each backend needs, the error raised when it is missing, and what each backend
package exports."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

# backend subpackage → (modules it imports, pip extra that installs them)
BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "pt": (("torch",), "pt"),
    "tf": (("tensorflow", "keras", "h5py"), "tf"),
    "flax": (("jax", "flax", "optax"), "flax"),
}


def require_backend(backend: str) -> None:
    """Raise ImportError naming the pip extra if a module `twinformers.<backend>` needs is not installed."""
    modules, extra = BACKENDS[backend]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"twinformers.{backend} needs {', '.join(missing)}, which is not installed: "
            f"pip install 'twinformers[{extra}]'"
        )


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
