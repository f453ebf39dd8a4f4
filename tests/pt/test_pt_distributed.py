"""DDP and FSDP on CPU (gloo, 2 processes): one training step equals a single-process step on the same global
batch, for every family, with the wrap policy of `twinformers.pt.distributed`."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from pt_testing import FAMILIES, LM_CLASSES, make_model, random_ids  # noqa: E402
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from helpers import assert_close  # noqa: E402
from twinformers.pt.distributed import (  # noqa: E402
    block_classes,
    fsdp_auto_wrap_policy,
    fully_shard_model,
    init_distributed,
)

WORLD_SIZE = 2
GLOBAL_BATCH, SEQ = 4, 7  # each rank gets 2 rows; every row is counted fully, so rank means average to the global mean
LEARNING_RATE = 0.5  # large enough that the step moves every parameter visibly
MODES = ("ddp", "fsdp1", "fsdp2")
CASES = [(mode, family) for mode in MODES for family in FAMILIES]
# All-reduce sums the two ranks' gradients in another order than one process's backward pass: ~1e-7 relative
# on fp32; times the learning rate this stays far below the fp32 equivalence bound, which is kept.
ATOL = 1e-5


def _model_and_batch(family: str):
    model = make_model(LM_CLASSES[family], seed=3).train()  # dropout is off in the tiny configs
    return model, random_ids((GLOBAL_BATCH, SEQ), seed=4)


def _sgd_step(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    optimizer.step()


def _full_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Every parameter, gathered and named as in the plain model (works for DDP, FSDP1 and FSDP2)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().numpy().copy()
            for name, value in state.items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
        for mode, family in CASES:
            model, input_ids = _model_and_batch(family)
            if mode == "ddp":
                model = DistributedDataParallel(model)
            elif mode == "fsdp1":
                model = FullyShardedDataParallel(model, auto_wrap_policy=fsdp_auto_wrap_policy(model),
                                                 device_id=torch.device("cpu"))
            else:
                model = fully_shard_model(model)
            _sgd_step(model, input_ids[rows])
            state = _full_state(model)
            if rank == 0:
                np.savez(os.path.join(out_dir, f"{mode}-{family}.npz"), **state)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> str:
    """Run every case once in 2 spawned gloo processes; rank 0's gathered parameters are written per case."""
    out_dir = tmp_path_factory.mktemp("distributed")
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return str(out_dir)


@pytest.mark.slow
@pytest.mark.parametrize("mode,family", CASES)
def test_one_step_equals_single_process(distributed_results, mode, family):
    model, input_ids = _model_and_batch(family)
    before = {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}
    _sgd_step(model, input_ids)
    expected = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    with np.load(os.path.join(distributed_results, f"{mode}-{family}.npz")) as data:
        actual = dict(data)
    assert sorted(actual) == sorted(expected)
    moved = max(float(np.abs(expected[n] - before[n]).max()) for n in expected if expected[n].dtype.kind == "f")
    assert moved > 1e-2, "the reference step barely moved the parameters; the comparison would prove nothing"
    assert_close(actual, expected, name=f"{mode}-{family}", atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrap_policy_wraps_each_block(family):
    model, _ = _model_and_batch(family)
    (block_class,) = block_classes(model)
    assert block_class.__name__ == {"gpt2": "GPT2Block", "gptj": "GPTJBlock", "gpt_neo": "GPTNeoBlock"}[family]
    policy = fsdp_auto_wrap_policy(model)
    assert policy._module_classes == {block_class}


def test_block_classes_rejects_non_twin():
    with pytest.raises(ValueError, match="contains no transformer block"):
        block_classes(torch.nn.Linear(2, 2))


def test_init_distributed_needs_launcher_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        init_distributed()
