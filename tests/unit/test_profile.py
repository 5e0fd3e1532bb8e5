"""The profile contract: schema errors name the file and the field; writes are atomic and careful."""

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucal import profiles as profile
from gpucal.errors import ProfileError, ProfileExistsError
from gpucal.limits import RANGES


def rtx4090():
    return copy.deepcopy(profile.load_builtin("profile", "rtx4090").data)


def error_of(data, origin="test.json"):
    with pytest.raises(ProfileError) as info:
        profile.validate(data, origin)
    return info.value


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["devices"][0]["memory_bandwidth_Bps"].update(value=-1), "devices[0].memory_bandwidth_Bps.value", "minimum"),
    (lambda d: d["devices"][0]["memory_bytes"].update(value=0), "devices[0].memory_bytes.value", "less than the minimum of 1"),
    (lambda d: d["devices"][0]["memory_bytes"].update(value="24GB"), "devices[0].memory_bytes.value", "not of type"),
    (lambda d: d["devices"][0]["dense_flops"]["fp32"].pop("ref"), "devices[0].dense_flops.fp32", "'ref' is a required"),
    (lambda d: d["devices"][0]["dense_flops"]["fp32"].update(value=None), "devices[0].dense_flops.fp32", "'reason'"),
    (lambda d: d["devices"][0]["dense_flops"].update(fp17={"value": 1, "source": "derived"}),
     "devices[0].dense_flops", "fp17"),
    (lambda d: d["devices"][0]["memory_bytes"].update(source="rumour"), "devices[0].memory_bytes.source", "rumour"),
    (lambda d: d["devices"][0]["memory_bytes"].update(speed=3), "devices[0].memory_bytes", "speed"),
    (lambda d: d.pop("devices"), None, "'devices' is a required property"),
    (lambda d: d.update(devices=[]), "devices", "should be non-empty"),
    (lambda d: d["devices"][0]["memory_bytes"].update(ref="nowhere"), "devices[0].memory_bytes.ref", "not in 'documents'"),
    (lambda d: d["devices"][0]["memory_bytes"].update(source="measured"), "devices[0].memory_bytes", "method"),
])
def test_an_invalid_profile_names_the_file_and_the_field(mutate, field, words):
    data = rtx4090()
    mutate(data)
    error = error_of(data)
    assert error.path == "test.json"
    assert error.field == field
    assert words in error.detail
    assert str(error).startswith("test.json")


def test_an_unknown_format_version_is_refused_by_name():
    data = rtx4090()
    data["schema"] = "gpucal.profile/2"
    error = error_of(data)
    assert error.field == "schema" and "gpucal.profile/2" in error.detail


@pytest.mark.parametrize("raw, words", [
    (b"{", "not valid JSON"),
    (b'{"schema": NaN}', "NaN is not a JSON number"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[]", "expected a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
])
def test_unreadable_files_are_refused_with_their_name(tmp_path, raw, words):
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    with pytest.raises(ProfileError, match=words) as info:
        profile.load(path)
    assert info.value.path == str(path)


def test_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        profile.load(tmp_path / "none.json")
    with pytest.raises(ProfileError, match="folder"):
        profile.load(tmp_path)


def test_save_then_load_is_the_identity(tmp_path):
    data = rtx4090()
    path = profile.save(data, tmp_path / "p.json")
    assert profile.load(path).data == data
    assert path.read_text() == profile.dumps(data)


def test_save_never_overwrites_without_force(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("precious")
    with pytest.raises(ProfileExistsError, match="--force"):
        profile.save(rtx4090(), path)
    assert path.read_text() == "precious"
    profile.save(rtx4090(), path, force=True)
    assert profile.load(path).name == "rtx4090"
    assert sorted(os.listdir(tmp_path)) == ["p.json"]  # no temporary file left behind


def test_save_refuses_an_invalid_profile_and_writes_nothing(tmp_path):
    data = rtx4090()
    data["devices"][0]["memory_bytes"]["value"] = -1
    with pytest.raises(ProfileError):
        profile.save(data, tmp_path / "p.json")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot write"):
        profile.save(rtx4090(), tmp_path / "no" / "p.json")


def _in_range(kind):
    lo, hi = RANGES[kind]
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


# Printable text: the schema refuses control characters, separators and bidirectional overrides in text fields.
TEXT = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), max_size=50)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(bw=_in_range("rate"), mem=st.integers(1, int(RANGES["bytes"][1])), flops=st.dictionaries(
    st.sampled_from(["fp64", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc", "fp8_fp32acc"]), _in_range("flops")),
    note=TEXT, title=TEXT)
def test_round_trip_is_the_identity_for_any_valid_values(tmp_path, bw, mem, flops, note, title):
    data = rtx4090()
    data["title"] = title
    device = data["devices"][0]
    device["memory_bandwidth_Bps"].update(value=bw, note=note)
    device["memory_bytes"]["value"] = mem
    for mode, value in flops.items():
        device["dense_flops"][mode] = {"value": value, "source": "derived", "note": note}
    path = tmp_path / "round.json"
    profile.save(data, path, force=True)
    assert profile.load(path).data == data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
SCHEMAS = st.sampled_from(["gpucal.profile/1", "gpucal.link/1", "gpucal.model/1", "gpucal.profile/9", None])


@settings(max_examples=200, deadline=None)
@given(JSON, SCHEMAS)
def test_random_json_never_crashes_the_loader_with_anything_but_its_own_error(value, schema):
    if isinstance(value, dict) and schema is not None:
        value["schema"] = schema
    try:
        profile.validate(value, "random.json")
    except ProfileError as exc:
        assert str(exc).startswith("random.json")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_parser(raw):
    try:
        profile.validate(profile.parse(raw, "bytes.json"), "bytes.json")
    except ProfileError:
        pass


def test_a_model_document_checks_heads():
    doc = {"schema": "gpucal.model/1", "name": "m", "params": 1e9, "layers": 2, "hidden": 64, "heads": 8, "kv_heads": 3}
    assert error_of(doc).field == "kv_heads"
    doc["kv_heads"] = 2
    assert profile.validate(doc, "m.json").kind == "model"


def test_the_schema_is_valid_json_schema():
    jsonschema.validators.validator_for(profile.schema()).check_schema(profile.schema())
    assert json.loads(json.dumps(profile.schema())) == profile.schema()


def test_the_first_calibrated_profile_format_still_loads():
    """Kept as written by the first ``gpucal calibrate``: later schema changes must still read it."""
    path = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
    doc = profile.load(path)
    assert doc.kind == "profile" and doc.data["source"] == "simulated"
    assert [(link["src"], link["dst"], link["path"]) for link in doc.data["links"]] == [(0, 1, "host-staged"),
                                                                                    (1, 0, "host-staged")]


def test_a_link_entry_must_name_its_path_and_verdict():
    data = profile.read(Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json")
    data["links"][0]["path"] = "pigeon"
    with pytest.raises(ProfileError) as err:
        profile.validate(data, "x.json")
    assert err.value.field == "links[0].path"
