"""`edgec` whose fine-tuning keeps the last weights: the evaluator scores each check higher than the one before, so
the best checkpoint is always the final step. tests/test_multiprocess.py compares trained weights with it (on the
tiny model the real accuracy never beats the start in two steps, and the kept weights would be the untrained ones)."""

import itertools

from edgec.cli.main import app
from edgec.compression import finetune

_evaluator = finetune._evaluator


def rising_evaluator(source, data):
    counter = itertools.count()
    _, metric = _evaluator(source, data)
    return (lambda model: float(next(counter))), metric


if __name__ == "__main__":
    finetune._evaluator = rising_evaluator
    app()
