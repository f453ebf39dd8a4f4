"""int8 across the twins: each twin's `quantize("int8")` writes the same int8 tensors and scales, a quantized
checkpoint written by any twin loads in the others, and the int8 twins agree.

The bounds. All three quantize the same float weights with the shared NumPy code
(`checkpoints.quantized.quantize_per_channel`), so their int8 weights and scales are bit-identical (asserted).
TensorFlow and Flax then compute `(x @ float(q)) * scale + bias` with float32 activations: the same operations
as their fp32 twins on other (exactly representable) weights, so they differ only by float32 accumulation order,
the project's fp32 bound, 1e-5. PyTorch's int8 kernel (`_weight_int8pack_mm`) rounds the activations, the
scales and its result to bfloat16 in every projection (relative error up to u = 2^-8 each). That is the same
relative size as the int8 rounding itself (half a step of 1/127 of the channel's largest weight, 2^-8), so
PyTorch's extra deviation from the float32-activation twins is of the order of the int8-vs-fp32 deviation, which
each twin's own tests hold to 3% of the largest logit; it is held to that bound here (0.5-1.9% measured on these
tiny models).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

import twinformers.flax as fx  # noqa: E402
import twinformers.pt as ptm  # noqa: E402
import twinformers.tf as tft  # noqa: E402
from helpers import FAMILIES, LM_CLASSES, TOLERANCES, tiny_config  # noqa: E402
from twinformers.checkpoints.safetensors import open_safetensors  # noqa: E402

MODULES = {"pt": ptm, "tf": tft, "flax": fx}
IDS = np.random.default_rng(1).integers(1, 97, size=(2, 7)).astype(np.int32)


def float_checkpoint(family: str, path) -> str:
    """A perturbed tiny PyTorch model saved as a float checkpoint (weights ~0.2, layer-norm scales ~1)."""
    model = getattr(ptm, LM_CLASSES[family])(tiny_config(family, pad_token_id=0)).eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)) * 0.1
            p.copy_(1 + noise if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 2 * noise)
    model.save_pretrained(path)
    return os.fspath(path)


def logits(backend: str, model) -> np.ndarray:
    if backend == "pt":
        with torch.no_grad():
            return model(torch.from_numpy(IDS).long()).logits.numpy()
    return np.asarray(model(IDS).logits)


def greedy(backend: str, model, new: int = 8) -> np.ndarray:
    prompt = torch.from_numpy(IDS[:1]).long() if backend == "pt" else IDS[:1]
    return np.asarray(model.generate(prompt, max_new_tokens=new, do_sample=False))[0, IDS.shape[1]:]


@pytest.fixture(scope="module", params=FAMILIES)
def twins(request, tmp_path_factory):
    """family, {backend: quantized model}, {backend: its saved quantized checkpoint}."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    source = float_checkpoint(family, root / "float")
    models, paths = {}, {}
    for backend, module in MODULES.items():
        model = getattr(module, LM_CLASSES[family]).from_pretrained(source)
        if backend == "pt":
            model.eval()
        models[backend] = model.quantize("int8")
        paths[backend] = os.fspath(root / backend)
        model.save_pretrained(paths[backend])
    return family, models, paths


def test_every_twin_writes_the_same_int8_checkpoint(twins):
    _, _, paths = twins
    files = {backend: open_safetensors(os.path.join(path, "model.safetensors")) for backend, path in paths.items()}
    keys = set(files["pt"])
    assert any(key.endswith("weight_scale") for key in keys)
    for backend in ("tf", "flax"):
        assert set(files[backend]) == keys, backend
        for key in keys:
            expected, got = files["pt"][key], files[backend][key]
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (backend, key)


def test_int8_twins_agree(twins):
    _, models, _ = twins
    out = {backend: logits(backend, model) for backend, model in models.items()}
    np.testing.assert_allclose(out["flax"], out["tf"], rtol=0, atol=TOLERANCES["float32"])
    for backend in ("tf", "flax"):
        deviation = np.abs(out["pt"] - out[backend]).max()
        assert deviation <= 0.03 * np.abs(out[backend]).max(), backend


def test_checkpoints_load_in_every_twin(twins):
    """A checkpoint written by one twin loads in each other twin with the same logits as that twin's own
    quantized model: the tensors are identical, so the results are too."""
    family, models, paths = twins
    own = {backend: logits(backend, model) for backend, model in models.items()}
    for writer, path in paths.items():
        for reader, module in MODULES.items():
            if reader != writer:
                loaded = getattr(module, LM_CLASSES[family]).from_quantized(path)
                np.testing.assert_array_equal(logits(reader, loaded), own[reader], err_msg=f"{writer} -> {reader}")


def test_greedy_tokens_across_backends(twins):
    """TensorFlow and Flax pick the same greedy tokens (their logits agree to 1e-5); PyTorch's bf16 activations can
    flip a near-tie, so it is compared on the first token, which every twin takes from the same prompt."""
    _, models, _ = twins
    tokens = {backend: greedy(backend, model) for backend, model in models.items()}
    assert np.array_equal(tokens["tf"], tokens["flax"]), tokens
    assert tokens["pt"][0] == tokens["tf"][0], tokens
