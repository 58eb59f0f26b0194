"""GeoDiff's GEOM pickles (``train_data_40k.pkl``, ``val_data_5k.pkl``, ``test_data_1k.pkl``), read safely.

Each file is a pickled list of PyTorch Geometric ``Data`` records, one per conformer, with ``atom_type``,
``pos`` (A, hydrogens included), ``edge_index`` and ``edge_type`` (the bonds, both directions, RDKit
bond types), ``smiles``, ``rdmol`` and energies. PyG 1.x pickled a record's attributes directly; PyG 2.x
keeps them in a ``GlobalStorage`` under ``_store``. Both are read without torch-geometric.

Unpickling runs whatever a file names, so ``plain pickle.load`` of a user's file is never used: the
unpickler here resolves only an allow-list (tensors and their storages, numpy arrays, ``OrderedDict``,
RDKit molecules, and the PyG record classes, mapped to a local stand-in) and refuses any other name with
the file and the name in one line. Tensor storages are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ...errors import ModelCollapseError


class _Record:
    """Stands in for PyG's ``Data`` and ``GlobalStorage``: keeps whatever state the pickle sets, and has
    no method of its own that a state could shadow (``_attributes`` reads it)."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


def _attributes(record: _Record) -> dict | None:
    """A record's fields (PyG 2.x keeps them in ``_store._mapping``, 1.x in the record itself), or None
    when the state is not laid out as either."""
    state = record.__dict__
    store = state.get("_store")
    if isinstance(store, _Record):  # PyG 2.x
        mapping = store.__dict__.get("_mapping", {})
        return dict(mapping) if isinstance(mapping, dict) else None
    return {key: value for key, value in state.items() if isinstance(key, str) and not key.startswith("_")}


class _Marker:
    """Stands in for classes a PyG 2.x record names but never instantiates (``DataEdgeAttr``)."""


def _storage_from_bytes(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _allowed() -> dict[tuple[str, str], object]:
    import torch._utils
    from rdkit import Chem

    try:  # numpy 2 (a pickle of numpy 1 names numpy.core, one of numpy 2 numpy._core)
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    numpy_core = {
        (module, name): getattr(multiarray, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    return {
        ("torch_geometric.data.data", "Data"): _Record,
        ("torch_geometric.data.storage", "GlobalStorage"): _Record,
        ("torch_geometric.data.data", "DataEdgeAttr"): _Marker,
        ("torch_geometric.data.data", "DataTensorAttr"): _Marker,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("rdkit.Chem.rdchem", "Mol"): Chem.Mol,
        **numpy_core,
    }


class ForbiddenClass(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, allowed):
        super().__init__(handle)
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ForbiddenClass(f"{module}.{name}") from None


def read_records(path: Path) -> list[dict]:
    """The records of a GeoDiff pickle, as dicts of numpy arrays and strings: ``atom_type`` (N,),
    ``pos`` (N, 3), ``bonds`` (B, 2) with ``bond_type`` (B,) (each bond once), ``smiles``.
    A missing, damaged or foreign file is a ModelCollapseError naming it."""
    try:
        with open(path, "rb") as handle:
            loaded = _RestrictedUnpickler(handle, _allowed()).load()
    except FileNotFoundError:
        raise ModelCollapseError(f"missing file {path}") from None
    except ForbiddenClass as error:
        raise ModelCollapseError(
            f"{path}: refused to unpickle {error}, which is not on the allow-list of GEOM files "
            "(tensors, arrays, RDKit molecules, PyG records)"
        ) from None
    except Exception as error:  # pickle raises many types for damaged files
        raise ModelCollapseError(f"{path}: not a GeoDiff pickle ({type(error).__name__}: {error})"[:300]) from None
    if not isinstance(loaded, list) or not all(isinstance(r, _Record) for r in loaded):
        raise ModelCollapseError(f"{path}: not a GeoDiff pickle (expected a list of PyG Data records)")
    records = []
    for index, record in enumerate(loaded):
        attributes = _attributes(record)
        if attributes is None:
            raise ModelCollapseError(f"{path}: record {index} is not laid out as a PyG Data record")
        try:
            records.append(_record(path, index, attributes))
        except (TypeError, ValueError, AttributeError) as error:  # fields of the wrong kind
            raise ModelCollapseError(f"{path}: record {index} has a field of the wrong kind ({error})"[:300]) from None
    return records


def _array(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _record(path: Path, index: int, attributes: dict) -> dict:
    missing = [key for key in ("atom_type", "pos", "edge_index", "edge_type") if attributes.get(key) is None]
    if missing:
        raise ModelCollapseError(f"{path}: record {index} lacks {', '.join(missing)}")
    atom_type = _array(attributes["atom_type"]).astype(np.int64).ravel()
    pos = _array(attributes["pos"]).astype(np.float32)
    edges = _array(attributes["edge_index"]).astype(np.int64)
    edge_type = _array(attributes["edge_type"]).astype(np.int64).ravel()
    atoms = len(atom_type)
    if not atoms:
        raise ModelCollapseError(f"{path}: record {index} is a molecule without atoms")
    if atom_type.min() < 1 or atom_type.max() >= 100:
        raise ModelCollapseError(f"{path}: record {index} has atom types outside 1-99 (atomic numbers)")
    if len(edge_type) and (edge_type.min() < 0 or edge_type.max() >= 22):
        raise ModelCollapseError(f"{path}: record {index} has edge types outside RDKit's 22 bond types")
    if pos.shape != (atoms, 3) or not np.isfinite(pos).all():
        raise ModelCollapseError(f"{path}: record {index} has positions of shape {pos.shape} for {atoms} atoms")
    if edges.ndim != 2 or edges.shape[0] != 2 or edges.shape[1] != len(edge_type):
        raise ModelCollapseError(f"{path}: record {index} has edge_index of shape {edges.shape}")
    if len(edge_type) and (edges.min() < 0 or edges.max() >= atoms):
        raise ModelCollapseError(f"{path}: record {index} has bonds to atoms it does not have")
    once = edges[0] < edges[1]  # GeoDiff lists each bond both ways
    smiles = attributes.get("smiles")
    return {
        "atom_type": atom_type,
        "pos": pos,
        "bonds": edges[:, once].T.copy(),
        "bond_type": edge_type[once],
        "smiles": str(smiles) if smiles is not None else "",
    }
