"""The conformer data type: the bundled drug-like set, selection across parts as the regimes make it,
memory-mapped save and load against the chain's molecules, and damaged or foreign files refused."""

import numpy as np
import pytest

from model_collapse.errors import RunDirectoryError
from model_collapse.settings.conformer_diffusion.conformers import Conformers, bundled


@pytest.fixture(scope="module")
def real() -> Conformers:
    return bundled()


def test_the_bundled_set_holds_five_conformers_of_each_of_300_small_molecules(real):
    graphs = real.graphs
    assert len(graphs) == 300 and len(real) == 1500
    assert np.array_equal(np.bincount(real.molecule), np.full(300, 5))
    assert set(np.unique(graphs.atom_types)) <= {1, 6, 7, 8, 9, 16, 17}  # H C N O F S Cl
    heavy = np.array([(graphs.atoms(i) > 1).sum() for i in range(len(graphs))])
    assert heavy.min() >= 8 and heavy.max() <= 14
    for k in (0, 777, 1499):  # bonded atoms sit at bond lengths, conformers of a molecule differ
        bonds, types = graphs.bonds_of(real.molecule[k])
        x = real.positions_of(k)
        lengths = np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)
        assert lengths.min() > 0.9 and lengths.max() < 1.9 and set(types) <= {1, 2, 3, 12}
    assert not np.allclose(real.positions_of(0), real.positions_of(1))


def test_select_takes_conformers_across_parts_with_their_molecules(real):
    synthetic = Conformers.from_ensembles(
        real.graphs, [3, 3], [real.positions_of(15) + 1.0, real.positions_of(16) + 2.0]
    )  # two conformers "sampled" for molecule 3
    picked = Conformers.select([real, synthetic], np.array([[1501, 0, 1500, 16]]))
    assert picked.molecule.tolist() == [3, 0, 3, 3]
    np.testing.assert_allclose(picked.positions_of(0), real.positions_of(16) + 2.0)
    np.testing.assert_allclose(picked.positions_of(1), real.positions_of(0))
    np.testing.assert_allclose(picked.positions_of(3), real.positions_of(16))
    assert len(real.subset(np.array([7, 2]))) == 10 and set(real.subset(np.array([7, 2])).molecule) == {2, 7}


def test_a_saved_batch_loads_memory_mapped_against_the_chains_molecules(real, tmp_path):
    batch = real.subset(np.array([5, 9, 100]))
    batch.save(tmp_path)
    back = Conformers.load(tmp_path, like=real)
    assert isinstance(back.positions, np.memmap) and back.graphs is real.graphs
    np.testing.assert_array_equal(back.molecule, batch.molecule)
    np.testing.assert_array_equal(back.positions, batch.positions)


