"""The preset packages (`--hardware NAME`) and the check that a package runs the chosen precision.

Every figure is cited in docs/hardware.md ("Presets"); the comments here give the arithmetic. Rates are per cycle
of each preset's clock, so a vendor's per-second figure is divided by that clock (`_per_cycle`, `_cycles`).
"""
from __future__ import annotations

from partitioner.core.errors import UserError
from partitioner.hw.hardware import HBM3_STACK, MIB, Chiplet, Hardware, MemoryStack, mesh_of, packages_of
from partitioner.hw.levels import PackageLevel
from partitioner.hw.precision import suggested_precision

KIB, GIB = 1 << 10, 1 << 30
HBM_NS = HBM3_STACK["latency_cycles"]   # 100 ns: HBM3_STACK's latency is given at 1 GHz
HBM_PJ = HBM3_STACK["pj_per_byte"]      # 31.2 pJ/byte (3.9 pJ/bit, O'Connor et al., MICRO 2017)


def _per_cycle(per_second: float, clock_hz: float) -> int:
    return round(per_second / clock_hz)


def _cycles(ns: float, clock_hz: float) -> int:
    return round(ns * clock_hz / 1e9)


# a100: A100 SXM4 80GB at its 1.41 GHz boost clock, one die. 108 SMs, each 4 tensor cores of 256 dense fp16 FMA a
# clock (1,024 per SM: 108 x 1,024 x 2 x 1.41 GHz = 311.9 TFLOPS), int8 twice that (623.7 TOPS), fp32 on the 64
# CUDA cores per SM (19.5 TFLOPS), no fp8. SRAM: the 40 MiB L2 plus 164 KiB of shared memory per SM (its largest
# carve-out); 128 B/cycle per SM of shared-memory bandwidth. HBM2e: 5 stacks, 80 GiB, 2,039 GB/s, as one stack
# (the controllers interleave addresses over all five), sustaining 86.8% of peak on a streaming read.
A100_HZ = 1.41e9
A100_CHIPLET = Chiplet(kind="a100", macs_per_cycle=108 * 1024, cores=108, vector_ops_per_cycle=108 * 64,
                       sram_bytes=40 * MIB + 108 * 164 * KIB, sram_bytes_per_cycle=108 * 128,
                       macs_by_precision=(("fp32", 108 * 64), ("fp16", 108 * 1024), ("bf16", 108 * 1024),
                                          ("int8", 108 * 2048)))
A100 = Hardware("a100", (A100_CHIPLET,), "mesh", 1, 1, clock_hz=A100_HZ, memory_stacks=(
    MemoryStack("hbm2e", 80 * GIB, _per_cycle(2039e9, A100_HZ), HBM_PJ, _cycles(HBM_NS, A100_HZ), (0,),
                efficiency=0.868),))

# h100: H100 SXM5 80GB, one die. 132 SMs of 2,048 dense fp16/bf16 FMA a clock (twice A100's SM) and 4,096 fp8/int8;
# 1.83 GHz is the clock at which 132 x 2,048 x 2 gives NVIDIA's 989.4 TFLOPS (fp8 1,978.9). fp32: 128 CUDA cores
# per SM. SRAM: the 50 MiB L2 plus 228 KiB of shared memory per SM. HBM3: 3.35 TB/s, 80 GiB, one stack as above,
# sustaining 86.7% of peak.
H100_HZ = 1.83e9
H100_CHIPLET = Chiplet(kind="h100", macs_per_cycle=132 * 2048, cores=132, vector_ops_per_cycle=132 * 128,
                       sram_bytes=50 * MIB + 132 * 228 * KIB, sram_bytes_per_cycle=132 * 128,
                       macs_by_precision=(("fp32", 132 * 128), ("fp16", 132 * 2048), ("bf16", 132 * 2048),
                                          ("fp8", 132 * 4096), ("int8", 132 * 4096)))
