"""Twin parity: the three files of a family declare the same public classes in the same order (the order
docs/design.md gives), and every backend's parameters map onto the same canonical keys and shapes."""

from __future__ import annotations

import ast
import os
import re

import pytest
from equivalence_suite import SPECS, ModelSpec

from twinformers.conversion.tables import expected_shapes, plan_from_backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILY_FILES = ("gpt2", "gptj", "gpt_neo")
BACKEND_DIRS = ("pt", "tf", "flax")


def _module(backend: str, family: str) -> ast.Module:
    path = os.path.join(ROOT, "lib", backend, f"{family}.py")
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def public_classes(backend: str, family: str) -> list[str]:
    """Top-level public classes in file order; Flax's `*Module` linen classes are the wrappers' internals."""
    names = [node.name for node in _module(backend, family).body if isinstance(node, ast.ClassDef)]
    return [n for n in names if not n.startswith("_") and not (backend == "flax" and n.endswith("Module"))]


def class_aliases(backend: str, family: str) -> list[tuple[str, str]]:
    """Top-level `Alias = SomeClass` assignments (e.g. `GPT2ForCausalLM = GPT2LMHeadModel`)."""
    aliases = []
    for node in _module(backend, family).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and node.value.id[:1].isupper():
                aliases.append((target.id, node.value.id))
    return [alias for alias in aliases if alias[1] in public_classes(backend, family)]


def exported(backend: str, family: str) -> list[str]:
    """The file's `__all__`, Flax's `*Module` classes left out."""
    for node in _module(backend, family).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = [ast.literal_eval(element) for element in node.value.elts]
            return [n for n in names if not (backend == "flax" and n.endswith("Module"))]
    raise AssertionError(f"lib/{backend}/{family}.py has no __all__")


def design_order(family: str) -> list[str]:
    """The class order docs/design.md prescribes for `<family>.py`."""
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf"^- `{family}\.py`: (.*?)(?=^- |^\s*$)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/design.md lists no class order for {family}.py"
    listed = match.group(1).split("; then")[0]
    return re.findall(r"`(\w+)`", listed)


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_same_public_classes_in_the_same_order(family):
    classes = {backend: public_classes(backend, family) for backend in BACKEND_DIRS}
    assert classes["pt"] == design_order(family), f"lib/pt/{family}.py does not follow docs/design.md"
    for backend in ("tf", "flax"):
        assert classes[backend] == classes["pt"], (
            f"lib/{backend}/{family}.py declares {classes[backend]}, lib/pt/{family}.py {classes['pt']}"
        )


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_same_aliases_and_exports(family):
    for backend in ("tf", "flax"):
        assert class_aliases(backend, family) == class_aliases("pt", family), f"lib/{backend}/{family}.py aliases"
        assert exported(backend, family) == exported("pt", family), f"lib/{backend}/{family}.py __all__"


