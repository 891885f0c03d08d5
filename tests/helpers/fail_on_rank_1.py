"""`edgec` with one failing process: rank 1 raises an EdgecError at its first micro-batch (what a bad shard, a full
disk or a lost node would do), so tests/test_multiprocess.py can check how the run as a whole fails."""

import os

from edgec.cli.main import app
from edgec.compression import training
from edgec.errors import EdgecError

_micro_step = training._Run.micro_step


def _fail_on_rank_1(self, batch):
    if os.environ["RANK"] == "1":
        raise EdgecError("rank 1 failed on purpose (tests/helpers/fail_on_rank_1.py)")
    return _micro_step(self, batch)


training._Run.micro_step = _fail_on_rank_1
app()
