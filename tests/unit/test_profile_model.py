"""The typed profile model (``gpucal.profiles.model``): the one source of the format.

The shipped ``profiles/schema.json`` is the schema generated from it, valid JSON Schema that every shipped
document validates against; quantities are built and written by the model's constructors; an old format
goes through the migration table before validation; the model and the published schema refuse alike."""

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from gpucal import profiles
from gpucal.errors import ProfileError
from gpucal.profiles import io
from gpucal.profiles import model as m

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
SHIPPED = resources.files("gpucal.profiles").joinpath("schema.json")


def test_the_shipped_schema_is_the_generated_one():
    """Regenerate it with ``python -m gpucal.profiles.model > src/gpucal/profiles/schema.json``."""
    assert SHIPPED.read_text("utf-8") == m.schema_text()
    assert profiles.schema() == m.json_schema()


def test_the_generated_schema_is_valid_json_schema():
    schema = m.json_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$defs"]["profile"]["additionalProperties"] is False


def _validator():
    schema = m.json_schema()
    return jsonschema.validators.validator_for(schema)(schema)


def _shipped_documents():
    for kind in ("profile", "link"):
        for name, folder in profiles.builtin_names(kind).items():
            yield f"{folder}/{name}.json", json.loads(resources.files("gpucal.profiles").joinpath(
                folder, f"{name}.json").read_text("utf-8"))
    yield FIXTURE.name, json.loads(FIXTURE.read_text())


def test_every_shipped_document_and_the_first_calibrated_profile_validate_against_the_published_schema():
    validator = _validator()
    seen = 0
    for origin, data in _shipped_documents():
        errors = list(validator.iter_errors(data))
        assert not errors, (origin, errors[0].message, list(errors[0].absolute_path))
        seen += 1
    assert seen >= 24


def test_the_model_reads_back_what_it_was_given():
    for origin, data in _shipped_documents():
        doc = profiles.validate(copy.deepcopy(data), origin)
        written = doc.model.to_json()
        # the same values, as the same JSON (24 stays 24, not 24.0); the model's keys come in its own order
        assert written == data and json.dumps(written, sort_keys=True) == json.dumps(data, sort_keys=True), origin


RTX4090 = profiles.load_builtin("profile", "rtx4090").data


@pytest.mark.parametrize("mutate", [
    lambda d: d["devices"][0]["memory_bandwidth_Bps"].update(value=-1),
    lambda d: d["devices"][0]["memory_bytes"].update(value="24GB"),
    lambda d: d["devices"][0]["memory_bytes"].update(value=True),
    lambda d: d["devices"][0]["dense_flops"]["fp32"].pop("ref"),
    lambda d: d["devices"][0]["dense_flops"]["fp32"].update(value=None),
    lambda d: d["devices"][0]["dense_flops"].update(fp17={"value": 1, "source": "derived"}),
    lambda d: d["devices"][0]["memory_bytes"].update(speed=3),
    lambda d: d["devices"][0]["memory_bytes"].update(source="measured"),
    lambda d: d["devices"][0]["memory_bytes"].update(p10=None),
    lambda d: d["devices"][0].update(count=65),
    lambda d: d["devices"][0]["peer_link"].update(kind="nvlink"),
    lambda d: d.update(title="bad\x1b[2J"),
    lambda d: d.update(plan_defaults={"link": "/etc/passwd"}),
    lambda d: d.update(links=[{"src": 0}]),
])
def test_the_model_and_the_published_schema_refuse_alike(mutate):
    data = copy.deepcopy(RTX4090)
    data["devices"][0]["peer_link"].pop("bandwidth_Bps", None)
    mutate(data)
    with pytest.raises(ProfileError):
        profiles.validate(data, "bad.json")
    assert list(_validator().iter_errors(data))


def test_a_document_holds_its_typed_model():
    doc = profiles.load(FIXTURE)
    profile = doc.model
    assert isinstance(profile, m.Profile) and doc.profile is profile
    device = profile.devices[0]
    assert device.memory_bandwidth_Bps.value == doc.data["devices"][0]["memory_bandwidth_Bps"]["value"]
    assert device.memory_bandwidth_Bps.source == "simulated" and device.memory_bandwidth_Bps.n == 20
    assert device.flops("fp16_fp32acc").value == 165.1e12 and device.flops("sparse:fp16_fp32acc") is None
    assert device.host_link.h2d.beta_Bps.value == 26.15e9 and device.peer_link is None or device.peer_link.kind
    assert [(link.src, link.dst, link.path) for link in profile.links] == [(0, 1, "host-staged"),
                                                                            (1, 0, "host-staged")]
    assert profile.links[0].known and profile.links[0].points[0] == (4, 4.000152963671128e-06)
    assert profile.device_count == 2 and profile.cards_per_host is None
    link = profiles.load_builtin("link", "pcie4-x16").model
    assert isinstance(link, m.LinkPreset) and link.beta_Bps.source == "spec" and link.beta_Bps.ref


def test_a_document_built_from_a_dict_validates_it_when_its_model_is_read():
    data = copy.deepcopy(RTX4090)
    assert profiles.Document("profile", "rtx4090", "x.json", data).model.name == "rtx4090"
    data["devices"][0]["memory_bytes"]["value"] = 0
    doc = profiles.Document("profile", "rtx4090", "x.json", data)  # figures may draw what no schema accepts
    with pytest.raises(ProfileError) as info:
        doc.model
    assert info.value.path == "x.json" and info.value.field == "devices[0].memory_bytes.value"


