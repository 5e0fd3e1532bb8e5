"""Issue 15, the classes of bad input the flags and the probes' configs refuse: size ranges and units, sizes and
counts never bounded before allocating, non-finite and extreme numbers at the flags (and none of them reaching
the planner as NaN), empty strings, and valid but incomplete profiles used as a virtual machine."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from gpucal import limits
from gpucal.commands import options as flag_types
from gpucal.commands.options import link_sizes
from gpucal.commands.plan import sweep_ranges
from gpucal.errors import InputError, ProfileError
from gpucal.kernels.virtual import VirtualBackend
from gpucal.kernels.virtual_machine import VirtualMachine, parse_spec
from gpucal.plan.equations import MAX_CARD_COUNT, min_cards_by_capacity
from gpucal.plan.models import MODEL_MAXIMA as M
from gpucal.plan.models import ModelSpec
from gpucal.plan.spec import GpuSpec, LinkSpec
from gpucal.plan.step import evaluate
from gpucal.probes import flops, links, membw
from gpucal.probes.latency import run_latency
from gpucal.probes.memory import host_memory_bytes, host_unfit, unfit
from gpucal.profiles import validate
from gpucal.units import UnitError, parse_quantity, parse_whole_bytes

FIXTURE = Path(__file__).parent.parent / "fixtures" / "profile-simulated-rtx4090x2.json"


# --- size ranges and units ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["\u0663TB/s", "1\u0660GB/s", "\uff13GB/s"])  # Arabic-Indic 3, 10; full-width 3
def test_only_ascii_digits_are_numbers(text):
    with pytest.raises(UnitError):
        parse_quantity(text, "rate")
    with pytest.raises(argparse.ArgumentTypeError):
        flag_types.int_in(0, 10)(text.rstrip("TGB/s"))


def test_buffer_sizes_are_whole_bytes():
    assert parse_whole_bytes("1.5KiB") == 1536 and parse_whole_bytes("1e3") == 1000
    for text in ("0.5B", "1.1B", "0B", "-4B"):
        with pytest.raises(UnitError):
            parse_whole_bytes(text)


def test_a_denormal_is_no_quantity():
    with pytest.raises(UnitError, match="too small"):
        parse_quantity("1e-320", "time")


@pytest.mark.parametrize("text", ["4B..8B..16B", "4B...256MiB", "4B..", "..8B", "4B,,8B", "0.5B", "4B..2.5B",
                                  "1B,2B..8B"])
def test_size_ranges_refuse_what_they_cannot_read(text):
    with pytest.raises(InputError, match="^--sizes: "):
        link_sizes(text)


def test_a_size_range_is_powers_of_two():
    assert link_sizes("4B..16B") == (4, 8, 16) and link_sizes("4B,1KiB") == (4, 1024)


# --- non-finite and extreme numbers at the flags -----------------------------------------------------------
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308", "1e999", "0", "-1", ""])
def test_budget_is_a_finite_time_in_range(text):
    with pytest.raises(argparse.ArgumentTypeError):
        flag_types.budget(text)
    assert flag_types.budget("500ms") == 0.5


@pytest.mark.parametrize(("kind", "range_kind", "text"), [
    ("number", "params", "1e308"), ("number", "params", "1e16"), ("rate", None, "2PB/s"),
    ("flops", None, "1e20"), ("bytes", None, "2PB"), ("number", "tokens_per_s", "1e10")])
def test_quantity_flags_refuse_what_lies_outside_their_range(kind, range_kind, text):
    parse = flag_types.quantity(kind, range_kind=range_kind)
    with pytest.raises(argparse.ArgumentTypeError, match="above the largest accepted"):
        parse(text)


def test_a_quantity_that_may_be_zero_is_never_negative():
    parse = flag_types.quantity("bytes", positive=False)
    assert parse("0") == 0.0 and parse("40GB") == 40e9
    with pytest.raises(argparse.ArgumentTypeError, match="negative"):
        parse("-5")


def test_whole_number_flags_have_a_largest():
    parse = flag_types.int_in(1, limits.MAX_CARDS)
    assert parse(str(limits.MAX_CARDS)) == limits.MAX_CARDS
    for text in (str(limits.MAX_CARDS + 1), "0", "1_000", "1.0", "\u0663"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_the_planner_never_overflows_inside_the_ranges():
    """Every corner of the flags' ranges, evaluated with every NumPy warning an error: finite terms only."""
    R = limits.RANGES
    batch = np.array([1, limits.MAX_BATCH])
    tp, pp = np.array([1, limits.MAX_CARDS]), np.array([limits.MAX_CARDS, 1])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for params, bw, flops, mem, kv in itertools.product(R["params"], R["rate"], R["flops"], R["bytes"],
                                                            (None, 0.0, R["bytes"][1])):
            model = ModelSpec("m", params, M["layers"], M["hidden"], M["kv_heads"], M["kv_heads"], M["head_dim"])
            for link in (LinkSpec("l", 0.0, R["rate"][0]), LinkSpec("l", R["time"][1], R["rate"][1])):
                step = evaluate(model, GpuSpec("g", bw, flops, mem), batch=batch, tp=tp, pp=pp, link=link, net=link,
                                cards_per_host=1, comm="ring", context_tokens=limits.MAX_CONTEXT_TOKENS,
                                kv_cache_bytes=kv, bytes_per_weight=4.0, kv_bytes_per_value=4.0, act_bytes=4.0)
                for name, value in step.__dict__.items():
                    value = np.asarray(value)
                    assert value.dtype.kind not in "fc" or np.all(np.isfinite(value)), name