H100 = Hardware("h100", (H100_CHIPLET,), "mesh", 1, 1, clock_hz=H100_HZ, memory_stacks=(
    MemoryStack("hbm3", 80 * GIB, _per_cycle(3.35e12, H100_HZ), HBM_PJ, _cycles(HBM_NS, H100_HZ), (0,),
                efficiency=0.867),))

# mi300x: 8 XCDs at the 2.1 GHz peak engine clock, two on each of 4 I/O dies. An XCD: 38 CUs of 2,048 fp16/bf16
# flops a clock (1,024 MACs) and 4,096 fp8/int8 (8 x 38 x 2,048 x 2.1 GHz = 1,307.4 TFLOPS; fp8 2,614.9), matrix
# fp32 256 flops (128 MACs) and 128 vector lanes per CU; SRAM: its 4 MiB L2 plus 64 KiB of LDS per CU, read at
# 2 KiB/cycle (the L2's 16 channels x 128 B). Levels: an IOD is a "package" of 2 XCDs (their link: the XCD's
# 1 KiB/cycle fabric interface); the 4 IODs form a ring (each joined to its two neighbours in the 2x2) of
# 2.4 TB/s links. Each IOD's 2 HBM3 stacks (48 GiB, 2 x 662.5 GB/s) are one stack on its two XCDs.
MI300X_HZ = 2.1e9
XCD = Chiplet(kind="mi300x-xcd", macs_per_cycle=38 * 1024, cores=38, vector_ops_per_cycle=38 * 128,
              sram_bytes=4 * MIB + 38 * 64 * KIB, sram_bytes_per_cycle=2048,
              macs_by_precision=(("fp32", 38 * 128), ("fp16", 38 * 1024), ("bf16", 38 * 1024), ("fp8", 38 * 2048),
                                 ("int8", 38 * 2048)))
MI300X = Hardware("mi300x", (XCD,) * 8, "chain", 1, 2, clock_hz=MI300X_HZ, link_bytes_per_cycle=1024,
                  hop_latency_cycles=20, link_pj_per_bit=0.25,
                  memory_stacks=tuple(MemoryStack(f"hbm-iod{i}", 48 * GIB, _per_cycle(5.3e12 / 4, MI300X_HZ), HBM_PJ,
                                                  _cycles(HBM_NS, MI300X_HZ), (2 * i, 2 * i + 1), efficiency=0.732)
                                      for i in range(4)),
                  package_level=PackageLevel(4, "ring", 1, 4, link_bytes_per_cycle=_per_cycle(2.4e12, MI300X_HZ),
                                             hop_latency_cycles=20, link_pj_per_bit=0.25))

# mi300x-node: eight mi300x on one board (AMD's 8-GPU OAM platform), each GPU joined to each other one by its own
# Infinity Fabric (xGMI) link: 7 links per GPU, fully connected, so the node level is all-to-all. A link is 16 lanes
# at 32 Gb/s = 64 GB/s per direction (128 GB/s both ways), 30 bytes a cycle of the 2.1 GHz clock. AMD gives no
# latency or energy for it: the package-to-package class of hardware.PACKAGE_LINK stands in (50 ns per hop, 105
# cycles; 5.5 pJ/bit, a long-reach SerDes). GPU g's links to higher-numbered GPUs land on its last XCD, to lower
# ones on its first (levels.gateway): a pipeline enters a GPU where its first stage runs.
XGMI = dict(link_bytes_per_cycle=_per_cycle(64e9, MI300X_HZ), hop_latency_cycles=_cycles(50, MI300X_HZ),
            link_pj_per_bit=5.5, link_name="xgmi")
MI300X_NODE = packages_of(MI300X, 8, "all-to-all", name="mi300x-node", **XGMI)
# mi300x-2node: two mi300x-node joined by a 400G network (InfiniBand NDR or 400GbE): 50 GB/s per direction, 24 B a
# cycle; 1 us one way (NIC, one switch, NIC: a single-switch RDMA round trip is ~2 us), 2,100 cycles; 60 pJ/bit for
# a 12 W 400G optical module at each end. One link pair between the nodes' gateway XCDs, where a real node has a NIC
# per GPU: it models one NIC's share, the pipeline's one crossing.
NDR400 = dict(link_bytes_per_cycle=_per_cycle(50e9, MI300X_HZ), hop_latency_cycles=_cycles(1000, MI300X_HZ),
              link_pj_per_bit=60.0, link_name="network")
