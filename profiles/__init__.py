"""Package data of gpucal: ``schema.json`` (the format of every document), the datasheet profiles
(``datasheet/``), the article's profiles (``article/``), link presets (``links/``) and measured
profiles that users contribute (``measured/``). Load them with ``gpucal.profile``."""
