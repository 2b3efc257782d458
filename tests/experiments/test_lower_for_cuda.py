"""experiments/lower_for_cuda.py: every scan op's Mosaic kernels, forward and backward, lower for
CUDA on a machine without a GPU."""

import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import lower_for_cuda  # noqa: E402
from pallas_kernels.mosaic_scan import availability  # noqa: E402


@pytest.mark.slow  # lowering four differentiated kernels: ~20 s on two cores
def test_every_op_lowers_its_forward_and_backward_kernels_for_cuda(capsys):
    check = availability.check_runnable
    code = lower_for_cuda.main(["--ops", ",".join(lower_for_cuda.OPS), "--shapes", "2,19,256,16,8",
                                "--config", "bwd_min_ctas=0"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(lines)
    # One forward and one backward kernel each: the kernels lowered, nothing fell through to XLA.
    assert [line.split()[1] for line in lines] == list(lower_for_cuda.OPS)
    assert all(line.startswith("ok") and line.endswith(": 2 Mosaic GPU kernel calls") for line in lines), lines
    assert availability.check_runnable is check  # the GPU check is back for the tests after this one


def test_conv_ops_need_a_dt_rank_in_their_shapes():
    with pytest.raises(ValueError, match="dt_rank"):
        lower_for_cuda.input_specs("conv_selective_scan", (2, 19, 256, 16), "float32")
