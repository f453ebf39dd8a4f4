"""One adapter file, three backends: an adapter written by the PyTorch twin (random A and B on every
projection, so every mapping matters) gives the same logits in the TF and Flax twins, unmerged and merged, on
deliberately unequal tiny configs with a left-padded batch; adapters saved by each twin hold the same tensors;
and where Hugging Face + PEFT happen to be installed, they give the twins' logits too."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from lora_cases import peft_logits  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import twinformers.flax as fx  # noqa: E402
import twinformers.pt as pt  # noqa: E402
import twinformers.tf as tft  # noqa: E402
from helpers import assert_close, tiny_config  # noqa: E402
from twinformers import LoraConfig  # noqa: E402

# family → (adapter settings): GPT-2's Conv1D layout (fan_in_fan_out), rank-stabilized scaling, a regex target.
ADAPTERS = {
    "gpt2": dict(r=3, lora_alpha=6, target_modules="all-linear", use_rslora=True),
    "gptj": dict(r=2, lora_alpha=5, target_modules=["q_proj", "v_proj", "out_proj", "fc_in", "fc_out"]),
    "gpt_neo": dict(r=4, lora_alpha=4, target_modules=r".*\.(k_proj|out_proj|c_fc)"),
}
BACKENDS = {"pt": pt, "tf": tft, "flax": fx}


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def saved(request, tmp_path_factory):
    """(family, directory): a random PT base model in `base/`, a random adapter on it in `adapter/`."""
    family = request.param
    directory = tmp_path_factory.mktemp(f"lora-{family}")
    torch.manual_seed(0)
    model = pt.AutoModelForCausalLM.from_config(tiny_config(family))
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape) * 0.1
            param.copy_(1.0 + noise if ".ln_" in f".{name}" and name.endswith("weight") else noise)
    model.save_pretrained(directory / "base")
    model.add_adapter(LoraConfig(init_lora_weights=False, **ADAPTERS[family]))
    model.save_adapter(directory / "adapter")
    return family, directory


def inputs():
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, 97, (3, 7))
    attention_mask = np.ones((3, 7), np.int64)
    attention_mask[1, :2] = attention_mask[2, :4] = 0  # left padding
    return input_ids, attention_mask


def adapted_logits(backend: str, directory, merged: bool) -> np.ndarray:
    model = BACKENDS[backend].AutoModelForCausalLM.from_pretrained(directory / "base")
    model.load_adapter(directory / "adapter")
    if merged:
        model.merge_adapter()
    input_ids, attention_mask = inputs()
    if backend == "pt":
        with torch.no_grad():
            return model(torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask)).logits.numpy()
    if backend == "tf":
        return np.asarray(model(input_ids=input_ids, attention_mask=attention_mask).logits)
    return np.asarray(model(input_ids, attention_mask=attention_mask).logits)


@pytest.mark.parametrize("merged", [False, True], ids=["unmerged", "merged"])
def test_same_adapter_file_same_logits_in_every_backend(saved, merged):
    family, directory = saved
    valid = inputs()[1].astype(bool)
    expected = adapted_logits("pt", directory, merged)
    base = pt.AutoModelForCausalLM.from_pretrained(directory / "base")
    with torch.no_grad():
        base_logits = base(torch.tensor(inputs()[0]), attention_mask=torch.tensor(inputs()[1])).logits.numpy()
    assert np.abs(expected - base_logits)[valid].max() > 1e-2, "the adapter changes too little to test anything"
    for backend in ("tf", "flax"):
        assert_close(adapted_logits(backend, directory, merged), expected, f"{family} {backend} vs pt", where=valid)


def test_adapters_saved_by_each_twin_hold_the_same_tensors(saved, tmp_path):
    family, directory = saved
    written = load_file(directory / "adapter" / "adapter_model.safetensors")
    for backend in ("tf", "flax"):
        model = BACKENDS[backend].AutoModelForCausalLM.from_pretrained(directory / "base")
        model.load_adapter(directory / "adapter")
        model.save_adapter(tmp_path / backend)
        again = load_file(tmp_path / backend / "adapter_model.safetensors")
        assert sorted(again) == sorted(written)
        for key, array in written.items():
            np.testing.assert_array_equal(again[key], array, err_msg=f"{backend}: {key}")


def test_twin_adapter_gives_peft_logits_where_peft_is_installed(saved):
    family, directory = saved
    input_ids, attention_mask = inputs()
    reference = {"input_ids": input_ids, "attention_mask": attention_mask}
    expected = peft_logits(str(directory / "base"), str(directory / "adapter"), reference)
    assert_close(adapted_logits("pt", directory, merged=False), expected, f"{family} pt vs PEFT",
                 where=attention_mask.astype(bool))


def test_lora_files_keep_the_twins_in_lockstep():
    """The three lora.py files define the same classes in the same order, and the same LoraLayer / LoraMixin
    methods (Flax adds its functional ones to LoraMixin)."""
    import ast
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib")
    shapes = {}
    for backend in BACKENDS:
        with open(os.path.join(root, backend, "lora.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        shapes[backend] = {node.name: [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
                           for node in tree.body if isinstance(node, ast.ClassDef)}
    for backend in ("tf", "flax"):
        assert list(shapes[backend]) == list(shapes["pt"]) == ["LoraLayer", "LoraMixin"], backend
        layer = [m for m in shapes[backend]["LoraLayer"] if m not in ("build", "call", "forward")]
        assert layer == [m for m in shapes["pt"]["LoraLayer"] if m != "forward"], backend
        hooks = [m for m in shapes[backend]["LoraMixin"] if m.startswith("_")]
        assert hooks == shapes["pt"]["LoraMixin"], backend
