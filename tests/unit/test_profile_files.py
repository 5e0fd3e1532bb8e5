"""Files that are not files, numbers that are not numbers, names that could be two things, references that
leave their folder, model configs that do not add up: each refused with one ``ProfileError``/``InputError``
naming the file (and the field), never a traceback, a hang or another file's content."""

import copy
import errno
import json
import os
import re
import subprocess
import sys

import pytest

from gpucal import limits
from gpucal import profiles as profile
from gpucal.errors import InputError, ProfileError
from gpucal.plan.models import MODEL_MAXIMA, ModelSpec, model_from_hf_config
from gpucal.profiles import names
from gpucal.profiles import queries as inputs
from gpucal.profiles.model import PlanDefaults


def rtx4090():
    return copy.deepcopy(profile.load_builtin("profile", "rtx4090").data)


# --- files that are not files ---

def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = ("import sys\nfrom gpucal import profiles as profile\nfrom gpucal.errors import ProfileError\ntry:\n    profile.read(sys.argv[1])\n"
              "except ProfileError as exc:\n    print(exc)\n")
    try:  # in a process of its own: with no writer, a blocking open would wait for ever
        out = subprocess.run([sys.executable, "-c", script, str(fifo)], capture_output=True, text=True, timeout=60,
                             check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO blocked")
    assert out.stdout.strip() == f"{fifo}: is a FIFO (named pipe); gpucal reads documents only from regular files"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_before_a_byte_is_read(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with pytest.raises(ProfileError, match="character device"):
        profile.read(device)


def test_a_folder_a_missing_file_and_an_unreadable_one(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match="folder"):
        profile.read(tmp_path)
    with pytest.raises(ProfileError, match="cannot read: No such file"):
        profile.read(tmp_path / "none.json")
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith("locked.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    (tmp_path / "locked.json").write_text("{}")
    monkeypatch.setattr(os, "open", denied)  # root reads any file: the refusal itself is what is tested
    with pytest.raises(ProfileError, match="cannot read: Permission denied"):
        profile.read(tmp_path / "locked.json")


def test_a_file_over_the_limit_is_refused_after_reading_at_most_the_limit(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 101)
    with pytest.raises(ProfileError, match="larger than"):
        profile.read_bytes(path, limit=100)
    assert profile.read_bytes(path, limit=101) == b" " * 101
    status = "/proc/self/status"  # a regular file whose size says 0: only the bounded read stops it
    if os.path.exists(status) and os.stat(status).st_size == 0:
        with pytest.raises(ProfileError, match="larger than"):
            profile.read_bytes(status, limit=100)
    assert limits.MAX_INPUT_FILE_BYTES == profile.read_bytes.__defaults__[0]


@pytest.mark.parametrize("name, words", [
    ("a" * 100_000, "100,000 characters long"),  # past PATH_MAX: refused before the system is asked
    ("a" * 300, "too long for the file system"),  # one component past NAME_MAX
    ("a\0b.json", "NUL"),
    ("", "empty file name"),
])
def test_a_name_no_file_can_have_is_one_short_error(name, words):
    with pytest.raises(ProfileError, match=words) as info:
        profile.read(name)
    assert len(str(info.value)) < 400
    assert not profile.looks_like_path("b" * 100_000)  # no OSError: no such file, so a name


# --- numbers that are not numbers ---

@pytest.mark.parametrize("number, words", [("1e999", "1e999 is not a finite number"),
                                           ("-1e999", "-1e999 is not a finite number"),
                                           ("1" * 41, "integer of 41 digits")])
def test_a_number_out_of_any_range_is_refused_naming_the_field(number, words):
    text = json.dumps(rtx4090()).replace('"value": 1008000000000.0', f'"value": {number}', 1)
    assert number in text
    with pytest.raises(ProfileError, match=words) as info:
        profile.parse(text, "p.json")
    assert info.value.field == "devices[0].memory_bandwidth_Bps.value"
    assert profile.parse('{"a": [1, 2.5, ' + "9" * 40 + "]}", "p.json") == {"a": [1, 2.5, int("9" * 40)]}


# --- text that would drive the terminal ---

@pytest.mark.parametrize("text, code", [("\x1b]0;pwned\x07", "U+001B"), ("a\x9bb", "U+009B"), ("x\u202eevil", "U+202E"),
                                        ("tab\there", "U+0009"), ("del\x7f", "U+007F")])
def test_a_control_character_in_a_text_field_is_refused_naming_the_field(text, code):
    for mutate, field in ((lambda d: d.update(title=text), "title"),
                          (lambda d: d["devices"][0].update(name=text), "devices[0].name"),
                          (lambda d: d["documents"][next(iter(d["documents"]))].update(title=text), None)):
        data = rtx4090()
        mutate(data)
        with pytest.raises(ProfileError, match=re.escape(f"control character {code}")) as info:
            profile.validate(data, "p.json")
        if field:
            assert info.value.field == field
    data = rtx4090()
    data["title"] = "RTX 4090 · 24 GB — «ok» 日本"  # printable Unicode stays welcome
    profile.validate(data, "p.json")


# --- a name that is a built-in and a file ---

def test_a_bare_built_in_name_is_the_built_in_and_says_so_when_a_file_has_it_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = rtx4090()
    data["title"] = "the file"
    (tmp_path / "rtx4090").write_text(json.dumps(data))
    assert names.resolve_document("./rtx4090", "--gpu", "profile").data["title"] == "the file"
    doc = names.resolve_document("rtx4090", "--gpu", "profile")
    assert doc.data["title"] != "the file" and doc.folder is None
    note = names.ambiguity_note("rtx4090", "profile")
    assert "built-in profile" in note and "./rtx4090" in note
    assert names.ambiguity_note("./rtx4090") is None and names.ambiguity_note("h100-sxm") is None
    (tmp_path / "seed-70b").write_text("{}")
    assert "model preset" in names.ambiguity_note("seed-70b", "model")
    assert inputs.resolve_model("seed-70b").name == "seed-70b"
    (tmp_path / "mine").write_text(json.dumps(data))  # no built-in of that name: the file
    assert names.resolve_document("mine", "--gpu", "profile").data["title"] == "the file"


# --- a profile's references ---

def _with_link(tmp_path, link):
    data = rtx4090()
    data["plan_defaults"] = {"link": link}
    path = tmp_path / "sub" / "p.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return profile.load(path)


def test_a_reference_is_a_built_in_or_a_file_beside_the_profile_never_the_current_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    link = profile.load_builtin("link", "pcie4-x16").data
    (tmp_path / "mylink.json").write_text(json.dumps(dict(link, name="cwd", title="the current folder's")))
    doc = _with_link(tmp_path, "mylink.json")
    with pytest.raises(InputError, match="neither a built-in link nor a file in the profile's own folder"):
        inputs.planner_link(doc)
    (tmp_path / "sub" / "mylink.json").write_text(json.dumps(dict(link, name="beside")))
    assert inputs.planner_link(doc).spec.name == "beside"
    assert inputs.planner_link(_with_link(tmp_path, "pcie4-x16")).spec.name == "pcie4-x16"


def test_an_error_about_a_referenced_file_never_repeats_its_content(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "secret.json").write_text(json.dumps({"schema": "TOP-SECRET-VALUE", "name": "x"}))
    doc = _with_link(tmp_path, "secret.json")
    with pytest.raises(InputError) as info:
        inputs.planner_link(doc, "--gpu")
    message = str(info.value)
    assert "TOP-SECRET" not in message
    assert message.startswith("--gpu (") and "plan_defaults.link" in message and "secret.json" in message


def test_a_reference_may_not_climb_out_of_the_profiles_folder(tmp_path):
    doc = _with_link(tmp_path, "x.json")
    (tmp_path / "outside.json").write_text("{}")
    os.symlink(tmp_path / "outside.json", tmp_path / "sub" / "x.json")
    with pytest.raises(InputError, match="out of the profile's own folder"):
        inputs.planner_link(doc)
    for value in ("/etc/passwd", "../outside.json"):  # the schema's name pattern refuses these; so does this
        # a document the schema would refuse, as a caller could build it: its model made without validation
        unchecked = doc.model.model_copy(update={"plan_defaults": PlanDefaults.model_construct(link=value)})
        doc = profile.Document(doc.kind, doc.name, doc.origin, dict(doc.data, plan_defaults={"link": value}),
                               folder=doc.folder, typed=unchecked)
        with pytest.raises(InputError, match="no absolute paths, no '..'"):
            names.profile_reference(doc, "plan_defaults.link", "--gpu", "link")
    builtin = profile.load_builtin("profile", "rtx4090")
    builtin = profile.Document("profile", "x", "datasheet/x.json", dict(builtin.data, plan_defaults={"link": "a.json"}))
    with pytest.raises(InputError, match="a built-in profile names only built-in links"):
        inputs.planner_link(builtin)


# --- model configs ---

LLAMA = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336}


@pytest.mark.parametrize("change, key", [
    ({"model_type": ["llama"]}, "model_type"),
    ({"model_type": {"a": 1}}, "model_type"),
    ({"hidden_size": 10**200}, "hidden_size"),
    ({"hidden_size": "4096"}, "hidden_size"),
    ({"hidden_size": True}, "hidden_size"),
    ({"hidden_size": 4096.0}, "hidden_size"),
    ({"num_hidden_layers": -3}, "num_hidden_layers"),
    ({"vocab_size": MODEL_MAXIMA["vocab"] + 1}, "vocab_size"),
    ({"num_hidden_layers": MODEL_MAXIMA["layers"], "hidden_size": MODEL_MAXIMA["hidden"]}, "parameters"),
    ({"hidden_size": 8}, "hidden_size"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    ({"num_key_value_heads": None, "intermediate_size": None}, "intermediate_size"),
])
def test_a_config_that_does_not_add_up_names_the_key(change, key):
    with pytest.raises(ValueError, match=key):
        model_from_hf_config(dict(LLAMA, **change), "x")


def test_a_bad_config_file_is_one_line_naming_model_the_file_and_the_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA).replace("4096", "1" + "0" * 200))
    with pytest.raises(InputError, match=r"^--model: .*config.json: hidden_size: ") as info:
        inputs.resolve_model(str(path))
    assert len(str(info.value)) < 300
    path.write_text(json.dumps(dict(LLAMA, model_type=["llama"])))
    with pytest.raises(InputError, match=r"^--model: .*config.json: model_type: "):
        inputs.resolve_model(str(tmp_path))  # the folder: its config.json
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without a config.json"):
        inputs.resolve_model(str(tmp_path / "empty"))


def test_every_model_number_is_bounded():
    for field in ("layers", "hidden", "heads", "head_dim"):
        values = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 1, "head_dim": 16}
        values[field] = MODEL_MAXIMA[field] + 1
        with pytest.raises(ValueError, match=field):
            ModelSpec("x", 1e9, **values)
    for params in (1e16, float("nan"), 10**400, 0.5):
        with pytest.raises(ValueError, match="params"):
            ModelSpec("x", params, 2, 64, 4, 1, 16)
    with pytest.raises(InputError, match="^--params: "):
        inputs.resolve_model("llama-2-7b", {"params": 1e308})


def test_an_inline_link_is_bounded_like_a_profiles_link():
    with pytest.raises(InputError, match="^--link: beta: '1e-300B/s' is below the smallest accepted"):
        inputs.resolve_link("alpha=1us,beta=1e-300B/s")
    with pytest.raises(InputError, match="^--net: alpha: '3601s' is above the largest accepted"):
        inputs.resolve_link("alpha=3601s,beta=1GB/s", "--net")
