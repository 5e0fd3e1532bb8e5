"""The three documents: a hardware profile, a link preset, a model description; and their parts."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gpucal import limits
from gpucal.profiles.model.base import Name, Omittable, Open, Printable, Strict, Text, integer, number, walk
from gpucal.profiles.model.device import Device, DeviceIndex
from gpucal.profiles.model.entries import CollectiveEntry, CopyFit, KernelEntry, LinkEntry, NetworkEntry
from gpucal.profiles.model.fit import AlphaBeta
from gpucal.profiles.model.quantity import Quantity

__all__ = ["PROFILE_FORMAT", "LINK_FORMAT", "MODEL_FORMAT", "FORMATS", "Cited", "Anomaly", "HostInfo",
           "ClusterHost", "Cluster", "PlanDefaults", "Profile", "LinkPreset", "ModelDoc", "MODELS"]

PROFILE_FORMAT = "gpucal.profile/1"
LINK_FORMAT = "gpucal.link/1"
MODEL_FORMAT = "gpucal.model/1"
FORMATS = {PROFILE_FORMAT: "profile", LINK_FORMAT: "link", MODEL_FORMAT: "model"}
_URL = "^https?://[^\\u0000-\\u0020\\u007f-\\u009f\\u2028-\\u202e\\u2066-\\u2069]*$"
_CREATED = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[^\\u0000-\\u001f\\u007f-\\u009f\\u2028-\\u202e\\u2066-\\u2069]*$"


def _keys_are_names(schema: dict[str, Any]) -> None:
    """``documents``' keys are names: every other key refused (pydantic would allow them, unmatched)."""
    schema.pop("default", None)
    (pattern, value), = schema.pop("patternProperties").items()
    schema.update(propertyNames={"pattern": pattern, "maxLength": 100}, additionalProperties=value)


class Cited(Strict):
    """A document a quantity cites (``ref``): its title, where to find it, the section."""

    title: Text
    url: Omittable[Annotated[str, Field(pattern=_URL, max_length=2000)]] = None
    section: Omittable[Text] = None


Documents = Annotated[dict[Name, Cited], Field(json_schema_extra=_keys_are_names)]


class Anomaly(Open):
    """Something the run saw that may spoil its numbers (a throttle, a busy device)."""

    kind: Printable
    text: Printable


class HostInfo(Open):
    """Provenance of a measured or simulated profile: host, CPU, driver, CUDA runtime, libraries, the command
    line, start and end (keys beyond these are kept as written)."""

    hostname: Omittable[Printable] = None
    command: Omittable[Printable] = None
    started: Omittable[Printable] = None
    finished: Omittable[Printable] = None
    backend: Omittable[Printable] = None
    mode: Omittable[Literal["quick", "full"]] = None
    anomalies: Omittable[list[Anomaly]] = None


class ClusterHost(Open):
    """One host of a cluster profile: its name, its ranks and devices, its own profile as it calibrated it."""

    hostname: Printable
    ranks: list[DeviceIndex]
    devices: Annotated[list[DeviceIndex], Field(min_length=1)]
    profile: Omittable[dict[str, Any]] = None


class Cluster(Open):
    """Provenance of a cluster profile (gpucal calibrate --cluster): the MPI world, its hosts, and each host's
    own profile as it calibrated it."""

    ranks: integer(1, limits.MAX_DEVICES)
    mpi: Omittable[dict[str, Any]] = None
    simulated_hosts: Omittable[bool] = None
    network_link: Optional[Printable] = None
    hosts: Annotated[list[ClusterHost], Field(min_length=1, max_length=limits.MAX_DEVICES)]


class PlanDefaults(Strict):
    """What the planner takes from the profile when the command line does not say."""

    link: Omittable[Annotated[Name, Field(description=(
        "the link preset the planner uses between cards when --link is not given"))]] = None


