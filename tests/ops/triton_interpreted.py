"""Backend "triton_interpreted" for the tests: the Triton kernels in Triton's interpreter, with a
tiling small enough for it (see `tests/ops/test_triton_scan.py`)."""

from pallas_kernels.selective_scan.tiling import ScanConfig
from pallas_kernels.triton_scan import TritonScan

# Forward blocks of 16 channels (24 and 48 channels span 2 and 3 of them), backward blocks of 32
# (the warp reduce-scatter), 2 tokens per chunk (the interpreter's time grows with the unrolling).
SMALL = ScanConfig(block_c=16, chunk=2, bwd_block_c=32, bwd_num_warps=1)
BACKEND = TritonScan(config=SMALL, interpret=True)
selective_scan = BACKEND.selective_scan
selective_scan_bidirectional = BACKEND.selective_scan_bidirectional
