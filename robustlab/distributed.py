"""torch.distributed glue: process-group setup from torchrun's environment, and `launch`.

The backend follows the tensors' device (``backend_for``): NCCL when the run's device is a GPU, gloo
on the CPU (NCCL cannot move CPU tensors, so it is never chosen for a CPU run, even where CUDA exists).
On GPUs each rank takes its own (``LOCAL_RANK`` -> ``cuda:LOCAL_RANK``, see ``runtime.resolve_device``),
made current with ``torch.cuda.set_device`` before the process group starts; on the CPU each rank runs
one intra-op thread. Collectives time out after ``timeout`` seconds, so a rank that dies makes the
others fail with a clear error instead of hanging.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

from .runtime import resolve_device

log = logging.getLogger(__name__)


def backend_for(device: Any) -> str:
    """The process-group backend for tensors on `device`: ``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(timeout: float = 300.0, device: Any = None) -> int:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1); returns the rank.

    `device`: the run's device (default: ``resolve_device("auto")``, this rank's GPU when CUDA exists);
    a CUDA device is made current before the group starts, and it chooses the backend."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return dist.get_rank() if dist.is_initialized() else 0
    device = resolve_device("auto" if device is None else device)
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before init: NCCL binds this rank's communicator to its GPU
    else:
        torch.set_num_threads(int(os.environ.get("ROBUSTLAB_THREADS", "1")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    rank = dist.get_rank()
    if rank != 0:
        logging.getLogger("robustlab").setLevel(logging.WARNING)
    log.info("process group: %s, world size %d, device %s", backend, dist.get_world_size(), device)
    return rank


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def with_device(command: list[str], device: str | None) -> list[str]:
    """`command` with ``--device DEVICE`` appended, unless it names its own device or `device` is None/auto."""
    if device in (None, "auto") or any(a == "--device" or a.startswith("--device=") for a in command):
        return list(command)
    return [*command, "--device", device]


def launch(command: list[str], nproc: int, nnodes: str = "1", rdzv_endpoint: str | None = None,
           threads: int = 1, extra: list[str] | None = None, device: str | None = None) -> int:
    """Run ``robustlab <command>`` on `nproc` processes with torchrun; returns its exit code.
    `device` (``--device`` of ``launch``) is passed on to the command; ``cuda`` is one GPU per rank."""
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv_endpoint:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        args += ["--standalone"]
    # "--": torchrun's parser must not read the command's options (it would take --n for --nnodes)
    args += ["-m", "robustlab.cli", "--", *(extra or []), *with_device(command, device)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ROBUSTLAB_THREADS": str(threads)}
    log.info("launching: %s", " ".join(args))
    proc = subprocess.run(args, env=env)
    if proc.returncode != 0:
        log.error("torchrun exited with %d: a rank failed (see its traceback above)", proc.returncode)
    return proc.returncode
