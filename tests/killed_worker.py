"""`python -m vggnet` for torchrun, except that rank KILL_RANK of the first attempt SIGKILLs itself at its KILL_AT_STEP-th step.

The kill lands at a chosen training step (mid-epoch, after a checkpoint) instead of at a moment a
timer happens to hit; everything else is the real command. KILL_AT_STEP=0 kills nothing.
"""

import os
import signal
import sys

import vggnet.train.loop as loop
from vggnet.cli import main

kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"
if kill_at and first_attempt and os.environ.get("RANK") == os.environ.get("KILL_RANK", "1"):
    real_step, steps = loop.train_step, []

    def train_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(*args, **kwargs)

    loop.train_step = train_step

sys.exit(main(sys.argv[1:]))
