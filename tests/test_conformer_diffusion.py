"""The conformer-diffusion setting: GeoDiff's network and loss, the setting under every regime, resume
after a kill while sampling and while training, and bad input refused in one line."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from helpers import tiny_conformers, write_config
from model_collapse.chain import run_chain
from model_collapse.cli import app
from model_collapse.errors import ModelCollapseError
from model_collapse.regimes import parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings import SETTINGS
from model_collapse.settings.conformer_diffusion.config import ConformerDiffusionConfig
from model_collapse.settings.conformer_diffusion.conformers import Conformers, MoleculeGraphs, bundled
from model_collapse.settings.conformer_diffusion.graph import MoleculeBatch, pair_types
from model_collapse.settings.conformer_diffusion.network import DualEncoder, along_edges
from model_collapse.settings.conformer_diffusion.training import evaluation_loss, train

ConformerDiffusion = SETTINGS["conformer-diffusion"]
CPU = torch.device("cpu")


@pytest.fixture()
def config() -> ConformerDiffusionConfig:
    return ConformerDiffusionConfig.model_validate(tiny_conformers())


def test_pair_types_mark_bonds_angles_and_torsions():
    # butane's carbons C0-C1-C2-C3, the middle bond double: bonds keep their type, 2 and 3 bonds apart
    # are GeoDiff's 23 and 24, further is 0
    bonds = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    types = pair_types(5, bonds, np.array([1, 2, 1, 1]))
    assert types[0, 1] == 1 and types[1, 2] == types[2, 1] == 2
    assert types[0, 2] == 23 and types[0, 3] == 24 and types[0, 4] == 0 and types[1, 4] == 24
    assert np.array_equal(types, types.T) and not types.diagonal().any()
    assert pair_types(5, bonds, np.array([1, 2, 1, 1]), order=2)[0, 3] == 0


def _scores(model: DualEncoder, batch: MoleculeBatch) -> torch.Tensor:
    with torch.no_grad():
        global_scores, local_scores, edges, _, lengths = model(batch, batch.positions)
        return along_edges(global_scores + local_scores, batch.positions, edges, lengths)


def test_scores_turn_and_move_with_the_molecule_and_follow_its_atoms():
    real = bundled()
    torch.manual_seed(0)
    model = DualEncoder(ConformerDiffusionConfig().network, ConformerDiffusionConfig().diffusion).double().eval()
    batch = MoleculeBatch.of(Conformers.select([real], np.array([[0, 7, 12]])), CPU)
    batch.positions = batch.positions.double()
    scores = _scores(model, batch)
    assert scores.abs().max() > 1e-3  # not trivially zero

    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    moved = MoleculeBatch(**{**batch.__dict__, "positions": batch.positions @ rotation.T + torch.tensor([3.0, -2, 5])})
    torch.testing.assert_close(_scores(model, moved), scores @ rotation.T, rtol=1e-9, atol=1e-9)

    # the first molecule with its atoms numbered in another order: its scores, renumbered alike
    atoms = real.graphs.atoms(0)
    order = np.random.default_rng(0).permutation(len(atoms))  # new atom k is old atom order[k]
    new_index = np.argsort(order)
    bonds, bond_types = real.graphs.bonds_of(0)
    shuffled = MoleculeGraphs(
        atom_types=atoms[order],
        atom_offsets=np.array([0, len(atoms)]),
        bonds=new_index[bonds],
        bond_types=bond_types,
        bond_offsets=np.array([0, len(bonds)]),
        smiles=real.graphs.smiles[:1],
    )
    one = MoleculeBatch.of(Conformers(shuffled, np.array([0]), real.positions_of(0)[order]), CPU)
    one.positions = one.positions.double()
    torch.testing.assert_close(_scores(model, one), scores[: len(atoms)][order], rtol=1e-9, atol=1e-9)


def test_the_loss_falls_while_training_on_a_few_molecules():
    real = bundled().subset(np.arange(10))
    options = ConformerDiffusionConfig.model_validate(
        {"network": {"hidden_dim": 16}, "training": {"steps": 60, "evaluate_every": 20, "validation_conformers": 50}}
    )
    torch.manual_seed(0)
    model = DualEncoder(options.network, options.diffusion)
    before = evaluation_loss(model, real, seed=5, device=CPU)
    curve = train(model, [real], real, options.training, np.random.default_rng(0), CPU)
    after = evaluation_loss(model, real, seed=5, device=CPU)
    assert after["loss"] < 0.5 * before["loss"] and after["loss_local"] < before["loss_local"]
    assert [point["step"] for point in curve] == [20, 40, 60]
    assert evaluation_loss(model, real, seed=5, device=CPU) == after  # repeatable


def test_synthetic_conformers_are_for_the_training_molecules_in_their_proportions(config):
    setting = ConformerDiffusion(config, [0])
    real = setting.real_train
    assert len(np.unique(real.molecule)) == 4 and len(real) == 20
    assert not set(real.molecule) & set(setting.test.molecule)
    fitted = setting.fit([real], np.random.default_rng(0))
    synthetic = setting.sample(fitted.model, len(real), np.random.default_rng(1))
    assert sorted(synthetic.molecule) == sorted(real.molecule)
    assert synthetic.positions.shape == real.positions.shape and np.isfinite(synthetic.positions).all()
    few = setting.sample(fitted.model, 3, np.random.default_rng(1))
    assert len(set(few.molecule)) == 3  # a few spread over as many molecules as they can
    fresh = setting.fresh_real(7, np.random.default_rng(0))
    assert not set(fresh.molecule) & (set(real.molecule) | set(setting.test.molecule))
    with pytest.raises(ModelCollapseError, match="lower setting.samples"):
        setting.fresh_real(10**5, np.random.default_rng(0))
    evaluated = setting.evaluate(fitted.model)
    metrics = evaluated.metrics
    assert set(metrics) == set(setting.metrics) and all(np.isfinite(v).all() for v in metrics.values())
    assert metrics["test_loss"] == pytest.approx(metrics["test_loss_local"] + metrics["test_loss_global"])
    assert 0 <= metrics["cov_r"][0] <= 1 and metrics["mat_r"][0] > 0
    # COV-R over GeoDiff's thresholds, kept beside the metrics; at delta it is the metric
    curve = evaluated.diagnostics["coverage_by_threshold"]
    assert len(curve) == 60 and [p["cov_r"] for p in curve] == sorted(p["cov_r"] for p in curve)
    at_delta = next(p for p in curve if p["threshold"] == config.evaluation.delta)
    assert at_delta["cov_r"] == metrics["cov_r"][0]
    blocks = setting.preview(synthetic)
    assert len(blocks) == 4 and all("V2000" in block for block in blocks)
    assert ConformerDiffusion.presentation.depict is not None
    assert ConformerDiffusion.presentation.depict(blocks).shape == (4, 200, 200, 3)


def test_a_molecule_whose_sampling_diverges_twice_is_skipped_and_counted_as_geodiff_does(config):
    setting = ConformerDiffusion(config, [0])
    model = setting.fit([setting.real_train], np.random.default_rng(0)).model
    graphs = setting.real_train.graphs
    references = np.unique(setting.references.molecule)
    # an element some reference molecules hold and others not: its embeddings made NaN, so that exactly
    # those molecules' scores stop being finite, with or without the retry's clipping
    element = next(
        z for z in (7, 8, 9, 16, 17) if 0 < sum(z in graphs.atoms(int(m)) for m in references) < len(references)
    )
    holding = [int(m) for m in references if element in graphs.atoms(int(m))]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight[element] = float("nan")
    metrics = setting.evaluate(model).metrics
    assert metrics["skipped_molecules"][0] == len(holding)
    assert np.isfinite(metrics["mat_r"][0]) and 0 <= metrics["cov_r"][0] <= 1  # over the other molecules
    training = [int(m) for m in np.unique(setting.real_train.molecule) if element in graphs.atoms(int(m))]
    if training:  # a synthetic conformer cannot be skipped: the run stops, saying why
        with pytest.raises(ModelCollapseError, match="conformer sampling diverged 5 times"):
            setting.sample(model, len(setting.real_train), np.random.default_rng(1))


def test_a_committed_iteration_keeps_its_learning_curve_and_its_coverage_curve(config, tmp_path):
    # (resuming every regime to the same numbers: test_conformance.py)
    run_chain(ConformerDiffusion(config, [0]), parse_regime("replace"), 1, ChainStore(tmp_path / "chain", {}))
    diagnostics = json.loads((tmp_path / "chain" / "iter_0001" / "diagnostics.json").read_text())
    assert [point["step"] for point in diagnostics["learning_curve"]] == [2, 4]
    assert [point["threshold"] for point in diagnostics["coverage_by_threshold"]][:3] == [0.05, 0.1, 0.15]


def test_sampling_in_shards_resumes_from_the_shards_an_interrupted_run_saved(config, tmp_path):
    setting = ConformerDiffusion(config, [0])  # shards of 8 conformers
    model = setting.fit([setting.real_train], np.random.default_rng(0)).model
    straight = setting.sample(model, 20, np.random.default_rng(3))
    scratch = tmp_path / "scratch"
    saved = setting.sample(model, 20, np.random.default_rng(3), scratch)
    assert sorted(p.name for p in scratch.iterdir()) == ["samples_00000", "samples_00001", "samples_00002"]
    np.testing.assert_array_equal(saved.positions, straight.positions)

    # an interruption: shard 1 never written, shard 2 cut short, shard 0 stands in for a saved one
    shutil.rmtree(scratch / "samples_00001")
    (scratch / "samples_00002" / "positions.npy").write_bytes(b"\x93NUMPY")
    marked = Conformers(straight.graphs, straight.molecule[:8], np.full((straight.offsets[8], 3), 7.0, np.float32))
    shutil.rmtree(scratch / "samples_00000")
    (scratch / "samples_00000").mkdir()
    marked.save(scratch / "samples_00000")
    resumed = setting.sample(model, 20, np.random.default_rng(3), scratch)
    assert (resumed.positions[: straight.offsets[8]] == 7.0).all()  # taken as saved, not sampled again
    np.testing.assert_array_equal(resumed.positions[straight.offsets[8] :], straight.positions[straight.offsets[8] :])


def _table(directory) -> pd.DataFrame:
    result = CliRunner().invoke(app, ["table", str(directory)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def _kill_when(process: subprocess.Popen, marker, what: str) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not marker() and process.poll() is None:
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before it could be killed {what}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_run_killed_while_sampling_or_training_resumes_with_the_same_numbers(tmp_path):
    setting = tiny_conformers(
        diffusion={"timesteps": 100, "beta_end": 0.09},  # long enough to be caught sampling
        training={"steps": 200, "batch_size": 4, "evaluate_every": 50, "checkpoint_minutes": 0.001},
        sampling={"batch_size": 2},
        evaluation={"molecules": 1},
    )
    config = write_config(
        tmp_path / "conformers.yaml", {"setting": setting, "regimes": ["accumulate"], "iterations": 2, "seeds": 1}
    )
    run = [sys.executable, "-m", "model_collapse", "run", str(config), "-q", "--out"]

    def scratch_of(name: str):
        return tmp_path / name / "chains" / "base" / "accumulate" / "seed-0" / "iter_0002.scratch"

    for name, marker in [
        ("sampling", lambda: (scratch_of("sampling") / "samples_00001").is_dir()),
        ("training", lambda: (scratch_of("training") / "training_state.pt").exists()),
    ]:
        process = subprocess.Popen([*run, str(tmp_path / name)], cwd=tmp_path, stderr=subprocess.DEVNULL)
        _kill_when(process, marker, f"while {name}")
        resumed = subprocess.run(
            [sys.executable, "-m", "model_collapse", "resume", str(tmp_path / name)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        if name == "training":
            assert "training resumes at step" in resumed.stderr
        assert not scratch_of(name).exists()  # gone once the iteration is committed
    # the uninterrupted run in a process of its own too, as the others: a process's history (what ran in
    # it before) is no part of what a run computes
    subprocess.run([*run, str(tmp_path / "straight")], cwd=tmp_path, check=True, capture_output=True, timeout=600)
    straight = _table(tmp_path / "straight")
    assert len(straight) == 2
    pd.testing.assert_frame_equal(_table(tmp_path / "sampling"), straight)
    pd.testing.assert_frame_equal(_table(tmp_path / "training"), straight)


@pytest.mark.slow
def test_run_and_plot_from_the_command_line(tmp_path):
    config = write_config(
        tmp_path / "conformers.yaml",
        {"setting": tiny_conformers(), "regimes": ["replace", "accumulate"], "iterations": 2, "seeds": 1},
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["plot", str(tmp_path / "run")]).exit_code == 0
    figures = tmp_path / "run" / "figures"
    for name in ("test_loss", "mat_r", "cov_r", "learning_curves_base", "coverage_by_threshold_base",
                 "samples_by_iteration_base"):  # fmt: skip
        assert (figures / f"{name}.png").exists(), name
    sdf = (figures / "samples_base.sdf").read_text()
    assert sdf.count("$$$$") == 4 * (1 + 2 + 2)  # real, then 2 iterations of 2 regimes, 4 conformers each
    assert "accumulate, iteration 2: " in sdf
    from rdkit import Chem

    molecules = [m for m in Chem.SDMolSupplier(str(figures / "samples_base.sdf"), removeHs=False, sanitize=False)]
    assert len(molecules) == 20 and all(m is not None and m.GetConformer().Is3D() for m in molecules)
    table = _table(tmp_path / "run")
    assert {"test_loss", "test_loss_local", "test_loss_global", "mat_r", "cov_r"} <= set(table.columns)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"diffusion": {"beta_start": 0.5, "beta_end": 0.1}}, "beta_start (0.5) must be below beta_end"),
        ({"data_dir": "/nowhere"}, "data_dir is for dataset 'geom'"),
        ({"dataset": "geom"}, "dataset 'geom' needs data_dir"),
        ({"samples": 400}, "the drugs-like set has 300 molecules, asked for 400"),
        ({"network": {"hidden_dim": 0}}, "hidden_dim"),
        ({"evaluation": {"first_molecule": 3}}, "evaluation.first_molecule is for dataset 'geom'"),
    ],
)
def test_bad_configs_get_one_line(tmp_path, fields, message):
    config = write_config(
        tmp_path / "bad.yaml",
        {"setting": tiny_conformers(**fields), "regimes": ["replace"], "iterations": 1, "seeds": 1},
    )
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_missing_rdkit_is_named_with_the_extra_that_installs_it():
    program = (
        "import sys; sys.modules['rdkit'] = None\n"
        "from model_collapse.settings import SETTINGS\n"
        "from model_collapse.errors import ConfigError\n"
        "SETTINGS.declared('conformer-diffusion')  # validating a config needs no rdkit\n"
        "try:\n    SETTINGS['conformer-diffusion']\nexcept ConfigError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert "setting 'conformer-diffusion' needs rdkit" in result.stdout and "[molecules]" in result.stdout


# -- GeoDiff's GEOM pickles -------------------------------------------------------------------------


class LegacyData:
    """PyG 1.x's ``Data``: a plain object whose attributes pickle as its ``__dict__``."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def _records(real: Conformers, molecules, make):
    from rdkit import Chem

    from model_collapse.settings.conformer_diffusion.chemistry import molecule

    records = []
    for index in molecules:
        bonds, types = real.graphs.bonds_of(index)
        both = np.concatenate([bonds, bonds[:, ::-1]]).T  # GeoDiff lists each bond both ways
        for k in np.flatnonzero(real.molecule == index)[:2]:
            records.append(
                make(
                    atom_type=torch.tensor(real.graphs.atoms(index), dtype=torch.long),
                    pos=torch.tensor(real.positions_of(k)),
                    edge_index=torch.tensor(both, dtype=torch.long),
                    edge_type=torch.tensor(np.concatenate([types, types]), dtype=torch.long),
                    rdmol=Chem.Mol(molecule(real.graphs, int(index), real.positions_of(k))),
                    smiles=str(real.graphs.smiles[index]),
                    totalenergy=np.float64(-1.5),
                    boltzmannweight=0.5,
                )
            )
    return records


