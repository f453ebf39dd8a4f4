"""Edge cases of issue 16 through the public API and the CLI: an empty pytorch_model.bin, max_new_tokens=0."""

import pytest

torch = pytest.importorskip("torch")

import twinformers.pt as pt  # noqa: E402
from helpers import tiny_config  # noqa: E402
from twinformers.cli.main import main  # noqa: E402
from twinformers.errors import CheckpointError, InputError  # noqa: E402


def test_empty_pytorch_model_bin_is_a_checkpoint_error_naming_it(tmp_path, capsys):
    tiny_config("gpt2").save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        pt.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "Traceback" not in err


def test_max_new_tokens_zero_raises_as_hugging_face(capsys):
    model = pt.GPT2LMHeadModel(tiny_config("gpt2"))
    with pytest.raises(InputError, match="`max_new_tokens` must be greater than 0, but is 0"):
        model.generate(torch.ones((1, 3), dtype=torch.long), max_new_tokens=0)
    assert main(["generate", "def", "--max-new-tokens", "0"]) == 1  # the embedded model
    assert "max_new_tokens" in capsys.readouterr().err