def test_flax_wrappers_sit_right_after_their_modules():
    """docs/design.md: each Flax model's linen module is declared immediately before its wrapper."""
    for family in FAMILY_FILES:
        names = [node.name for node in _module("flax", family).body if isinstance(node, ast.ClassDef)]
        for i, name in enumerate(names):
            if name.endswith("Module"):
                assert i + 1 < len(names) and names[i + 1] == name.removesuffix("Module"), (
                    f"lib/flax/{family}.py: {name} is not followed by {name.removesuffix('Module')}"
                )


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_flax_family_files_are_as_close_to_pytorch_as_tensorflow(family):
    """Lines a minimal diff removes and adds (`scripts/twin_distance.py`): the Flax file is no farther from the
    PyTorch one than the TensorFlow file is (docs/design.md records the numbers)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("twin_distance", os.path.join(ROOT, "scripts", "twin_distance.py"))
    twin_distance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twin_distance)
    pt = twin_distance.read_lines("pt", family)
    tf_distance = twin_distance.distance(pt, twin_distance.read_lines("tf", family))
    flax_distance = twin_distance.distance(pt, twin_distance.read_lines("flax", family))
    assert flax_distance <= tf_distance, (
        f"lib/flax/{family}.py differs from lib/pt/{family}.py in {flax_distance} lines, lib/tf/{family}.py in "
        f"{tf_distance}: `python scripts/twin_distance.py --show flax {family}` shows where"
    )


# The backend trios besides the family files: the same public names (`__all__`) in the same order, apart from
# the names one framework needs and the others do not, listed here with the backends that have them.
TRIOS = ("ops", "generation", "modeling_utils", "heads", "auto", "quantization")
FRAMEWORK_ONLY = {
    "ops": {
        "linear": ("flax",),  # PyTorch and Keras activations take the identity from their own modules
        "ModuleList": ("flax",),  # linen has no list of sub-modules with Hugging Face's `h.{i}` names
        "Embedding": ("tf",),  # Keras' Embedding names its table `embeddings`; HF's TF name is `weight` for GPT-J
        "LMHead": ("tf",),  # HF's TF models multiply by the embedding inside a layer; torch/linen tie in the model
        "sdpa_attention": ("pt", "flax"),  # fused attention kernels (torch SDPA, jax.nn.dot_product_attention)
        "shape_list": ("tf",),  # static-or-dynamic shapes inside tf.function
        "lm_head_logits": ("flax",),  # linen's tied head: `embedding.attend`
        "init_normal": ("tf", "flax"),  # initializers are passed at construction (PyTorch: `_init_weights`)
        "dot_general_f32": ("flax",),  # XLA on CPU converts half-precision dots' weights up front otherwise
        "matmul_f32": ("tf",),  # TF's twin of dot_general_f32 (BatchMatMulV3 with a float32 result under XLA)
        "Linear": ("tf", "flax"),  # Dense / nnx.Linear whose half-precision dots accumulate in float32
        "traced_dynamic_slice": ("tf",),  # an eager XLA dynamic_slice would start XLA's CPU JIT (~60 MB)
    },
    "modeling_utils": {
        "ATTN_IMPLEMENTATIONS": ("pt",),
        "register_keras_pytrees": ("tf",),
        "CrossAttentionPreTrainedModel": ("flax",),  # Hugging Face's Flax GPT-2 takes the encoder inputs before params
        "StaticCache": ("flax",),
        "flatten_params": ("flax",),
        "unflatten_params": ("flax",),
    },
    "quantization": {
        "quantize_projections": ("flax",),  # NNX graph definitions are rebuilt from the config: int8 modules too
    },
}


def module_exports(backend: str, module: str) -> list[str]:
    """The module's `__all__`; a Flax `*Module` class (an nnx module behind a wrapper) counts under its twin's name
    (`ModelForSequenceClassificationModule` ↔ `ModelForSequenceClassification`)."""
    path = os.path.join(ROOT, "lib", backend, f"{module}.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            names = [ast.literal_eval(element) for element in node.value.elts]
            return [n.removesuffix("Module") if backend == "flax" else n for n in names]
    raise AssertionError(f"lib/{backend}/{module}.py has no __all__")


@pytest.mark.parametrize("module", TRIOS)
def test_backend_trios_export_the_same_names_in_the_same_order(module):
    backends = [b for b in BACKEND_DIRS if os.path.exists(os.path.join(ROOT, "lib", b, f"{module}.py"))]
    assert backends == list(BACKEND_DIRS), f"lib/*/{module}.py missing"
    only = FRAMEWORK_ONLY.get(module, {})
    exports = {backend: module_exports(backend, module) for backend in backends}
    for name, owners in only.items():
        have = [backend for backend in backends if name in exports[backend]]
        assert have == [b for b in backends if b in owners], f"{module}.{name} is in {have}, expected {owners}"
    shared = {backend: [n for n in names if n not in only] for backend, names in exports.items()}
    for backend in backends[1:]:
        assert shared[backend] == shared[backends[0]], (
            f"lib/{backend}/{module}.py exports {shared[backend]}, lib/{backends[0]}/{module}.py {shared[backends[0]]}"
        )


def _canonical_shapes(backend: str, spec: ModelSpec, names_and_shapes: dict[str, tuple]) -> dict[str, tuple]:
    plan = plan_from_backend(spec.family, backend, names_and_shapes, head=spec.head)
    return {key: transform.canonical_shape(tuple(names_and_shapes[name])) for name, (key, transform) in plan.items()}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.id)
def test_parameters_map_onto_the_same_canonical_keys(suite, spec):
    """Each backend's own parameter names, read back through the conversion table, give exactly the canonical
    keys and shapes the config implies (a tied head's `lm_head.weight` exists only in PyTorch's state_dict)."""
    from twinformers.flax.modeling_utils import flatten_params

    expected = expected_shapes(spec.config(), spec.head)
    tied = {"lm_head.weight"} if "lm_head.weight" in expected and spec.config().tie_word_embeddings else set()
    pt_model, tf_model, flax_model = (suite.model(spec, backend) for backend in ("pt", "tf", "flax"))
    found = {
        "pt": {name: tuple(tensor.shape) for name, tensor in pt_model.state_dict().items()},
        "tf": {v.path.split("/", 1)[1]: tuple(v.shape) for v in tf_model.weights},
        "flax": {path: tuple(leaf.shape) for path, leaf in flatten_params(flax_model.params_shape_tree).items()},
    }
    for backend, names in found.items():
        canonical = _canonical_shapes(backend, spec, names)
        want = expected if backend == "pt" else {k: v for k, v in expected.items() if k not in tied}
        assert canonical == want, (
            f"{spec.id} {backend}: missing {sorted(set(want) - set(canonical))}, "
            f"extra {sorted(set(canonical) - set(want))}, "
            f"shapes differ {sorted(k for k in want if k in canonical and canonical[k] != want[k])}"
        )
