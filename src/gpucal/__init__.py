"""gpucal: measure what a GPU machine really delivers, and plan LLM inference from it.

Importing this package needs no GPU and no CUDA library; CuPy and Numba are imported lazily where
they are used. The face of the package is small: ``cli`` (commands, exit codes), ``profile`` (the
hardware-profile contract), ``units`` (parsing quantities at the boundary), ``render`` (tables).
"""

__version__ = "0.1.0"