# --- sweeps and device counts ------------------------------------------------------------------------------
def test_a_sweep_range_is_capped_by_the_limits_module():
    assert len(flag_types.sweep_spec(f"batch=1:{limits.MAX_SWEEP_VALUES}:1")[1]) == limits.MAX_SWEEP_VALUES
    with pytest.raises(argparse.ArgumentTypeError, match=str(limits.MAX_SWEEP_VALUES)):
        flag_types.sweep_spec(f"batch=1:{limits.MAX_SWEEP_VALUES + 1}:1")
    with pytest.raises(argparse.ArgumentTypeError):
        flag_types.sweep_spec(f"cards=1:{limits.MAX_CARDS + 1}")


def test_the_product_of_the_sweep_ranges_is_capped_before_anything_is_built():
    fits = [("batch", list(range(1, limits.MAX_SWEEP_CONFIGURATIONS // 16 + 1))), ("cards", list(range(1, 17)))]
    assert len(sweep_ranges(fits)["cards"]) == 16
    with pytest.raises(InputError, match=f"^--sweep: .*{limits.MAX_SWEEP_CONFIGURATIONS}"):
        sweep_ranges([("batch", list(range(1, 65537))), ("cards", list(range(1, 17)))])
    with pytest.raises(InputError, match="^--sweep: "):  # one key twice: its values add up
        sweep_ranges([("batch", list(range(1, 40001))), ("batch", list(range(1, 40001)))])


@pytest.mark.parametrize("spec", [f"virtual:rtx4090:{limits.MAX_DEVICES + 1}", "virtual:rtx4090:100000"])
def test_a_virtual_machine_holds_at_most_max_devices(spec):
    assert parse_spec(f"virtual:rtx4090:{limits.MAX_DEVICES}")[1] == limits.MAX_DEVICES
    with pytest.raises(InputError, match=f"^--backend: .*{limits.MAX_DEVICES}"):
        parse_spec(spec)


def test_a_device_count_is_ascii_digits():
    assert parse_spec("virtual:rtx4090:\u0663")[1] is None  # not a count: the profile's name, refused as unknown
    with pytest.raises(InputError, match="seed"):
        parse_spec("virtual:rtx4090:2+seed=\u0663")


def _profile() -> dict:
    return json.loads(FIXTURE.read_text())


def test_a_profile_counting_too_many_devices_is_refused():
    data = _profile()
    data["devices"][0]["count"] = 1_000_000
    with pytest.raises(ProfileError, match=rf"^big\.json: devices\[0\]\.count: .*{limits.MAX_DEVICES}"):
        validate(data, "big.json")  # no such profile reaches a virtual machine
    data["devices"][0]["count"] = limits.MAX_DEVICES - sum(d.get("count", 1) for d in data["devices"][1:])
    assert VirtualMachine(data, "big").count == limits.MAX_DEVICES
    assert VirtualMachine(data, "big", count=2).count == 2  # a count given replaces the profile's
    # the machine's own limit, for a typed profile that was never validated (built in code)
    typed = validate(_profile(), "p.json").profile
    device = typed.devices[0].model_copy(update={"count": 1_000_000})
    unchecked = typed.model_copy(update={"devices": [device, *typed.devices[1:]]})
    with pytest.raises(InputError, match=rf"^--backend: big\.json: the profile counts .*{limits.MAX_DEVICES}"):
        VirtualMachine(unchecked, "big", origin="big.json")
    # and a profile's JSON that does not validate is one line naming the file and the field
    data["devices"][0]["count"] = 1_000_000
    with pytest.raises(InputError, match=r"^--backend: big\.json: devices\[0\]\.count: "):
        VirtualMachine(data, "big", origin="big.json")


# --- valid but incomplete profiles -------------------------------------------------------------------------
NULL = {"value": None, "source": "simulated", "method": "stream read kernel", "statistic": "median", "n": 1,
        "reason": "every case failed its check"}


@pytest.mark.parametrize("path", [("memory_bandwidth_Bps",), ("memory_bytes",), ("host_link", "h2d", "beta_Bps"),
                                  ("host_link", "d2h", "alpha_s")])
def test_a_null_figure_is_refused_naming_the_file_and_the_field(path):
    data = _profile()
    entry = data["devices"][0]
    for key in path[:-1]:
        entry = entry[key]
    entry[path[-1]] = dict(NULL)
    field = "devices[0]." + ".".join(path)
    with pytest.raises(InputError, match=rf"^--backend: p\.json: {re.escape(field)} is null "
                                         r"\(every case failed its check\)"):
        VirtualMachine(data, "p", origin="p.json")


def test_a_profile_without_any_flop_rate_is_refused():
    data = _profile()
    data["devices"][0]["dense_flops"] = {k: dict(NULL) for k in data["devices"][0]["dense_flops"]}
    with pytest.raises(InputError, match="dense_flops"):
        VirtualMachine(data, "p", origin="p.json")
    complete = _profile()
    assert VirtualMachine(copy.deepcopy(complete), "p").devices[0].memory_Bps > 0


# --- sizes never bounded before allocating -----------------------------------------------------------------
@pytest.fixture(scope="module")
def virtual():
    return VirtualBackend(VirtualMachine(_profile(), "p", count=2))


HOST = 64 << 30  # a host of 64 GiB, whatever this machine has


def _unfit(backend, needs, host=HOST):
    return unfit(backend, needs, host_bytes=host)


def test_the_defaults_fit(virtual):
    assert _unfit(virtual, membw.needs(virtual)) is None
    assert _unfit(virtual, flops.needs(virtual, flops.FlopsConfig())) is None
    for probe in ("host-link", "d2d", "peer", "latency"):
        assert _unfit(virtual, links.needs(virtual, links.LinkConfig(), probe)) is None


@pytest.mark.parametrize(("probe", "config", "field"), [
    ("membw", {"stream_sizes": (1 << 40,)}, "stream_sizes"),
    ("membw", {"gemv_shape": (200_000, 200_000)}, "gemv_shape"),
    ("membw", {"batches": (100_000_000,)}, "batches"),
    ("flops", {"sizes": (100_000,)}, "sizes"),
    ("host-link", {"sizes": (1 << 50,)}, "sizes"),
    ("peer", {"sizes": (1 << 40,)}, "sizes"),
    ("latency", {"latency_sizes": (1 << 40,)}, "latency_sizes"),
])
def test_what_cannot_fit_the_device_is_refused_before_allocating(virtual, probe, config, field):
    if probe == "membw":
        needs = membw.needs(virtual, membw.MembwConfig(**config))
    elif probe == "flops":
        needs = flops.needs(virtual, flops.FlopsConfig(**config))
    else:
        needs = links.needs(virtual, links.LinkConfig(**config), probe)
    need, why = _unfit(virtual, needs)
    assert field in need.fields and "device memory" in why and "25.77 GB" in why


def test_a_simulated_device_counts_against_the_host(virtual):
    """A virtual card's arrays are this host's: a size its 24 GiB would hold is refused on a host of 1 GiB."""
    _, why = _unfit(virtual, links.needs(virtual, links.LinkConfig(sizes=(256 << 20,)), "peer"), host=1 << 30)
    assert "host memory" in why and "1.074 GB" in why


def test_the_footprint_covers_what_a_case_really_allocates(virtual):
    """The declared peak is at least what NumPy allocates while the case runs (traced; on a virtual machine every
    array is a host array), so the check never lets through a case it would have refused had it counted right."""

    def stream(kind):
        config = membw.MembwConfig(kernels=(kind,), stream_sizes=(1 << 20,), budget_s=1e-3)
        return membw.needs(virtual, config), lambda: membw.run(virtual, config)

    def gemv():
        config = membw.MembwConfig(kernels=("gemv",), dtypes=("fp32",), gemv_shape=(256, 512), batches=(8,),
                                   budget_s=1e-3)
        return membw.needs(virtual, config), lambda: membw.run(virtual, config)

    def gemm(sizes, batches):
        config = flops.FlopsConfig(modes=("fp32",), sizes=sizes, decode_batches=batches, decode_k=512, budget_s=1e-3)
        return flops.needs(virtual, config), lambda: flops.run(virtual, config)

    def copies(probe, run):
        config = links.LinkConfig(sizes=(1 << 16, 1 << 20), latency_sizes=(1 << 16, 1 << 20), budget_s=1e-3)
        return links.needs(virtual, config, probe), lambda: run(virtual, config)

    cases = [stream(k) for k in membw.STREAM_KERNELS] + [gemv(), gemm((384,), ()), gemm((8,), (4,))]
    cases += [copies(p, r) for p, r in (("host-link", links.run_host_link), ("d2d", links.run_d2d),
                                        ("peer", links.run_peer), ("latency", run_latency))]
    for needs, run in cases:
        run()  # once untraced: what the first run loads once (the datasheet profiles) is no case's memory
        tracemalloc.start()
        try:
            run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        declared = max(n.footprint.device_bytes * n.devices + n.footprint.host_bytes for n in needs)
        assert peak <= declared, (needs[0].case, peak, declared)


def test_host_memory_is_known_here():
    assert host_memory_bytes() > 1 << 28
    assert host_unfit("a ping-pong", 1 << 60) and host_unfit("a ping-pong", 1 << 10) is None


def test_the_card_count_for_capacity_saturates_instead_of_overflowing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert int(min_cards_by_capacity(1e30, 1.0)) == MAX_CARD_COUNT
    assert int(min_cards_by_capacity(180e9, 24e9)) == 8
