"""The collectives probe's pure parts: nccl-tests' factors, the decode sizes and their rounding, the ring
time model, the NCCL log parser, the inputs and checks, and the waived reasons where there is no GPU."""

from __future__ import annotations

import os
import socket
import sys
import types

import numpy as np
import pytest

from gpucal.calibrate import collectives as CC
from gpucal.calibrate.fit import fit_alpha_beta
from gpucal.kernels.comm import RankInfo, World
from gpucal.plan import equations as eq
from gpucal.probes import collective_nccl as E
from gpucal.probes import collectives as C


@pytest.mark.parametrize(("n", "all_reduce", "gather"), [(2, 1.0, 0.5), (4, 1.5, 0.75), (8, 1.75, 0.875)])
def test_busbw_factors_are_nccl_tests(n, all_reduce, gather):
    assert C.BUSBW_FACTOR("all-reduce", n) == pytest.approx(all_reduce)
    assert C.BUSBW_FACTOR("all-gather", n) == pytest.approx(gather)
    assert C.BUSBW_FACTOR("reduce-scatter", n) == pytest.approx(gather)
    assert C.BUSBW_FACTOR("broadcast", n) == 1.0
    assert C.BUSBW_FACTOR("send-recv", n) == 1.0


def test_byte_convention_names_factor_and_size():
    text = C.byte_convention("all-reduce", 4)
    assert "algbw = S/t" in text and "2(N-1)/N = 1.5" in text and "the buffer" in text
    assert "total output" in C.byte_convention("all-gather", 8)


def test_decode_sizes():
    sizes = C.decode_sizes(8192)
    assert len(sizes) == 11
    assert sizes[0] == 16384  # B = 1: 1 x 8192 x 2 bytes
    assert sizes[-1] == 16 * 2**20  # B = 1024
    assert C.decode_sizes(1024, batches=(1, 4), bytes_per_value=4) == (4096, 16384)


def test_sizes_rounded_to_what_the_op_needs():
    assert C.op_size_bytes("all-reduce", 16384, 3) == 16384
    assert C.op_size_bytes("all-reduce", 2050, 3) == 2048
    assert C.op_size_bytes("all-gather", 16384, 3) == 16380  # divisible by N x 4 bytes
    assert C.op_size_bytes("reduce-scatter", 16384, 3) % 12 == 0
    assert C.op_size_bytes("all-gather", 5, 4) == 16  # at least one unit
    config = C.CollectivesConfig(sizes=(16, 17, 18, 100))
    assert config.size_list("all-reduce", 2) == (16, 100)  # rounded, deduplicated, sorted
    assert config.size_list("all-gather", 3) == (12, 96)


def test_ring_time_model():
    a, b, s = 10e-6, 25e9, 1e6
    assert eq.ring_collective_time_s("all-reduce", s, a, b, 4) == pytest.approx(6 * a + 1.5 * s / b)
    assert eq.ring_collective_time_s("all-gather", s, a, b, 4) == pytest.approx(3 * a + 0.75 * s / b)
    assert eq.ring_collective_time_s("reduce-scatter", s, a, b, 8) == pytest.approx(7 * a + 7 / 8 * s / b)
    assert eq.ring_collective_time_s("broadcast", s, a, b, 4) == pytest.approx(3 * a + s / b)
    assert eq.ring_collective_time_s("send-recv", s, a, b, 4) == pytest.approx(a + s / b)
    for op in C.OPS:  # busbw -> the link's beta at large S
        huge = 1e15
        busbw = huge / eq.ring_collective_time_s(op, huge, a, b, 4) * C.BUSBW_FACTOR(op, 4)
        assert busbw == pytest.approx(b, rel=1e-6)
        assert C.BUSBW_FACTOR(op, 4) == eq.busbw_factor(op, 4)  # nccl-tests' factor is the ring model's


def test_the_planner_and_the_virtual_ring_price_an_all_reduce_alike():
    """One collective-cost function: the planner's ring all-reduce is the virtual ring's all-reduce."""
    a, b = 10e-6, 25e9
    tp = np.array([1, 2, 4, 8])
    planned = eq.ring_allreduce_time_s(1e6, a, b, tp)
    assert planned[0] == 0.0
    for t, n in zip(planned, tp):
        assert t == eq.ring_collective_time_s("all-reduce", 1e6, a, b, int(n))
    with pytest.raises(ValueError):
        eq.ring_collective_time_s("allreduce", 1e6, a, b, 4)