def _write_geom(folder, monkeypatch, real: Conformers) -> None:
    """GeoDiff's three files for a few bundled molecules: training and test in PyG 2.x's layout, made
    by torch_geometric itself; validation in PyG 1.x's."""
    import pickle

    from torch_geometric.data import Data

    folder.mkdir()
    for name, molecules in [("train_data_40k.pkl", range(6)), ("test_data_1k.pkl", range(9, 11))]:
        (folder / name).write_bytes(pickle.dumps(_records(real, molecules, Data)))
    with monkeypatch.context() as patch:
        patch.setattr("torch_geometric.data.data.Data", LegacyData)  # pickled under PyG's name, as 1.x did
        LegacyData.__module__, LegacyData.__qualname__ = "torch_geometric.data.data", "Data"
        (folder / "val_data_5k.pkl").write_bytes(pickle.dumps(_records(real, range(6, 9), LegacyData)))


def test_geom_pickles_of_either_pyg_layout_become_the_chains_molecules(tmp_path, monkeypatch):
    real = bundled()
    _write_geom(tmp_path / "geom", monkeypatch, real)
    config = ConformerDiffusionConfig.model_validate(
        tiny_conformers(dataset="geom", data_dir=str(tmp_path / "geom"), samples=4, test_samples=2)
    )
    setting = ConformerDiffusion(config, [0])
    train, graphs = setting.real_train, setting.real_train.graphs
    assert len(graphs) == 11 and len(train) == 8 and len(setting.test) == 4 and len(setting.references) == 4
    assert len(np.unique(setting._reserve.molecule)) == 2  # the training file's other molecules
    for k in range(len(train)):  # every conformer is one of the bundled ones, with its own molecule's graph
        smiles = graphs.smiles[train.molecule[k]]
        source = int(np.flatnonzero(real.graphs.smiles == smiles)[0])
        assert np.array_equal(graphs.atoms(int(train.molecule[k])), real.graphs.atoms(source))
        assert any(
            np.allclose(train.positions_of(k), real.positions_of(j)) for j in np.flatnonzero(real.molecule == source)
        )
    records = run_chain(setting, parse_regime("accumulate"), 2)
    assert np.isfinite(records[-1].metrics["test_loss"]).all() and np.isfinite(records[-1].metrics["mat_r"]).all()
    # GeoDiff's test.py evaluates a range of the test file's molecules, in the file's order
    ranged = ConformerDiffusion(config.model_copy(update={"evaluation": config.evaluation.model_copy(
        update={"first_molecule": 1, "molecules": 1})}), [0])  # fmt: skip
    (chosen,) = np.unique(ranged.references.molecule)
    assert graphs.smiles[chosen] == real.graphs.smiles[10]  # the test file holds molecules 9 and 10
    too_far = config.evaluation.model_copy(update={"first_molecule": 2, "molecules": 1})
    with pytest.raises(ModelCollapseError, match="has 2 molecules, first_molecule \\+ molecules asks for 3"):
        ConformerDiffusion(config.model_copy(update={"evaluation": too_far}), [0])


