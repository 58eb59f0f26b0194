"""The conformer-diffusion setting (issue #11, in progress): GeoDiff-style diffusion over 3D atom
positions given the molecular graph. ``conformers.py``: the data type and the bundled drug-like set."""