def test_fit_of_the_ring_model_gives_alpha_and_algbw_beta():
    a, b, n = 20e-6, 26e9, 4
    sizes = C.decode_sizes(8192)
    fit = fit_alpha_beta(sizes, [eq.ring_collective_time_s("all-reduce", s, a, b, n) for s in sizes])
    assert fit.alpha_s == pytest.approx(2 * (n - 1) * a, rel=1e-6)
    assert fit.beta_Bps * C.BUSBW_FACTOR("all-reduce", n) == pytest.approx(b, rel=1e-6)


NCCL_LOG = """\
node1:12345:12400 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>
node1:12345:12400 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [RO]; OOB ib0:10.0.0.1<0>
node1:12345:12400 [0] NCCL INFO Channel 00/02 :    0   1   2   3
node1:12345:12400 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
node1:12345:12400 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/IPC
node1:12345:12400 [0] NCCL INFO Channel 02/0 : 0[0] -> 1[1] via P2P/direct pointer/read
node1:12345:12400 [0] NCCL INFO Channel 00 : 0[0] -> 1[1] via SHM/direct/direct
node1:12345:12400 [0] NCCL INFO Channel 00/0 : 1[1] -> 2[0] [send] via NET/Socket/0
node2:2222:2300 [0] NCCL INFO Channel 00/0 : 1[1] -> 2[0] [receive] via NET/IB/0/GDRDMA
node2:2222:2300 [0] NCCL INFO Channel 01/0 : 3[1] -> 0[0] [send] via NET/IB/1(0)/GDRDMA
node1:12345:12400 [0] NCCL INFO Connected all rings
node1:12345:12400 [0] NCCL INFO comm 0x55d0 rank 0 nranks 4 cudaDev 0 nvmlDev 0 busId 18000 - Init COMPLETE
"""


def test_nccl_transport_parser():
    found = E.parse_nccl_transports(NCCL_LOG.splitlines())
    assert found == ["NET/IB/GDRDMA", "NET/Socket", "P2P/CUMEM", "P2P/IPC", "P2P/direct", "SHM"]
    assert E.parse_nccl_transports(["NCCL INFO Connected all rings", ""]) == []


def test_nccl_version_text():
    assert E.nccl_version_text(22707) == "2.27.7"
    assert E.nccl_version_text(2804) == "2.8.4"


@pytest.mark.parametrize("op", C.OPS)
def test_expected_outputs_are_exact(op):
    n, size = 3, C.op_size_bytes(op, 4096, 3)
    cases = [C.case_arrays(op, size, r, n, seed=7) for r in range(n)]
    inputs = [c[0] for c in cases]
    assert all(x.dtype == np.float32 for x in inputs)
    assert all(x.max() < 8 and x.min() >= 0 for x in inputs)
    if op == "all-reduce":
        assert all(np.array_equal(c[2], sum(x.astype(np.float64) for x in inputs)) for c in cases)
    elif op == "all-gather":
        assert all(np.array_equal(c[2], np.concatenate(inputs)) for c in cases)
        assert cases[0][1] * 4 == size  # S = the total output
    elif op == "reduce-scatter":
        total = sum(x.astype(np.float64) for x in inputs)
        assert np.array_equal(np.concatenate([c[2] for c in cases]), total)
        assert inputs[0].nbytes == size  # S = the total input
    elif op == "broadcast":
        assert all(np.array_equal(c[2], inputs[0]) for c in cases)
    else:
        assert all(np.array_equal(cases[r][2], inputs[(r - 1) % n]) for r in range(n))
    assert np.array_equal(C.case_arrays(op, size, 1, n, seed=7)[0], inputs[1])  # regenerated alike


def test_compare_names_the_first_difference():
    expected = np.arange(8, dtype=np.float32)
    assert C.compare(expected.copy(), expected).ok
    got = expected.copy()
    got[5] = np.nan  # an output left unwritten
    check = C.compare(got, expected)
    assert not check.ok and check.index == (5,) and check.expected == 5.0
    assert not C.compare(expected[:4], expected).ok


def test_waived_reason_without_a_gpu():
    reason = E.nccl_unavailable()
    if reason is None:
        pytest.skip("CuPy, a CUDA device and NCCL are present here: nothing is waived")
    assert "CUDA device" in reason or "CuPy" in reason or "NCCL" in reason


def test_waived_reason_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    reason = E.nccl_unavailable()
    assert reason.startswith("CuPy is not installed")
    assert "pip install" in reason