def test_bad_geom_files_get_one_line_and_run_nothing_they_name(tmp_path, monkeypatch):
    import pickle

    real = bundled()
    _write_geom(tmp_path / "geom", monkeypatch, real)
    config = write_config(
        tmp_path / "geom.yaml",
        {
            "setting": tiny_conformers(dataset="geom", data_dir=str(tmp_path / "geom")),
            "regimes": ["replace"],
            "iterations": 1,
            "seeds": 1,
        },
    )

    def refused(message: str) -> None:
        out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
        result = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "-q"])
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output

    train = tmp_path / "geom" / "train_data_40k.pkl"
    saved = train.read_bytes()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    train.write_bytes(pickle.dumps([Payload()]))
    refused("refused to unpickle posix.system")
    assert not (tmp_path / "ran").exists()

    train.write_bytes(saved[: len(saved) // 2])
    refused("train_data_40k.pkl: not a GeoDiff pickle")
    train.write_bytes(pickle.dumps({"not": "a list"}))
    refused("train_data_40k.pkl: not a GeoDiff pickle (expected a list of PyG Data records)")

    from torch_geometric.data import Data

    none = torch.zeros(0, dtype=torch.long)
    empty = Data(atom_type=none, pos=torch.zeros(0, 3), edge_index=torch.zeros(2, 0, dtype=torch.long), edge_type=none)
    train.write_bytes(pickle.dumps([empty]))
    refused("record 0 is a molecule without atoms")
    unlaid = Data(atom_type=none)
    unlaid._store.__dict__["_mapping"] = 7  # a state whose fields are not a mapping
    train.write_bytes(pickle.dumps([unlaid]))
    refused("record 0 is not laid out as a PyG Data record")
    wrong = Data(atom_type=torch.ones(2, dtype=torch.long), pos="two atoms", edge_index=none, edge_type=none)
    train.write_bytes(pickle.dumps([wrong]))
    refused("record 0 has a field of the wrong kind")
    train.write_bytes(pickle.dumps([]))
    refused("train_data_40k.pkl: holds no conformers")
    train.unlink()
    refused(f"missing file {train}")


def test_curation_by_mmff_energy_keeps_the_less_strained_conformers(config):
    setting = ConformerDiffusion(config, [0])
    real = setting.real_train
    # the score is minus the strain above each molecule's most relaxed real conformer: 0 at best
    relaxed = setting.score("mmff-energy", None, real)[0]
    assert relaxed.max() == 0 and (relaxed <= 0).all()
    assert all(relaxed[real.molecule == m].max() == 0 for m in np.unique(real.molecule))
    stretched = Conformers.from_ensembles(
        real.graphs, real.molecule, [real.positions_of(k) * 1.05 for k in range(len(real))]
    )
    assert (setting.score("mmff-energy", None, stretched)[0] < relaxed).all()
    curated = ConformerDiffusionConfig.model_validate(
        {**config.model_dump(), "curation": {"candidates": 3, "score": "mmff-energy", "keep": "top"}}
    )
    records = run_chain(ConformerDiffusion(curated, [0]), parse_regime("replace"), 2)
    kept, candidates = records[1].metrics["kept_score_mean"][0], records[1].metrics["candidate_score_mean"][0]
    assert np.isfinite(kept) and kept > candidates  # the least strained third of the candidates
