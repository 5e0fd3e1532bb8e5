"""Device layer of gpucal: the ``Backend`` (cupy, numba, simulator, virtual) and device code.

Each kernel will live here in Numba CUDA (so it also runs on the Numba CUDA simulator) and in CuPy
(RawKernel or cuBLAS), beside its NumPy reference and its declared work (``bytes_read``,
``bytes_written``, ``flop``). This layer knows nothing of timing or statistics; CuPy and Numba are
imported lazily, where used, so that ``import gpucal`` needs no GPU.
"""