# --- the NCCL engine against a stand-in for CuPy and NCCL (one rank: MPI.COMM_SELF) --------------------------
class _FakeGpu:
    """Just enough of CuPy, its runtime and its NCCL binding to drive ``NcclEngine`` on the CPU: arrays are
    NumPy, pointers index a registry, a stream can capture ops into a graph, and every op advances a clock
    by 1 µs + bytes / 10 GB/s (what the fake events read)."""

    def __init__(self, corrupt: bool = False, writes: int | None = None):
        self.arrays, self.capture, self.clock_s, self.corrupt, self.pending = {}, None, 0.0, corrupt, None
        self.writes = writes  # ops that write their output at most (None: all); later ops only take time
        gpu = self

        class Array:
            def __init__(self, a):
                self.a = a
                self.data = types.SimpleNamespace(ptr=id(self))
                gpu.arrays[id(self)] = self

            size = property(lambda self: self.a.size)

            def fill(self, value):
                self.a.fill(value)

            def get(self, stream=None):
                return self.a.copy()

        class Stream:
            ptr = 7

            def __init__(self, non_blocking=False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

            def begin_capture(self):
                gpu.capture = []

            def end_capture(self):
                ops, gpu.capture = gpu.capture, None
                return types.SimpleNamespace(upload=lambda stream=None: None,
                                             launch=lambda stream=None: [op() for op in ops])

        class Event:
            def record(self, stream=None):
                self.at_s = gpu.clock_s

            def synchronize(self):
                pass

        class Comm:
            def __init__(self, n, uid, rank):
                assert (n, rank, uid) == (1, 0, ("uid",))
                path = os.environ["NCCL_DEBUG_FILE"].replace("%h", socket.gethostname()).replace("%p", str(os.getpid()))
                with open(path, "a") as f:  # NCCL keeps one log file open per process, and appends
                    f.write("h:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 0[0] via P2P/IPC\n")

            def _do(self, fn, nbytes):
                def op():
                    if gpu.writes is None or gpu.writes > 0:
                        fn()
                        gpu.writes = None if gpu.writes is None else gpu.writes - 1
                    gpu.clock_s += 1e-6 + nbytes / 1e10
                (gpu.capture.append if gpu.capture is not None else lambda f: f())(op)

            def _copy(self, s, r, count):
                def fn():
                    gpu.arrays[r].a[:count] = gpu.arrays[s].a[:count] + (1 if gpu.corrupt else 0)
                self._do(fn, 4 * count)

            def allReduce(self, s, r, count, dtype, op, stream):  # noqa: N802 - CuPy's names
                assert (dtype, op, stream) == ("f32", "sum", 7)
                self._copy(s, r, count)

            def allGather(self, s, r, count, dtype, stream):  # noqa: N802
                self._copy(s, r, count)

            def reduceScatter(self, s, r, count, dtype, op, stream):  # noqa: N802
                self._copy(s, r, count)

            def broadcast(self, s, r, count, dtype, root, stream):
                assert root == 0
                self._copy(s, r, count)

            def send(self, s, count, dtype, peer, stream):
                assert peer == 0
                self._do(lambda: setattr(gpu, "pending", gpu.arrays[s].a[:count].copy()), 4 * count)

            def recv(self, r, count, dtype, peer, stream):
                assert peer == 0
                self._do(lambda: gpu.arrays[r].a.__setitem__(slice(0, count), gpu.pending), 0)

            def destroy(self):
                pass

        def group(step):
            return lambda: None

        self.nccl = types.SimpleNamespace(available=True, NCCL_FLOAT32="f32", NCCL_SUM="sum", NcclCommunicator=Comm,
                                          get_unique_id=lambda: ("uid",), get_version=lambda: 22707,
                                          groupStart=group("start"), groupEnd=group("end"))
        self.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"Fake"})
        cuda = types.SimpleNamespace(Device=lambda i: types.SimpleNamespace(use=lambda: None), Stream=Stream,
                                     Event=Event, nccl=self.nccl,
                                     get_elapsed_time=lambda a, b: (b.at_s - a.at_s) * 1e3)
        self.cupy = types.SimpleNamespace(cuda=cuda, float32=np.float32, asarray=lambda x: Array(np.array(x)),
                                          empty=lambda n, dtype: Array(np.empty(n, dtype)),
                                          get_default_memory_pool=lambda: types.SimpleNamespace(
                                              free_all_blocks=lambda: None))

    def install(self, monkeypatch):
        api = types.SimpleNamespace(runtime=self.runtime)
        for name, module in {"cupy": self.cupy, "cupy.cuda": self.cupy.cuda, "cupy.cuda.nccl": self.nccl,
                             "cupy_backends": types.SimpleNamespace(cuda=types.SimpleNamespace(api=api)),
                             "cupy_backends.cuda": types.SimpleNamespace(api=api), "cupy_backends.cuda.api": api,
                             "cupy_backends.cuda.api.runtime": self.runtime}.items():
            monkeypatch.setitem(sys.modules, name, module)


