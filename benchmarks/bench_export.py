"""Serving benchmark: greedy decode tokens/s of the ONNX export in ONNX Runtime (CPU) against the PyTorch twin's
`generate`, measured in the same process, interleaved, best of `--repeats`.

A ~124M GPT-2 config with random weights (speed does not depend on the values; min_new_tokens keeps EOS from
ending a run early), a 64-token prompt, 32 new tokens, batch 1, float32. ONNX Runtime runs the loop of
docs/serving.md (prefill graph, then one decode-graph call per token with the KV cache). Both use `--threads`
intra-op threads (default 1: on a shared machine a parallel op waiting for a descheduled thread stalls).

Usage: python benchmarks/bench_export.py [--family gpt2|gptj|gpt_neo] [--layers N] [--repeats 3] [--threads 1]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

PROMPT, NEW = 64, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="gpt2", choices=("gpt2", "gptj", "gpt_neo"))
    parser.add_argument("--layers", type=int, default=12, help="decoder layers (default 12, the 124M size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import onnxruntime as ort
    import torch

    import twinformers.pt as tpt
    from twinformers.configuration import CONFIG_MAPPING
    from twinformers.export import export_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = {"gpt2": dict(n_layer=args.layers), "gptj": dict(n_embd=768, n_layer=args.layers, n_head=12, rotary_dim=64),
             "gpt_neo": dict(hidden_size=768, num_layers=args.layers, num_heads=12,
                             attention_types=[[["global", "local"], max(args.layers // 2, 1)]])}[args.family]
    config = CONFIG_MAPPING[args.family](**sizes)
    model = getattr(tpt, {"gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM",
                          "gpt_neo": "GPTNeoForCausalLM"}[args.family])(config).eval()
    prompt = np.random.default_rng(0).integers(0, 50000, size=(1, PROMPT)).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_model(model, os.path.join(tmp, "onnx"), "onnx")
        export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        prefill = ort.InferenceSession(os.path.join(tmp, "onnx", "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        decode = ort.InferenceSession(os.path.join(tmp, "onnx", "decode.onnx"), options,
                                      providers=["CPUExecutionProvider"])
        past_names = [i.name for i in decode.get_inputs()][2:]

        def run_ort() -> np.ndarray:
            mask = np.ones_like(prompt)
            outputs = prefill.run(None, {"input_ids": prompt, "attention_mask": mask})
            tokens = []
            for _ in range(NEW):
                token = outputs[0][:, -1].argmax(-1)[:, None]
                tokens.append(token)
                mask = np.concatenate([mask, np.ones_like(token)], axis=1)
                outputs = decode.run(None, dict(zip(past_names, outputs[1:]), input_ids=token, attention_mask=mask))
            return np.concatenate(tokens, axis=1)

        def run_pt() -> np.ndarray:
            with torch.no_grad():
                out = model.generate(torch.from_numpy(prompt), do_sample=False, max_new_tokens=NEW,
                                     min_new_tokens=NEW, pad_token_id=0)
            return out[:, PROMPT:].numpy()

        times: dict[str, list[float]] = {"ort": [], "pt": []}
        results = {}
        for _ in range(args.repeats + 1):  # the first round warms both up and is not counted
            for name, fn in (("ort", run_ort), ("pt", run_pt)):
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
    best = {name: min(values[1:]) for name, values in times.items()}
    report = {
        "family": args.family, "layers": args.layers, "threads": args.threads, "prompt": PROMPT, "new_tokens": NEW,
        "export_s": round(export_s, 1),
        "ort_tokens_per_s": round(NEW / best["ort"], 1), "pt_tokens_per_s": round(NEW / best["pt"], 1),
        "ort_over_pt": round(best["pt"] / best["ort"], 2),
        "tokens_identical": bool((results["ort"] == results["pt"]).all()),
        "python": sys.version.split()[0], "torch": torch.__version__, "onnxruntime": ort.__version__,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
