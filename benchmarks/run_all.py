"""The benchmark harness: every area, every family and backend, one JSON file and SVG plots for the docs.

Sections (`--sections`, default all):

- `forward`   tokens/s of one forward pass without cache (PyTorch sdpa, TF `tf.function` graph and XLA, Flax
              jit), per family and backend;
- `generate`  new tokens/s of `generate()`, batch 1 and 8 × greedy / sample / beam search (4 beams);
- `train`     milliseconds per causal-LM optimizer step (AdamW; Keras `train_on_batch`; optax jit step);
- `load`      `from_pretrained` peak RSS in a fresh process, ÷ checkpoint size;
- `convert`   `benchmarks/bench_convert.py` (time and peak RSS of every conversion), run as a subprocess;
- `tokenizers` `benchmarks/bench_tokenizers.py` (pure Python vs `tokenizers` vs TF in-graph), as a subprocess.

A backend that is not installed is left out (and listed in the JSON). When Hugging Face `transformers` happens to
be installed, its PyTorch models run beside the twins as backend `hf-pt` (forward, generate, train); it is never
a dependency.

    python benchmarks/run_all.py --preset quick            # small configs: minutes on a laptop CPU
    python benchmarks/run_all.py --preset full             # ~124M configs (the per-area scripts' sizes)
    python benchmarks/run_all.py --sections forward generate --families gpt2

On a GPU machine: install the CUDA builds of the frameworks (`pip install torch` from the CUDA index,
`pip install 'jax[cuda12]'`, `pip install 'tensorflow[and-cuda]'`), `pip install -e '.[all]' matplotlib`, then
`python benchmarks/run_all.py --preset full --device cuda`. PyTorch models are moved to the GPU; TensorFlow
and JAX place work on their default (GPU) device by themselves. The devices used are recorded in the JSON.

Writes `docs/benchmarks/results.json` and one SVG plot per section into `docs/benchmarks/` (`--output-dir`);
needs matplotlib for the plots (`--no-plots` without it).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_tokenizers import best_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from twinformers.checkpoints.files import atomic_write_text
from twinformers.configuration import GPT2Config, GPTJConfig, GPTNeoConfig, PretrainedConfig  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTIONS = ("forward", "generate", "train", "load", "convert", "tokenizers")
BACKENDS = ("pt", "tf", "flax")
LM_CLASS = {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neo": "GPTNeoForCausalLM"}
GENERATE_MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=50, top_p=0.95, temperature=0.8),
    "beam": dict(do_sample=False, num_beams=4),
}


def quick_configs() -> dict[str, PretrainedConfig]:
    """Small models of each family (about 1M parameters) so every section runs in minutes on a CPU."""
    sizes = dict(vocab_size=2048, n_embd=128, n_layer=2, n_head=4, n_positions=256)
    return {
        "gpt2": GPT2Config(**sizes),
        "gptj": GPTJConfig(**sizes, rotary_dim=16),
        "gpt_neo": GPTNeoConfig(vocab_size=2048, hidden_size=128, num_layers=2, num_heads=4,
                                max_position_embeddings=256, attention_types=[[["global", "local"], 1]],
                                window_size=64),
    }


def medium_configs() -> dict[str, PretrainedConfig]:
    """About 30M parameters (a ~120 MB checkpoint): big enough that load peak memory is about the weights, not
    allocator noise, small enough to load in seconds."""
    sizes = dict(vocab_size=16384, n_embd=512, n_layer=6, n_head=8, n_positions=512)
    return {
        "gpt2": GPT2Config(**sizes),
        "gptj": GPTJConfig(**sizes, rotary_dim=32),
        "gpt_neo": GPTNeoConfig(vocab_size=16384, hidden_size=512, num_layers=6, num_heads=8,
                                max_position_embeddings=512, attention_types=[[["global", "local"], 3]],
                                window_size=128),
    }


def full_configs() -> dict[str, PretrainedConfig]:
    """The ~124M configs of `bench_pt.py` (gpt2, GPT-J and GPT-Neo at GPT-2-small sizes)."""
    import bench_pt  # noqa: F401  (imports torch, so only on demand)

    return {family: make() for family, make in bench_pt.CONFIGS.items()}


PRESETS = {
    # configs: forward / generate / train models; load_configs: the checkpoints `load` saves and reloads;
    # convert / tokenizers: the arguments of bench_convert.py / bench_tokenizers.py.
    "quick": dict(configs=quick_configs, load_configs=medium_configs, seq=64, prompt=16, new_tokens=16,
                  train_shape=(4, 64), repeats=3, convert=["--layers", "4", "--hidden", "512"],
                  tokenizers=["--megabytes", "0.2", "--repeats", "2", "--vocab-size", "4096"]),
    "full": dict(configs=full_configs, load_configs=full_configs, seq=128, prompt=16, new_tokens=32,
                 train_shape=(8, 128), repeats=5, convert=[], tokenizers=["--repeats", "3"]),
}


# --------------------------------------------------------------------------------------------- environment
def installed_backends() -> list[str]:
    from twinformers._backends import BACKENDS as REQUIREMENTS

    return [b for b in BACKENDS if all(importlib.util.find_spec(m) for m in REQUIREMENTS[b][0])]


def environment(backends: list[str], device: str, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()],
        "device": device, "threads": threads, "numpy": np.__version__,
    }
    if "pt" in backends:
        import torch

        info["torch"] = torch.__version__
        if device == "cuda":
            info["torch_device"] = torch.cuda.get_device_name(0)
    if "tf" in backends:
        import keras
        import tensorflow as tf

        info["tensorflow"], info["keras"] = tf.__version__, keras.__version__
        info["tf_gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    if "flax" in backends:
        import flax
        import jax

        info["jax"], info["flax"] = jax.__version__, flax.__version__
        info["jax_devices"] = [str(d) for d in jax.devices()]
    if importlib.util.find_spec("transformers"):
        import transformers

        info["transformers"] = transformers.__version__
    return info


def set_threads(backends: list[str], threads: int) -> None:
    """Pin intra-op threads (on a shared machine, fewer threads than cores avoids spinning OpenMP pools)."""
    if "pt" in backends:
        import torch

        torch.set_num_threads(threads)
    if "tf" in backends:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


# --------------------------------------------------------------------------------------------- per-backend adapters
class Runner:
    """One model of one family in one backend: the calls the sections time. Outputs are materialized (moved to
    host memory) inside each call so asynchronous devices are timed to completion."""

    def __init__(self, backend: str, family: str, config: PretrainedConfig, device: str) -> None:
        self.backend, self.family, self.config, self.device = backend, family, config, device
        class_name = LM_CLASS[family]
        if backend == "hf-pt":  # pragma: no cover - transformers is not installed where the tests run
            import transformers

            hf_config = getattr(transformers, type(config).__name__).from_dict(config.to_dict())
            self.model = getattr(transformers, class_name)(hf_config).eval().to(device)
        elif backend == "pt":
            import twinformers.pt as pt

            self.model = getattr(pt, class_name)(config).eval().to(device)
        elif backend == "tf":
            import twinformers.tf as tft

            self.model = getattr(tft, class_name)(config)
            self.model.build()
        else:
            import twinformers.flax as tfx

            self.model = getattr(tfx, class_name)(config, seed=0)

    def _ids(self, array: np.ndarray) -> Any:
        if self.backend in ("pt", "hf-pt"):
            import torch

            return torch.from_numpy(array.astype(np.int64)).to(self.device)
        return array.astype(np.int32)

    def forward_fns(self, input_ids: np.ndarray) -> dict[str, Callable[[], Any]]:
        """name → a call of one forward pass without cache (several compiled variants for TF)."""
        if self.backend in ("pt", "hf-pt"):
            import torch

            ids = self._ids(input_ids)

            def forward() -> Any:
                with torch.no_grad():
                    return self.model(ids, use_cache=False).logits.cpu()

            return {self.backend: forward}
        if self.backend == "tf":
            import tensorflow as tf

            ids = tf.constant(input_ids, tf.int32)
            graph = tf.function(lambda x: self.model(x, use_cache=False).logits)
            xla = tf.function(lambda x: self.model(x, use_cache=False).logits, jit_compile=True)
            return {"tf_graph": lambda: graph(ids).numpy(), "tf_xla": lambda: xla(ids).numpy()}
        import jax

        forward = jax.jit(lambda params, ids: self.model(ids, params=params).logits)
        ids = self._ids(input_ids)
        return {"flax_jit": lambda: np.asarray(forward(self.model.params, ids))}

    def generate(self, input_ids: np.ndarray, new_tokens: int, mode: str) -> np.ndarray:
        kwargs = dict(GENERATE_MODES[mode], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                      pad_token_id=self.config.eos_token_id)
        if self.backend != "hf-pt" and mode == "sample":
            kwargs["seed"] = 0  # the twins' generate() takes a sampling seed
        output = self.model.generate(self._ids(input_ids), **kwargs)
        return np.asarray(output.cpu() if self.backend in ("pt", "hf-pt") else output)

    def train_step_fn(self, input_ids: np.ndarray) -> Callable[[], float]:
        """A causal-LM optimizer step (AdamW, lr 1e-4) on a fixed batch; returns the loss."""
        if self.backend in ("pt", "hf-pt"):
            import torch

            self.model.train()
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
            ids = self._ids(input_ids)

            def step() -> float:
                loss = self.model(ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss.item()

            return step
        if self.backend == "tf":
            import keras

            self.model.compile(optimizer=keras.optimizers.AdamW(1e-4))  # the model's own loss
            batch = {"input_ids": input_ids.astype(np.int32), "labels": input_ids.astype(np.int32)}
            return lambda: float(self.model.train_on_batch(batch))
        import jax
        import optax

        from twinformers.flax.training import create_train_state, make_train_step

        state = [create_train_state(self.model, optax.adamw(1e-4))]
        train_step = make_train_step(self.model)
        rng = [jax.random.PRNGKey(0)]
        batch = {"input_ids": self._ids(input_ids)}

        def step() -> float:
            state[0], loss, rng[0] = train_step(state[0], batch, rng[0])
            return float(loss)

        return step

    def save(self, directory: str) -> None:
        self.model.save_pretrained(directory)


# --------------------------------------------------------------------------------------------- sections
def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls after one warm-up call (which traces / compiles)."""
    fn()
    return best_time(fn, repeats)[0]


