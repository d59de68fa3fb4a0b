"""The exit codes the README promises, from the one function the three programs (``spineseg``,
``python -m spineseg.training``, the batch program) end with: 2 bad input, 3 model problem, 130 interrupted."""

from __future__ import annotations

import pytest

from spineseg.errors import (CancelledError, DiskFullError, InputError, ModelError, SpineSegError, error_line,
                             exit_code)


@pytest.mark.parametrize("error, code", [
    (InputError("no such file"), 2),
    (DiskFullError("out", "no space"), 2),
    (SpineSegError("training stopped: the loss is nan"), 2),
    (ValueError("--series must name one series"), 2),
    (ModelError("weights do not match their sha256"), 3),
    (CancelledError(), 130),
    (KeyboardInterrupt(), 130),
    (MemoryError(), 1),
    (RuntimeError("CUDA failure"), 1),
])
def test_each_error_ends_with_the_promised_code(error, code):
    assert exit_code(error) == code


def test_the_line_names_a_model_problem_as_one():
    assert error_line("spineseg", ModelError("corrupt weights")) == "spineseg: model error: corrupt weights"
    assert error_line("SpineSeg batch", InputError("not a CT")) == "SpineSeg batch: error: not a CT"