def _check_refs(document: Strict) -> None:
    """Every quantity that cites a document names one of ``documents``."""
    known = getattr(document, "documents", None) or {}
    for path, part in walk(document):
        if isinstance(part, Quantity):
            ref = part.ref
        elif isinstance(part, dict) and "source" in part:  # a quantity inside an Open part (host, cluster)
            ref = part.get("ref")
        else:
            continue
        if ref is not None and ref not in known:
            raise PydanticCustomError("ref", "cites '{ref}', which is not in 'documents'", {"ref": ref, "at": f"{path}.ref"})


class Profile(Strict):
    """A hardware profile: a machine's devices and, when calibrated, what was measured between them."""

    schema_: Literal["gpucal.profile/1"] = Field(alias="schema")
    name: Name
    title: Text
    source: Literal["datasheet", "article", "measured", "simulated"]
    created: Annotated[str, Field(pattern=_CREATED)]
    gpucal_version: Printable
    documents: Omittable[Documents] = None
    notes: Omittable[list[Text]] = None
    host: Optional[HostInfo] = None
    devices: Annotated[list[Device], Field(min_length=1, max_length=limits.MAX_DEVICES)]
    links: Omittable[list[LinkEntry]] = None
    collectives: Omittable[list[CollectiveEntry]] = None
    network: Omittable[list[NetworkEntry]] = None
    plan_defaults: Omittable[PlanDefaults] = None
    fits: Omittable[list[CopyFit]] = None
    kernels: Omittable[list[KernelEntry]] = None
    cluster: Omittable[Cluster] = None

    @model_validator(mode="after")
    def _rules(self) -> Profile:
        total = self.device_count
        if total > limits.MAX_DEVICES:
            raise PydanticCustomError("devices", "stand for {total} devices (the sum of their count); the most a "
                                      "profile may hold is {most}", {"total": f"{total:,}", "most": limits.MAX_DEVICES,
                                                                     "at": "devices"})
        _check_refs(self)
        return self

    @property
    def device_count(self) -> int:
        """The devices the profile stands for: the sum of ``devices[].count``."""
        return sum(d.units for d in self.devices)

    @property
    def default_link(self) -> str | None:
        """``plan_defaults.link``: the link preset the planner uses when none is named and none was measured."""
        return self.plan_defaults.link if self.plan_defaults else None

    @property
    def cards_per_host(self) -> int | None:
        """The fewest cards on one host of a cluster profile (a layout must fit the smallest host); ``None``
        for a profile of one machine."""
        counts = [len(h.devices) for h in self.cluster.hosts] if self.cluster else []
        return min(counts) if counts else None


class LinkPreset(AlphaBeta):
    """A link preset (``gpucal.link/1``): a link's alpha and beta, with their provenance."""

    schema_: Literal["gpucal.link/1"] = Field(alias="schema")
    name: Name
    title: Text
    kind: Literal["pcie", "nvlink", "host-staged", "ethernet", "infiniband", "other"]
    documents: Omittable[Documents] = None
    notes: Omittable[list[Text]] = None

    @model_validator(mode="after")
    def _rules(self) -> LinkPreset:
        _check_refs(self)
        return self


def _size(key: str) -> Any:
    return integer(1, limits.MODEL_MAXIMA[key])


class ModelDoc(Strict):
    """A model description (``gpucal.model/1``) for the planner: parameters, layers, widths, heads."""

    schema_: Literal["gpucal.model/1"] = Field(alias="schema")
    name: Name
    title: Omittable[Text] = None
    params: number(*limits.RANGES["params"])
    layers: _size("layers")
    hidden: _size("hidden")
    heads: _size("heads")
    kv_heads: _size("kv_heads")
    head_dim: Omittable[_size("head_dim")] = None
    vocab: Omittable[_size("vocab")] = None
    ffn: Omittable[_size("ffn")] = None
    source: Omittable[Text] = None
    notes: Omittable[list[Text]] = None

    @model_validator(mode="after")
    def _rules(self) -> ModelDoc:
        if self.heads % self.kv_heads:
            raise PydanticCustomError("heads", "{kv_heads} does not divide heads ({heads})",
                                      {"kv_heads": self.kv_heads, "heads": self.heads, "at": "kv_heads"})
        return self


MODELS: dict[str, type[Strict]] = {"profile": Profile, "link": LinkPreset, "model": ModelDoc}
