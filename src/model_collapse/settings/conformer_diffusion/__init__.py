"""The conformer-diffusion setting (the paper's §2.2, Fig. 4): GeoDiff-style diffusion over 3D atom
positions given the molecular graph, in plain PyTorch.

``conformers.py`` the data type and the bundled drug-like set; ``datasets.py`` the split by molecule and
``geom.py`` GeoDiff's pickles; ``graph.py`` batches and edges; ``network.py`` the dual-encoder network,
loss and sampler; ``training.py`` the fit; ``chemistry.py`` RDKit: mol blocks, MAT/COV, pictures;
``config.py`` what the setting is; ``setting.py`` the setting itself."""
