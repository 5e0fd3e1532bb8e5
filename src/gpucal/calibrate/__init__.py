"""From probe results to a hardware profile.

Pure fits (``fit_alpha_beta(sizes, times)``, and per regime ``fit_pieces``), verdicts (P2P per GPU pair, health against theoretical
peaks), the ``gpucal calibrate`` driver that writes a profile atomically, and exports to other
planners' formats will live here.
"""
