"""``python -m gpucal.profiles.model > src/gpucal/profiles/schema.json``: the JSON Schema, generated."""

import sys

from gpucal.profiles.model.schema import schema_text

sys.stdout.write(schema_text())