def test_quantity_constructors_write_what_the_builders_write():
    q = m.RateQuantity.measured(1e12, method="stream read kernel", n=20, p10=0.99e12, p90=1.01e12,
                                byte_convention="dram_Bps = n/t")
    assert q.to_json() == {"value": 1e12, "source": "measured", "method": "stream read kernel", "statistic": "median",
                           "n": 20, "p10": 0.99e12, "p90": 1.01e12, "byte_convention": "dram_Bps = n/t"}
    assert m.TimeQuantity.simulated(2e-6, method="fit", statistic="fit", n=12).to_json() == {
        "value": 2e-6, "source": "simulated", "method": "fit", "statistic": "fit", "n": 12}
    assert m.FlopsQuantity.datasheet(312e12, "a100-datasheet").to_json() == {
        "value": 312e12, "source": "datasheet", "ref": "a100-datasheet"}
    assert m.RateQuantity.derived(1e12, "clock x bus").to_json() == {"value": 1e12, "source": "derived",
                                                                     "note": "clock x bus"}
    assert m.BytesQuantity.reported(25769803776).to_json() == {"value": 25769803776, "source": "reported"}
    assert m.IntegerQuantity.reported(None).to_json() == {"value": None, "source": "reported",
                                                          "reason": "not reported"}
    assert m.FlopsQuantity.null("no FP8 tensor cores on Ampere", "datasheet", ref="a100-datasheet").to_json() == {
        "value": None, "source": "datasheet", "ref": "a100-datasheet", "reason": "no FP8 tensor cores on Ampere"}
    assert type(m.BytesQuantity.reported(24).to_json()["value"]) is int  # an integer stays one
    assert m.FlopsQuantity.datasheet(1e12, "x").cited == "datasheet (x)"
    for bad in (lambda: m.RateQuantity.measured(0.5, method="x", n=1),  # below 1 B/s
                lambda: m.TimeQuantity.measured(1.0, method="x", n=0),  # no samples
                lambda: m.RateQuantity.of(1.0, "datasheet"),  # a datasheet value cites its document
                lambda: m.RateQuantity.of(1.0, "rumour")):
        with pytest.raises(ValueError):
            bad()


def test_one_fit_type_for_links_network_and_collectives():
    for entry in (m.LinkEntry, m.NetworkEntry, m.CollectiveEntry):
        assert issubclass(entry, m.MeasuredFit) and issubclass(entry, m.FitRecord)
    assert issubclass(m.CopyFit, m.FitRecord) and issubclass(m.LinkPreset, m.AlphaBeta)
    defs = m.json_schema()["$defs"]
    for name in ("link_entry", "network_entry", "collective_entry", "copy_fit"):
        assert defs[name]["properties"]["pieces"] == defs["link_entry"]["properties"]["pieces"]
        assert defs[name]["properties"]["pieces"]["items"] == {"$ref": "#/$defs/fit_piece"}
    fit = m.LinkEntry.model_validate(dict(profiles.read(FIXTURE)["links"][0], pieces=[
        {"lo_bytes": 0, "hi_bytes": 1e6, "alpha_s": 1e-5, "beta_Bps": 1e10},
        {"lo_bytes": 1e6, "hi_bytes": 1e9, "alpha_s": 2e-5, "beta_Bps": 2e10}]))
    assert fit.piece_for(10).beta_Bps == 1e10 and fit.piece_for(1e7).beta_Bps == 2e10


def test_an_old_format_is_migrated_before_it_is_validated(monkeypatch):
    old = copy.deepcopy(RTX4090)
    old["schema"] = "gpucal.profile/0"
    old["memory"] = old["devices"][0].pop("memory_bytes")  # the fake old format kept it at the top

    def to_1(data):
        data = copy.deepcopy(data)
        data["devices"][0]["memory_bytes"] = data.pop("memory")
        return dict(data, schema="gpucal.profile/1")

    with pytest.raises(ProfileError) as info:
        profiles.validate(old, "old.json")
    assert info.value.field == "schema" and "gpucal.profile/0" in info.value.detail
    monkeypatch.setitem(io.MIGRATIONS, "gpucal.profile/0", to_1)
    doc = profiles.validate(old, "old.json")
    assert doc.data["schema"] == "gpucal.profile/1" and doc.profile.devices[0].memory_bytes.value == 25_769_803_776
    assert old["schema"] == "gpucal.profile/0"  # the caller's dict is left as it was
    assert io.MIGRATIONS.get("gpucal.profile/1") is None


def test_format_1_has_no_migrations():
    assert io.MIGRATIONS == {}


CALIBRATED = json.loads(FIXTURE.read_text())


def test_a_copy_fit_without_its_points_is_refused():
    data = copy.deepcopy(CALIBRATED)
    data["fits"][0].pop("points")
    with pytest.raises(ProfileError) as caught:
        profiles.validate(data, "bad.json")
    assert caught.value.field == "fits[0]" and "points" in caught.value.detail
    assert list(_validator().iter_errors(data))  # and the published schema says the same


def test_a_quantity_in_the_open_provenance_cites_a_known_document():
    data = copy.deepcopy(CALIBRATED)
    data["host"]["topology_note"] = {"value": 1, "source": "datasheet", "ref": "nosuch"}
    with pytest.raises(ProfileError, match="nosuch"):
        profiles.validate(data, "bad.json")
    data["documents"] = {"sheet": {"title": "a datasheet"}}
    data["host"]["topology_note"]["ref"] = "sheet"
    profiles.validate(data, "good.json")


def test_a_huge_float_for_an_integer_is_refused_in_a_short_line():
    data = copy.deepcopy(RTX4090)
    data["devices"][0]["index"] = 1e300
    with pytest.raises(ProfileError) as caught:
        profiles.validate(data, "bad.json")
    assert caught.value.field == "devices[0].index" and len(str(caught.value)) < 200, str(caught.value)