def test_damaged_or_foreign_batches_are_refused_in_one_line(real, tmp_path):
    batch = real.subset(np.array([5]))
    batch.save(tmp_path)
    np.save(tmp_path / "molecule.npy", np.array([5, 5, 5, 5, 400]))  # a molecule this chain does not have
    with pytest.raises(RunDirectoryError, match="molecule indices outside this chain's 300 molecules"):
        Conformers.load(tmp_path, like=real)
    np.save(tmp_path / "molecule.npy", np.array([5, 5, 5, 5, 6]))  # positions no longer fit the atoms
    with pytest.raises(RunDirectoryError, match=r"positions.npy: positions of shape"):
        Conformers.load(tmp_path, like=real)
    (tmp_path / "positions.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(RunDirectoryError, match="corrupted file .*positions.npy"):
        Conformers.load(tmp_path, like=real)
    (tmp_path / "molecule.npy").unlink()
    with pytest.raises(RunDirectoryError, match="missing file .*molecule.npy"):
        Conformers.load(tmp_path, like=real)


def test_coverage_and_matching_average_within_each_molecule_then_over_molecules():
    from model_collapse.settings.conformer_diffusion.chemistry import covmat

    # GeoDiff's covmat.py: one molecule with one reference at 0.2 A, one with nine at 2.0 A
    tables = [np.array([[0.2, 0.9]]), np.full((9, 18), 2.0)]
    scores = covmat(tables, delta=1.25)
    assert scores["mat_r"] == pytest.approx(1.10) and scores["cov_r"] == pytest.approx(0.5)
    assert scores["mat_r_median"] == pytest.approx(1.10) and scores["cov_r_median"] == pytest.approx(0.5)
    # pooled over references (the old way) these would be 1.82 and 0.10
    three = covmat([np.array([[0.1]]), np.array([[0.3]]), np.array([[2.0], [0.2]])], delta=0.5)
    assert three["mat_r_median"] == pytest.approx(0.3) and three["mat_r"] == pytest.approx((0.1 + 0.3 + 1.1) / 3)
    assert three["cov_r_median"] == 1.0 and three["cov_r"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert all(np.isnan(v) for v in covmat([], delta=1.25).values())


def test_coverage_is_given_over_geodiffs_grid_of_thresholds():
    from model_collapse.settings.conformer_diffusion.chemistry import COVERAGE_THRESHOLDS, coverage_curve, covmat

    # GeoDiff's CovMatEvaluator: np.arange(0.05, 3.05, 0.05)
    assert np.allclose(COVERAGE_THRESHOLDS, np.arange(0.05, 3.05, 0.05)) and len(COVERAGE_THRESHOLDS) == 60
    tables = [np.array([[0.2]]), np.array([[2.0]] * 9), np.array([[0.1], [0.7]])]
    curve = coverage_curve(tables)
    assert [p["threshold"] for p in curve] == COVERAGE_THRESHOLDS.tolist()
    # each point is covmat's COV-R at that threshold, mean and median over molecules
    for point in curve:
        at = covmat(tables, delta=point["threshold"])
        assert point["cov_r"] == pytest.approx(at["cov_r"]) and point["cov_r_median"] == pytest.approx(
            at["cov_r_median"]
        )
    by = {p["threshold"]: p["cov_r"] for p in curve}
    assert by[0.15] == pytest.approx(1 / 6) and by[0.5] == pytest.approx(0.5) and by[0.7] == pytest.approx(2 / 3)
    assert by[2.0] == 1.0 and by[3.0] == 1.0
    assert coverage_curve([]) == []


def test_a_reference_set_against_itself_is_covered_and_matched_exactly(real):
    from model_collapse.settings.conformer_diffusion.chemistry import coverage_and_matching

    references = real.subset(np.arange(3))
    scores = coverage_and_matching(references, references, delta=0.5)
    assert scores["cov_r"] == 1.0 and scores["mat_r"] == pytest.approx(0.0, abs=1e-6)
    assert set(scores) == {"cov_r", "mat_r", "cov_r_median", "mat_r_median"}


def test_disconnected_molecules_are_left_out_of_coverage_as_geodiff_filters_them(real):
    import dataclasses

    from model_collapse.settings.conformer_diffusion.chemistry import coverage_and_matching

    references = real.subset(np.arange(3))
    stretched = [
        references.positions_of(k) * (1.5 if m == 1 else 1.0) for k, m in enumerate(references.molecule)
    ]  # molecule 1's generated conformers are off
    generated = Conformers.from_ensembles(real.graphs, references.molecule, stretched)
    assert coverage_and_matching(references, generated, delta=0.5)["mat_r"] > 0.1
    smiles = real.graphs.smiles.copy()
    smiles[1] = smiles[1] + ".Cl"  # a salt: two fragments
    graphs = dataclasses.replace(real.graphs, smiles=smiles)
    marked = Conformers.from_ensembles(graphs, references.molecule, [references.positions_of(k) for k in range(15)])
    again = Conformers.from_ensembles(graphs, references.molecule, stretched)
    scores = coverage_and_matching(marked, again, delta=0.5)
    assert scores["mat_r"] == pytest.approx(0.0, abs=1e-6) and scores["cov_r"] == 1.0


def test_bond_validity_is_zero_error_for_the_references_and_catches_stretched_bonds(real):
    from model_collapse.settings.conformer_diffusion.chemistry import bond_lengths, bond_validity

    references = real.subset(np.arange(3))
    lengths = [bond_lengths(references, k) for k in range(len(references))]
    # the bundled conformers are force-field minima: their bonds vary by far less than 0.1 A
    same = bond_validity(references, references)
    assert same["bond_length_rms"] < 0.01 and same["valid_bond_share"] == 1.0
    stretched = Conformers.from_ensembles(
        real.graphs, references.molecule, [references.positions_of(k) * 1.1 for k in range(len(references))]
    )
    off = bond_validity(references, stretched)
    # every bond 10% longer: RMS near 0.1 x the RMS bond length; none within 0.1 A everywhere
    expected = np.mean([np.sqrt(np.mean((0.1 * x) ** 2)) for x in lengths])
    assert off["bond_length_rms"] == pytest.approx(expected, rel=0.1) and off["valid_bond_share"] == 0.0
    nothing = bond_validity(references, Conformers.from_ensembles(real.graphs, np.zeros(0, np.int64), []))
    assert np.isnan(nothing["bond_length_rms"]) and np.isnan(nothing["valid_bond_share"])


def test_mmff_energy_is_lowest_at_the_force_field_minima_and_rises_when_bonds_stretch(real):
    from model_collapse.settings.conformer_diffusion.chemistry import mmff_energies

    references = real.subset(np.arange(3))
    relaxed = mmff_energies(references)
    assert np.isfinite(relaxed).all()
    stretched = Conformers.from_ensembles(
        real.graphs, references.molecule, [references.positions_of(k) * 1.05 for k in range(len(references))]
    )
    assert (mmff_energies(stretched) > relaxed + 1.0).all()  # kcal/mol
    crushed = Conformers.from_ensembles(
        real.graphs, references.molecule[:1], [np.zeros_like(references.positions_of(0))]
    )  # every atom at one point: no finite energy
    assert mmff_energies(crushed)[0] == np.inf