def _self_world(MPI):
    return World(MPI.COMM_SELF, [RankInfo(0, "h", 0, 0, 1)], False, "MPI", "4.0")


def _fresh_nccl_log(monkeypatch):
    """A process whose NCCL has not started yet: no log folder of ours, no NCCL_DEBUG (restored afterwards)."""
    monkeypatch.setitem(E._NCCL_LOG, "dir", None)
    for key in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


@pytest.mark.parametrize("graphs", [False, True])
def test_nccl_engine_with_a_stand_in(monkeypatch, graphs, mpi_module):
    world = _self_world(mpi_module)
    _FakeGpu().install(monkeypatch)
    _fresh_nccl_log(monkeypatch)
    config = C.CollectivesConfig(sizes=(256, 1024, 4096, 16384), budget_s=0.05, graphs=graphs, backend="cupy")
    report = CC.run_collectives(world, config)
    assert report.waived is None and report.source == "measured"
    assert report.library == "NCCL 2.27.7" and report.nccl_version == "2.27.7"
    assert report.transport == ["P2P/IPC"] and report.transport_reason is None
    assert os.environ["NCCL_DEBUG"] == "INFO" and os.environ["NCCL_DEBUG_SUBSYS"] == "INIT"  # for the process
    log = E._NCCL_LOG["dir"]
    again = CC.run_collectives(world, C.CollectivesConfig(ops=("send-recv",), sizes=(256, 1024, 4096), budget_s=0.05,
                                                         backend="cupy"))
    assert E._NCCL_LOG["dir"] == log and again.transport == ["P2P/IPC"]  # one log per process, read from its end
    assert all(r.status == "passed" and r.check.ok for r in report.results), [r.reason for r in report.results]
    assert len(report.results) == len(C.OPS) * 4 * (2 if graphs else 1)
    assert len(report.entries) == len(C.OPS) * (2 if graphs else 1)
    ar = report.entries[0]
    assert ar["op"] == "all-reduce" and ar["alpha_s"]["source"] == "measured" and ar["verified"]
    assert ar["beta_Bps"]["value"] == pytest.approx(1e10, rel=1e-6)  # the stand-in's clock: 1 us + S / 10 GB/s
    assert ar["alpha_s"]["value"] == pytest.approx(1e-6, rel=1e-6)
    if graphs:
        assert [e["graphs"] for e in report.entries[:2]] == [False, True]
        assert report.results[4].params["series"] == "coll-all-reduce-graph"


def test_nccl_engine_wrong_output_fails_without_a_number(monkeypatch, mpi_module):
    world = _self_world(mpi_module)
    _FakeGpu(corrupt=True).install(monkeypatch)
    _fresh_nccl_log(monkeypatch)
    report = CC.run_collectives(world, C.CollectivesConfig(ops=("all-reduce",), sizes=(256, 1024, 4096),
                                                          budget_s=0.05, backend="cupy"))
    assert report.failed and report.entries == []
    assert all(r.status == "failed" and r.timing is None and not r.metrics for r in report.results)
    assert "verification failed" in report.results[0].reason


def test_timed_ops_that_write_nothing_fail_the_check_after_timing(monkeypatch, mpi_module):
    """The check before timing passes (the first op writes); the timed ops write nothing: the output is
    poisoned (NaN) before timing, so the check after timing sees it."""
    world = _self_world(mpi_module)
    _FakeGpu(writes=1).install(monkeypatch)
    _fresh_nccl_log(monkeypatch)
    report = CC.run_collectives(world, C.CollectivesConfig(ops=("all-reduce",), sizes=(256,), budget_s=0.05,
                                                          backend="cupy"))
    (result,) = report.results
    assert result.status == "failed" and "after timing" in result.check.method and result.timing is None


def test_nccl_engine_leaves_the_users_nccl_debug(monkeypatch, mpi_module):
    world = _self_world(mpi_module)
    fake = _FakeGpu()
    fake.install(monkeypatch)
    _fresh_nccl_log(monkeypatch)
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    monkeypatch.setenv("NCCL_DEBUG_FILE", "/dev/null")
    report = CC.run_collectives(world, C.CollectivesConfig(ops=("send-recv",), sizes=(256, 1024, 4096),
                                                          budget_s=0.05, backend="cupy"))
    assert report.transport is None and "NCCL_DEBUG=WARN" in report.transport_reason
    assert report.entries[0]["transport_reason"] == report.transport_reason
