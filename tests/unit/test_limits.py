"""The schema's bounds are gpucal.limits' (and plan.models'): pinned here so that they cannot drift apart.

The schema is the one generated from the model (``gpucal.profiles.model``); each part's definition is named
after its model in snake case (``TimeQuantity``: ``$defs/time_quantity``)."""

import copy
import re

import pytest

from gpucal import limits, render
from gpucal import profiles as profile
from gpucal.errors import ProfileError
from gpucal.plan.models import MODEL_MAXIMA

SCHEMA = profile.schema()
DEFS = SCHEMA["$defs"]

# Bounds of the schema's own (no constant in gpucal.limits names them): docs/profiles.md lists them.
SCHEMA_ONLY_MAXIMA = {1_000_000_000, 64, 16, 1, 2, 1023, 1e12}


def _bounds(node):
    """The number schema of a field that may also be null (pydantic writes ``anyOf: [number, null]``)."""
    if "anyOf" in node:
        (node,) = [choice for choice in node["anyOf"] if choice.get("type") != "null"]
    return node


@pytest.mark.parametrize("name, kind", [("time_quantity", "time"), ("bytes_quantity", "bytes"),
                                        ("rate_quantity", "rate"), ("flops_quantity", "flops")])
def test_each_quantity_kind_has_its_range(name, kind):
    lo, hi = limits.RANGES[kind]
    for key in ("value", "p10", "p90"):
        bounds = _bounds(DEFS[name]["properties"][key])
        assert (bounds["minimum"], bounds["maximum"]) == (lo, hi), (name, key)


def test_devices_and_their_count_are_bounded_by_max_devices():
    profile_props = DEFS["profile"]["properties"]
    assert profile_props["devices"]["maxItems"] == limits.MAX_DEVICES
    assert DEFS["device"]["properties"]["count"]["maximum"] == limits.MAX_DEVICES
    for where in (DEFS["device"]["properties"]["index"], DEFS["link_entry"]["properties"]["src"],
                  DEFS["kernel_entry"]["properties"]["device"]):
        assert where["maximum"] == limits.MAX_DEVICES - 1


def test_the_model_bounds_are_the_planners():
    props = DEFS["model_doc"]["properties"]
    assert (props["params"]["minimum"], props["params"]["maximum"]) == limits.RANGES["params"]
    for key, hi in MODEL_MAXIMA.items():
        assert props[key]["maximum"] == hi, key


def _numbers(node, path=""):
    """Every schema node that admits a number, with its JSON pointer."""
    yield from _nodes(node, path, lambda n: {"number", "integer"} & set(n["type"] if isinstance(n.get("type"), list)
                                                                      else [n.get("type")]))


def _nodes(node, path, wanted):
    """Every schema node for which ``wanted(node)`` holds, with its JSON pointer."""
    if isinstance(node, dict):
        if wanted(node):
            yield path, node
        for key, value in node.items():
            yield from _nodes(value, f"{path}/{key}", wanted)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{path}/{i}", wanted)


def test_every_number_in_the_schema_is_bounded_on_both_sides_by_a_known_limit():
    known = {hi for _, hi in limits.RANGES.values()} | {limits.MAX_DEVICES, limits.MAX_DEVICES - 1}
    known |= set(MODEL_MAXIMA.values()) | SCHEMA_ONLY_MAXIMA
    known.add(limits.RANGES["flops"][1] * limits.RANGES["time"][1])  # a kernel's FLOP: the fastest rate for an hour
    checked = 0
    for path, node in _numbers(SCHEMA):
        if path in ("/$defs/flag_quantity/properties/p10", "/$defs/flag_quantity/properties/p90"):
            continue  # a yes/no has no percentiles; the other typed quantities bound their own (above)
        assert "minimum" in node or "exclusiveMinimum" in node, path
        assert node.get("maximum") in known, (path, node.get("maximum"))
        checked += 1
    assert checked > 50


def _rtx4090():
    return copy.deepcopy(profile.load_builtin("profile", "rtx4090").data)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["devices"][0]["memory_bytes"].update(value=1e300), "devices[0].memory_bytes.value"),
    (lambda d: d["devices"][0]["memory_bandwidth_Bps"].update(value=1e-300), "devices[0].memory_bandwidth_Bps.value"),
    (lambda d: d["devices"][0]["dense_flops"]["fp32"].update(value=1e30), "devices[0].dense_flops.fp32.value"),
    (lambda d: d["devices"][0].update(count=1_000_000), "devices[0].count"),
    (lambda d: d.update(devices=d["devices"] * (limits.MAX_DEVICES + 1)), "devices"),
])
def test_a_profile_outside_the_physical_ranges_is_invalid(mutate, field):
    data = _rtx4090()
    mutate(data)
    with pytest.raises(ProfileError) as info:
        profile.validate(data, "p.json")
    assert info.value.field == field


def test_the_devices_counts_together_stay_within_max_devices():
    data = _rtx4090()
    data["devices"] = [dict(data["devices"][0], count=limits.MAX_DEVICES // 2) for _ in range(3)]
    with pytest.raises(ProfileError, match="stand for 96 devices") as info:
        profile.validate(data, "p.json")
    assert info.value.field == "devices"
    data["devices"] = data["devices"][:2]
    assert profile.validate(data, "p.json").kind == "profile"


def test_every_text_pattern_of_the_schema_refuses_the_one_set_of_control_characters():
    """The schema's text fields and the terminal escaping use one set (limits.CONTROL_CHARACTERS)."""
    texts = [(path, n["pattern"]) for path, n in _nodes(SCHEMA, "", lambda n: isinstance(n.get("pattern"), str))
             if n["pattern"].startswith("^[^\\u0000")]
    assert len(texts) >= 20
    assert {p for _, p in texts} == {limits.TEXT_PATTERN}, texts
    pattern = re.compile(limits.TEXT_PATTERN)
    for char in ("\x00", "\x1b", "\x7f", "\x9b", "\u061c", "\u200e", "\u202e", "\u2066", "\ufeff"):
        assert not pattern.match(f"a{char}b") and render.escape(char, layout=False) != char
    assert pattern.match("NVIDIA H200 — 141 GB, café")
    assert any(path.endswith("host_info/properties/command") for path, _ in texts), [p for p, _ in texts]
