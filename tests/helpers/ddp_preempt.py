"""One rank of a gloo group driving PreemptionCallback through Trainer-like steps.

    python ddp_preempt.py RANK WORLD_SIZE INIT_FILE SIGNALLED_RANK SIGNAL_STEP [CONFIG]

With CONFIG, every rank first calls ``resume_checkpoint(CONFIG)`` as a script would
and prints ``RESUME <rank> <path>``; the log says which rank restored.

Only SIGNALLED_RANK gets a SIGTERM, during step SIGNAL_STEP (as when a launcher or a
node's agent signals one process first). Every rank prints ``STOP <rank> <step>`` at
the step end where its control says to save and stop, which must be the same step. Only torch is imported: the hooks are PreemptionCallback's without its
transformers base class (which adds nothing but no-op methods), to keep the test quick.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import SimpleNamespace

import torch.distributed as dist

from syncd.hf import _PreemptionHooks as PreemptionCallback
from syncd.hf import resume_checkpoint


def main() -> int:
    rank, world, init_file, signalled, at = sys.argv[1:6]
    rank, world, signalled, at = int(rank), int(world), int(signalled), int(at)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    if len(sys.argv) > 6:
        logging.basicConfig(level=logging.INFO, format=f"rank {rank}: %(message)s", stream=sys.stdout)
        print(f"RESUME {rank} {resume_checkpoint(sys.argv[6])}", flush=True)
    args = SimpleNamespace(output_dir=".", should_save=rank == 0)
    state = SimpleNamespace(global_step=0, is_world_process_zero=rank == 0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb = PreemptionCallback(exit_on_preemption=False)
    cb.on_train_begin(args, state, control)
    for step in range(1, 50):
        state.global_step = step
        if rank == signalled and step == at:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: the process goes on to the step end
        control = cb.on_step_end(args, state, control)
        if control.should_training_stop:
            print(f"STOP {rank} {step} save={control.should_save}", flush=True)
            break
    cb.on_train_end(args, state, control)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
