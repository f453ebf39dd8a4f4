"""`twinformers generate`: streams the same text generate() produces, in every installed backend."""

import importlib.util
import io
import json
import subprocess
import sys

import pytest
from _tokenizer_data import train_gpt2_bpe

from twinformers.cli.main import main

BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"needs {m}"))
            for b, m in (("pt", "torch"), ("tf", "tensorflow"), ("flax", "jax"))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-2 with a trained byte-level tokenizer: the text round-trips, so streamed text is checkable."""
    torch = pytest.importorskip("torch")
    from twinformers import GPT2Config, GPT2TokenizerFast
    from twinformers.pt import GPT2LMHeadModel

    directory = str(tmp_path_factory.mktemp("tiny-gpt2"))
    train_gpt2_bpe(directory, vocab_size=300)
    tokenizer = GPT2TokenizerFast.from_pretrained(directory)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=48, n_embd=24, n_layer=2, n_head=3,
                        bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # larger weights than the default init: confident, varied greedy choices
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    return directory, tokenizer


def expected_text(directory, tokenizer, prompt, **settings):
    import torch

    from twinformers.pt import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = model.generate(torch.tensor([tokenizer.encode(prompt)]), pad_token_id=tokenizer.eos_token_id, **settings)
    return tokenizer.decode(ids[0].tolist())


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_streams_the_greedy_continuation(checkpoint, backend, capsys):
    directory, tokenizer = checkpoint
    prompt = "def parse(text):"
    code = main(["generate", directory, prompt, "--backend", backend, "--max-new-tokens", "12"])
    out = capsys.readouterr().out
    assert code == 0
    assert out == expected_text(directory, tokenizer, prompt, max_new_tokens=12) + "\n"
    assert out.startswith(prompt) and len(out) > len(prompt) + 1


def test_generate_sampling_is_seeded(checkpoint, capsys):
    directory, _ = checkpoint
    args = ["generate", directory, "import os", "--max-new-tokens", "10", "--do-sample", "--temperature", "1.5",
            "--top-k", "40", "--top-p", "0.95"]
    outputs = []
    for seed in ("1", "1", "2"):
        assert main(args + ["--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


def test_generate_bad_input_is_a_clear_error(checkpoint, capsys, tmp_path):
    directory, _ = checkpoint
    assert main(["generate", directory, "x", "--max-new-tokens", "100"]) == 1
    assert "more than the model's maximum of 48" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing"), "x"]) == 1
    assert "twinformers generate: error:" in capsys.readouterr().err


def test_generate_without_a_prompt_says_the_prompt_is_missing(capsys):
    assert main(["generate"]) == 1
    err = capsys.readouterr().err
    assert "PROMPT is missing" in err and "MODEL" not in err.split("PROMPT is missing")[0]


def test_generate_reads_the_prompt_from_a_pipe_and_prints_json(checkpoint):
    """A single positional argument with a pipe on stdin is MODEL; --json prints the pipeline's shape."""
    directory, tokenizer = checkpoint
    prompt = "def parse(text):"
    result = subprocess.run(
        [sys.executable, "-m", "twinformers", "generate", directory, "--max-new-tokens", "8", "--json"],
        input=prompt + "\n", capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"generated_text": expected_text(directory, tokenizer, prompt,
                                                                          max_new_tokens=8)}]


def test_generate_flags_reach_generate(checkpoint, capsys, monkeypatch):
    """'-' reads the prompt from stdin; beam search, penalties and several returned sequences print at the end."""
    directory, tokenizer = checkpoint
    prompt = "import os"
    monkeypatch.setattr(sys, "stdin", io.StringIO(prompt))
    flags = ["--num-beams", "3", "--num-return-sequences", "2", "--repetition-penalty", "1.3",
             "--no-repeat-ngram-size", "2", "--min-new-tokens", "4", "--max-new-tokens", "6"]
    assert main(["generate", directory, "-", "--json", *flags]) == 0
    got = [r["generated_text"] for r in json.loads(capsys.readouterr().out)]
    settings = dict(num_beams=3, num_return_sequences=2, repetition_penalty=1.3, no_repeat_ngram_size=2,
                    min_new_tokens=4, max_new_tokens=6)
    import torch

    from twinformers.pt import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory)
    ids = model.generate(torch.tensor([tokenizer.encode(prompt)]), pad_token_id=tokenizer.eos_token_id, **settings)
    assert got == [prompt + tokenizer.decode(row[len(tokenizer.encode(prompt)):].tolist(), skip_special_tokens=True)
                   for row in ids]


def test_generate_stop_ends_the_stream(checkpoint, capsys):
    directory, tokenizer = checkpoint
    prompt = "def parse(text):"
    full = expected_text(directory, tokenizer, prompt, max_new_tokens=20)
    stop = full[len(prompt) + 2 : len(prompt) + 4]  # two characters the continuation contains
    assert main(["generate", directory, prompt, "--max-new-tokens", "20", "--stop", stop]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert stop in out[len(prompt):] and len(out) < len(full)
    assert full.startswith(out)  # the stop-string semantics are tested against a reference in generation_cases


def test_generate_verbose_keeps_native_log_lines(checkpoint, capfd, monkeypatch):
    """Without --verbose, what the frameworks write straight to file descriptor 2 while loading and generating
    (TensorFlow's C++ logs) is dropped and stderr is restored afterwards; with --verbose it shows. The streamed
    text on stdout is the same either way."""
    import os

    from twinformers.pt import AutoModelForCausalLM

    directory, tokenizer = checkpoint
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # restored after the test (the quiet mode sets it)
    original = AutoModelForCausalLM.from_pretrained

    def noisy_load(*args, **kwargs):
        os.write(2, b"I0000 native log line\n")  # as C++ code logs: around Python's sys.stderr
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", noisy_load)
    outputs = {}
    for flags in ([], ["--verbose"]):
        prompt = "def parse(text):"
        assert main(["generate", directory, prompt, "--backend", "pt", "--max-new-tokens", "6", *flags]) == 0
        os.write(2, b"after\n")
        outputs[bool(flags)] = capfd.readouterr()
    quiet, verbose = outputs[False], outputs[True]
    assert "native log line" not in quiet.err and "after" in quiet.err, "quiet: dropped, then stderr restored"
    assert "I0000 native log line" in verbose.err
    assert quiet.out == verbose.out == expected_text(directory, tokenizer, prompt, max_new_tokens=6) + "\n"