MI300X_2NODE = packages_of(MI300X_NODE, 2, "chain", name="mi300x-2node", **NDR400)

# simba-36: Simba's 6x6 package of int8-only chiplets at 1.733 GHz (its 36-chiplet peak, 127.8 TOPS, over
# 36 x 1,024 MACs x 2). A chiplet: 16 PEs, each 8 vector MACs x 8 lanes (an 8 x 8 weight-stationary array);
# 752 KiB of SRAM (per PE 32 KiB weight + 8 KiB input + 3 KiB accumulation buffers, and a 64 KiB global buffer).
# Links: ground-referenced signalling, 100 GB/s per chiplet per direction over its 4 links (25 GB/s each), 20 ns
# per hop, 0.82 pJ/bit. Weights stream from a DRAM channel on chiplet 0 (25.6 GB/s: docs/hardware.md says why).
SIMBA_HZ = 1.733e9
SIMBA_CHIPLET = Chiplet(kind="simba", macs_per_cycle=1024, cores=16, array_rows=8, array_cols=8, dataflow="ws",
                        vector_ops_per_cycle=256, sram_bytes=(16 * (32 + 8 + 3) + 64) * KIB, sram_bytes_per_cycle=512,
                        mac_pj=0.2, vector_op_pj=0.1, sram_pj_per_byte=0.5, macs_by_precision=(("int8", 1024),))
SIMBA = Hardware("simba-36", (SIMBA_CHIPLET,) * 36, "mesh", 6, 6, clock_hz=SIMBA_HZ,
                 link_bytes_per_cycle=_per_cycle(25e9, SIMBA_HZ), hop_latency_cycles=_cycles(20, SIMBA_HZ),
                 link_pj_per_bit=0.82, memory_stacks=(
                     MemoryStack("dram", 8 * GIB, _per_cycle(25.6e9, SIMBA_HZ), HBM_PJ, _cycles(HBM_NS, SIMBA_HZ),
                                 (0,)),))

# default-16 carries the default HBM3 tier (hardware.HBM3_STACK, edge_stacks: 4 stacks); sram-only-16 is the same
# package without it; two-package-2x16 is two default-16 packages on a board joined by one package-to-package link
# pair (hardware.PACKAGE_LINK) from chiplet 15 to chiplet 16. docs/hardware.md describes the default chiplet.
PRESETS: dict[str, Hardware] = {
    "default-16": mesh_of(16, name="default-16", memory_tier=True),
    "sram-only-16": mesh_of(16, name="sram-only-16"),
    "simba-36": SIMBA,
    "two-package-2x16": packages_of(mesh_of(16, memory_tier=True), 2, "chain", name="two-package-2x16"),
    "a100": A100,
    "h100": H100,
    "mi300x": MI300X,
    "mi300x-node": MI300X_NODE,
    "mi300x-2node": MI300X_2NODE,
}


def require_precision(hw: Hardware, precision: str | None) -> None:
    """A one-line UserError, before any search, when a chiplet of `hw` cannot run `precision`: names what the
    package runs and a preset that runs `precision`. None (keep the model's own sizes) always passes."""
    if precision is None:
        return
    bad = [c for c in dict.fromkeys(hw.chiplets) if precision not in c.precisions]
    if not bad:
        return
    runs = tuple(p for p in bad[0].precisions if all(p in c.precisions for c in hw.chiplets))
    fix = f"pass --precision {suggested_precision(runs)}" if runs else "pass a --precision every chiplet runs"
    others = [name for name, p in PRESETS.items() if all(precision in c.precisions for c in p.chiplets)]
    if others:
        fix += f", or a preset with {precision} such as {others[0]}"
    raise UserError(f"hardware {hw.name} cannot run {precision}: its {bad[0].kind} chiplets run "
                    f"{', '.join(bad[0].precisions)}", fix)
