"""torch.distributed glue: process-group setup from torchrun's environment, and `launch`.

gloo on CPU, nccl on GPU; one intra-op thread per rank on CPU. Collectives time out after
``timeout`` seconds, so a rank that dies makes the others fail with a clear error instead of hanging.
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_from_env(timeout: float = 300.0) -> int:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1); returns the rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return dist.get_rank() if dist.is_initialized() else 0
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        torch.set_num_threads(int(os.environ.get("ROBUSTLAB_THREADS", "1")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    rank = dist.get_rank()
    if rank != 0:
        logging.getLogger("robustlab").setLevel(logging.WARNING)
    log.info("process group: %s, world size %d", backend, dist.get_world_size())
    return rank


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(command: list[str], nproc: int, nnodes: str = "1", rdzv_endpoint: str | None = None,
           threads: int = 1, extra: list[str] | None = None) -> int:
    """Run ``robustlab <command>`` on `nproc` processes with torchrun; returns its exit code."""
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv_endpoint:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        args += ["--standalone"]
    # "--": torchrun's parser must not read the command's options (it would take --n for --nnodes)
    args += ["-m", "robustlab.cli", "--", *(extra or []), *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ROBUSTLAB_THREADS": str(threads)}
    log.info("launching: %s", " ".join(args))
    proc = subprocess.run(args, env=env)
    if proc.returncode != 0:
        log.error("torchrun exited with %d: a rank failed (see its traceback above)", proc.returncode)
    return proc.returncode
