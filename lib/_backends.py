"""Which deep-learning framework each backend needs, and the error raised when it is missing."""

from __future__ import annotations

import importlib.util

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
