"""The profile contract: gpucal's documents and everything that reads or writes them.

- ``gpucal.profiles.io`` (re-exported here): load, validate and save documents (hardware profiles, link
  presets, model descriptions); built-in documents by name.
- ``gpucal.profiles.names``: from a name or a path to a loaded document (built-ins first, close matches
  suggested, a profile's own references kept inside its folder).
- ``gpucal.profiles.queries``: what the planner and the other readers take from a document (a card, a
  link, the network, a collective), with the flags that override it.
- ``gpucal.profiles.export``: a profile in other planners' formats (llm-analysis, aiconfigurator).

Package data: ``schema.json`` (the format of every document), the datasheet profiles (``datasheet/``), the
article's profiles (``article/``), link presets (``links/``) and measured profiles that users contribute
(``measured/``).
"""

from gpucal.profiles.io import (FORMATS, LINK_FORMAT, MODEL_FORMAT, PROFILE_FORMAT, Document, ambiguity_note,
                                builtin_kind, builtin_names, datasheet_for, dumps, exists, is_bare, load, load_builtin,
                                looks_like_path, parse, read, read_bytes, save, schema, shown_name, validate,
                                write_atomic)

__all__ = ["FORMATS", "LINK_FORMAT", "MODEL_FORMAT", "PROFILE_FORMAT", "Document", "ambiguity_note", "builtin_kind",
           "builtin_names", "datasheet_for", "dumps", "exists", "is_bare", "load", "load_builtin", "looks_like_path",
           "parse", "read", "read_bytes", "save", "schema", "shown_name", "validate", "write_atomic"]