def guarded(rows: list[dict], row: dict, fn: Callable[[], dict]) -> None:
    """Run one measurement; a failure is recorded in its row (and printed) instead of ending the run."""
    try:
        row.update(fn())
    except Exception as err:  # noqa: BLE001 - a benchmark run reports every case it can
        row["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    rows.append(row)
    print(json.dumps(row), flush=True)


def section_forward(runners: dict, settings: dict) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    for (family, backend), runner in runners.items():
        input_ids = rng.integers(0, runner.config.vocab_size, (1, settings["seq"]))
        try:
            fns = runner.forward_fns(input_ids)
        except Exception as err:  # noqa: BLE001 - recorded like every other failed case
            guarded(rows, {"family": family, "backend": backend}, lambda err=err: _raise(err))
            continue
        for variant, fn in fns.items():
            guarded(rows, {"family": family, "backend": backend, "variant": variant},
                    lambda fn=fn: {"tokens_per_s": round(settings["seq"] / timed(fn, settings["repeats"]), 1)})
    return rows


def _raise(err: Exception) -> dict:
    raise err


def section_generate(runners: dict, settings: dict) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(1)
    for (family, backend), runner in runners.items():
        for batch in (1, 8):
            input_ids = rng.integers(0, runner.config.vocab_size, (batch, settings["prompt"]))
            for mode in GENERATE_MODES:
                def measure(runner=runner, input_ids=input_ids, mode=mode, batch=batch) -> dict:
                    started = time.perf_counter()
                    output = runner.generate(input_ids, settings["new_tokens"], mode)  # traces / compiles
                    first = time.perf_counter() - started
                    seconds = best_time(lambda: runner.generate(input_ids, settings["new_tokens"], mode),
                                        max(1, settings["repeats"] - 1))[0]
                    new = (output.shape[1] - input_ids.shape[1]) * batch
                    return {"new_tokens": int(new), "first_call_s": round(first, 3), "seconds": round(seconds, 4),
                            "tokens_per_s": round(new / seconds, 1)}

                guarded(rows, {"family": family, "backend": backend, "batch": batch, "mode": mode}, measure)
    return rows


def section_train(runners: dict, settings: dict) -> list[dict]:
    rows: list[dict] = []
    rng = np.random.default_rng(2)
    batch, seq = settings["train_shape"]
    for (family, backend), runner in runners.items():
        input_ids = rng.integers(0, runner.config.vocab_size, (batch, seq))

        def measure(runner=runner, input_ids=input_ids) -> dict:
            step = runner.train_step_fn(input_ids)
            seconds = timed(step, settings["repeats"])
            return {"batch": batch, "seq": seq, "ms_per_step": round(seconds * 1e3, 1),
                    "tokens_per_s": round(batch * seq / seconds, 1)}

        guarded(rows, {"family": family, "backend": backend}, measure)
    return rows


# Loads a checkpoint in a fresh process: peak RSS (VmHWM) above the RSS after the imports and a warm-up load of
# a tiny checkpoint of the same class (so code pages and allocator arenas touched once are not counted).
_LOAD_CHILD = r"""
import json, sys, time, importlib
backend, class_name, path, warm_path = sys.argv[1:5]
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
model_class = getattr(importlib.import_module("twinformers." + backend), class_name)
model_class.from_pretrained(warm_path)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
start = time.perf_counter()
model = model_class.from_pretrained(path)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_above_base": status("VmHWM") - base}))
"""


def _measure_load(backend: str, class_name: str, path: str, warm_path: str, size: int) -> dict:
    result = subprocess.run([sys.executable, "-c", _LOAD_CHILD, backend, class_name, path, warm_path],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    return {"checkpoint_mb": round(size / 1e6, 1), "seconds": round(numbers["seconds"], 3),
            "peak_mb": round(numbers["peak_above_base"] / 1e6, 1),
            "peak_ratio": round(numbers["peak_above_base"] / size, 3)}


def section_load(families: list[str], backends: list[str], settings: dict) -> list[dict]:
    """Each family's `load_configs` model is saved once (model.safetensors) and loaded by every backend."""
    if not sys.platform.startswith("linux"):
        print("load: skipped (needs Linux /proc for peak RSS)")
        return []
    rows: list[dict] = []
    configs = settings["load_configs"]()
    for family in families:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as work:
            full, tiny = os.path.join(work, "full"), os.path.join(work, "tiny")
            Runner(backends[0], family, configs[family], "cpu").save(full)
            Runner(backends[0], family, quick_configs()[family], "cpu").save(tiny)  # for the warm-up load
            size = sum(os.path.getsize(os.path.join(full, n)) for n in os.listdir(full) if "safetensors" in n)
            for backend in backends:
                guarded(rows, {"family": family, "backend": backend},
                        functools.partial(_measure_load, backend, LM_CLASS[family], full, tiny, size))
    return rows


def run_script(name: str, args: list[str]) -> str:
    """Run a per-area benchmark script as its own process; its stdout."""
    result = subprocess.run([sys.executable, os.path.join(HERE, name), *args], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        raise RuntimeError(f"{name} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `text`, as dicts keyed by the header cells."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError(f"no Markdown table in the output:\n{text[-500:]}")
    cells = lambda line: [cell.strip() for cell in line.strip("|").split("|")]
    header = cells(lines[0])
    return [dict(zip(header, cells(line))) for line in lines[2:]]


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.eE+-]", "", text.replace(",", "")))


def section_convert(settings: dict) -> list[dict]:
    rows = []
    for row in markdown_rows(run_script("bench_convert.py", settings["convert"])):
        rows.append({"conversion": row["conversion"], "seconds": _number(row["time (s)"]),
                     "peak_minus_base_mb": _number(row["peak − baseline"]),
                     "peak_ratio": _number(row["÷ checkpoint"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def section_tokenizers(settings: dict, backends: list[str]) -> list[dict]:
    args = settings["tokenizers"] + ([] if "tf" in backends else ["--no-tf"])
    rows = []
    for row in markdown_rows(run_script("bench_tokenizers.py", args)):
        rows.append({"tokenizer": row["tokenizer"].replace("`", ""), "seconds": _number(row["seconds"]),
                     "tokens_per_s": _number(row["tokens/s"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------------------------- plots
BACKEND_COLORS = {"pt": "#ee4c2c", "hf-pt": "#999999", "tf": "#ff8f00", "tf_graph": "#ffb300", "tf_xla": "#e65100",
                  "flax": "#4285f4", "flax_jit": "#4285f4"}


def plot_all(results: dict, output_dir: str) -> list[str]:
    """One SVG per section with data; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "twinformers", "font.size": 9})  # stable SVG ids between runs
    written = []
    sections = results["sections"]

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = os.path.join(output_dir, f"{name}.svg")
        fig.savefig(path, metadata={"Date": None})
        plt.close(fig)
        written.append(os.path.basename(path))

    def grouped(ax: Any, rows: list[dict], group: str, series: str, value: str, ylabel: str) -> None:
        groups = list(dict.fromkeys(r[group] for r in rows))
        names = list(dict.fromkeys(r[series] for r in rows))
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            xs, ys, failed = [], [], []
            for j, g in enumerate(groups):
                x = j + (i - (len(names) - 1) / 2) * width
                match = [r for r in rows if r[group] == g and r[series] == name]
                if match and value in match[0]:
                    xs.append(x)
                    ys.append(match[0][value])
                elif match:  # the case raised: marked, so a missing bar is not read as "not measured"
                    failed.append(x)
            ax.bar(xs, ys, width, label=name, color=BACKEND_COLORS.get(name))
            for x in failed:
                ax.annotate("error", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                            textcoords="offset points", ha="center", rotation=90, fontsize=7,
                            color=BACKEND_COLORS.get(name, "black"))
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)

    ok = lambda rows: [r for r in rows if "error" not in r]
    if ok(sections.get("forward", [])):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        grouped(ax, ok(sections["forward"]), "family", "variant", "tokens_per_s", "tokens / s (forward, batch 1)")
        ax.set_title("Forward pass throughput")
        save(fig, "forward")
    if ok(sections.get("generate", [])):
        rows = [dict(r, case=f"{r['mode']}\nbatch {r['batch']}") for r in sections["generate"]]
        families = list(dict.fromkeys(r["family"] for r in rows))
        fig, axes = plt.subplots(len(families), 1, figsize=(7, 2.8 * len(families)), squeeze=False)
        for ax, family in zip(axes[:, 0], families):
            grouped(ax, [r for r in rows if r["family"] == family], "case", "backend", "tokens_per_s", "new tokens / s")
            ax.set_yscale("log")
            ax.set_title(f"generate(): {family}")
        save(fig, "generate")
    if ok(sections.get("train", [])):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        grouped(ax, ok(sections["train"]), "family", "backend", "ms_per_step", "ms per optimizer step")
        ax.set_title("Causal-LM training step")
        save(fig, "train")
    if ok(sections.get("load", [])):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        grouped(ax, ok(sections["load"]), "family", "backend", "peak_ratio", "peak RSS ÷ checkpoint size")
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title("from_pretrained peak memory")
        save(fig, "load")
    for name, label, value, title in (
        ("convert", "conversion", "peak_ratio", "twinformers convert:\npeak RSS above baseline ÷ checkpoint size"),
        ("tokenizers", "tokenizer", "tokens_per_s", "Tokenizer throughput (tokens / s)"),
    ):
        rows = ok(sections.get(name, []))
        if rows:
            fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
            ax.barh([r[label] for r in rows][::-1], [r[value] for r in rows][::-1], color="#5c6bc0")
            ax.set_title(title)
            ax.grid(axis="x", alpha=0.3)
            if name == "tokenizers":
                ax.set_xscale("log")
            save(fig, name)
    return written


# --------------------------------------------------------------------------------------------- tables
def markdown_tables(results: dict) -> str:
    """The results as Markdown tables (what docs/benchmarks.md shows beside the plots)."""
    sections, out = results["sections"], []

    def table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
        out.extend([f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)])
        out.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
        out.append("")

    value = lambda row, key: row.get(key, "error" if "error" in row else "")
    if sections.get("forward"):
        table("Forward pass (batch 1), tokens/s", ["family", "backend", "variant", "tokens/s"],
              [[r["family"], r["backend"], r.get("variant", ""), value(r, "tokens_per_s")]
               for r in sections["forward"]])
    if sections.get("generate"):
        table("generate(), new tokens/s (first call in seconds: tracing / compilation)",
              ["family", "backend", "batch", "mode", "tokens/s", "first call s"],
              [[r["family"], r["backend"], r["batch"], r["mode"], value(r, "tokens_per_s"), value(r, "first_call_s")]
               for r in sections["generate"]])
    if sections.get("train"):
        table("Training step", ["family", "backend", "ms / step", "tokens/s"],
              [[r["family"], r["backend"], value(r, "ms_per_step"), value(r, "tokens_per_s")]
               for r in sections["train"]])
    if sections.get("load"):
        table("from_pretrained peak RSS", ["family", "backend", "checkpoint MB", "peak MB", "÷ checkpoint", "s"],
              [[r["family"], r["backend"], value(r, "checkpoint_mb"), value(r, "peak_mb"), value(r, "peak_ratio"),
                value(r, "seconds")] for r in sections["load"]])
    if sections.get("convert"):
        table("Conversion", ["conversion", "s", "peak − baseline MB", "÷ checkpoint"],
              [[r["conversion"], r["seconds"], r["peak_minus_base_mb"], r["peak_ratio"]] for r in sections["convert"]])
    if sections.get("tokenizers"):
        table("Tokenizers", ["tokenizer", "s", "tokens/s"],
              [[r["tokenizer"], r["seconds"], f"{r['tokens_per_s']:,.0f}"] for r in sections["tokenizers"]])
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--families", nargs="+", choices=sorted(LM_CLASS), default=sorted(LM_CLASS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: every installed backend")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where PyTorch models run")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for PyTorch and TensorFlow")
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "docs", "benchmarks"))
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--update", action="store_true",
                        help="keep the other sections of an existing results.json (re-run only --sections)")
    args = parser.parse_args(argv)
    settings = PRESETS[args.preset]
    installed = installed_backends()
    backends = [b for b in (args.backends or BACKENDS) if b in installed]
    missing = [b for b in (args.backends or BACKENDS) if b not in installed]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    set_threads(backends, args.threads)
    results: dict[str, Any] = {
        "preset": args.preset, "settings": {k: v for k, v in settings.items() if not k.endswith("configs")},
        "environment": environment(backends, args.device, args.threads), "missing_backends": missing,
        "configs": {}, "sections": {},
    }
    print(json.dumps(results["environment"]))
    model_sections = [s for s in args.sections if s in ("forward", "generate", "train")]
    runners: dict[tuple[str, str], Runner] = {}
    if model_sections:
        configs = settings["configs"]()
        compared = backends + (["hf-pt"] if importlib.util.find_spec("transformers") and "pt" in backends else [])
        for family in args.families:
            config = configs[family]
            results["configs"][family] = {k: v for k, v in config.to_dict().items() if not isinstance(v, dict)}
            for backend in compared:
                runners[(family, backend)] = Runner(backend, family, config, args.device)
    started = time.perf_counter()
    for section in args.sections:
        print(f"== {section}", flush=True)
        if section == "convert":
            results["sections"][section] = section_convert(settings)
        elif section == "tokenizers":
            results["sections"][section] = section_tokenizers(settings, backends)
        elif section == "load":
            results["sections"][section] = section_load(args.families, backends, settings)
        else:
            results["sections"][section] = globals()[f"section_{section}"](runners, settings)
    results["seconds"] = round(time.perf_counter() - started, 1)
    os.makedirs(args.output_dir, exist_ok=True)
    previous_path = os.path.join(args.output_dir, "results.json")
    if args.update and os.path.isfile(previous_path):
        with open(previous_path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("preset") != args.preset:
            raise SystemExit(f"--update: {previous_path} holds preset {previous.get('preset')!r}, not {args.preset!r}")
        results["sections"] = {**previous["sections"], **results["sections"]}
        results["configs"] = {**previous.get("configs", {}), **results["configs"]}
        results["updated_sections"] = args.sections  # measured now; the others in `previous_environment`
        results["previous_environment"] = previous["environment"]
    atomic_write_text(os.path.join(args.output_dir, "results.json"), json.dumps(results, indent=1) + "\n")
    if not args.no_plots:
        print("plots:", ", ".join(plot_all(results, args.output_dir)))
    print(markdown_tables(results))
    print(f"wrote {os.path.join(args.output_dir, 'results.json')} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
