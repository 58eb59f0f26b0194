"""Peak memory of a VAE accumulate chain at iteration 10 against iteration 2, with kept synthetic images
memory-mapped from the run directory (the setting as shipped) and held in RAM (how it was before).

Under accumulate, iteration n trains on the real images plus n-1 synthetic batches (CelebA at five
iterations: about 10 GB). The setting keeps each committed batch memory-mapped and reads a minibatch at
a time, so the process's own (anonymous) memory should not grow with n. The alternative, measured side
by side in a process of its own, keeps every batch in RAM and concatenates the pool to train, as the
setting did before. Data: MNIST-format files (28x28 digits, scikit-learn's upscaled and jittered) written
to a temporary directory.

    python benchmarks/vae_memory.py [--iterations 10] [--samples 20000]

Prints, per variant and iteration, the peak anonymous memory and mapped file pages, then each variant's
ratio of iteration 10's peak anonymous memory to iteration 2's (target for the setting: at most 1.2x).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from memory import PeakMeter


def write_mnist(directory: Path, train: int, test: int) -> None:
    """IDX files of 28x28 digits: scikit-learn's 8x8 digits, upscaled and shifted at random."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = np.stack([np.asarray(Image.fromarray((d * 16).astype(np.uint8)).resize((20, 20))) for d in digits.images])
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        picks = rng.integers(len(base), size=count)
        images = np.zeros((count, 28, 28), np.uint8)
        for i, (pick, dy, dx) in enumerate(zip(picks, rng.integers(9, size=count), rng.integers(9, size=count))):
            images[i, dy : dy + 20, dx : dx + 20] = base[pick]
        labels = digits.target[picks].astype(np.uint8)
        header = np.array([0x803, count, 28, 28], ">i4").tobytes()
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes(), 1))
        header = np.array([0x801, count], ">i4").tobytes()
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes(), 1))


def run_variant(variant: str, data: Path, iterations: int, samples: int) -> list[tuple[int, int]]:
    """One accumulate chain in this process; the peaks (anonymous, file) of each iteration."""
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime
    from model_collapse.rundir import ChainStore
    from model_collapse.settings import SETTINGS
    from model_collapse.settings.arrays import MappedSamples, concatenate

    VAE = SETTINGS["vae"]

    class InRAM(MappedSamples):
        memory_mapped = False  # the chain keeps the batch it sampled, in RAM

    class VAEInRAM(VAE):
        def fit(self, parts, rng, scratch=None):
            return super().fit([concatenate(parts)], rng, scratch)  # the pool built whole, as before

        def sample(self, model, size, rng, scratch=None):
            return InRAM(**super().sample(model, size, rng, scratch).fields)

    config = VAE.Config(
        dataset="mnist",
        data_dir=str(data),
        image_size=28,
        samples=samples,
        test_samples=1000,
        evaluation_samples=1000,
        model={"latent_dim": 16, "widths": [16, 32]},
        training={"epochs": 1, "batch_size": 256},
    )
    setting = (VAE if variant == "mapped" else VAEInRAM)(config, [0])
    peaks = []
    with tempfile.TemporaryDirectory() as directory, PeakMeter() as meter:
        meter.take()

        def record(result):
            peaks.append(meter.take())
            anonymous, files = peaks[-1]
            print(
                f"{variant:9s} iteration {result.iteration:2d}: {result.train_size:7d} images, peak anonymous "
                f"{anonymous / 2**20:7.1f} MiB, mapped files {files / 2**20:6.1f} MiB",
                flush=True,
            )

        run_chain(setting, parse_regime("accumulate"), iterations, ChainStore(Path(directory) / "chain", {}),
                  on_iteration=record)  # fmt: skip
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--variant", choices=["mapped", "in-ram"], help="run one variant here (internal)")
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        peaks = run_variant(args.variant, args.data, args.iterations, args.samples)
        print(f"RATIO {peaks[-1][0] / peaks[1][0]:.3f}")
        return
    ratios = {}
    with tempfile.TemporaryDirectory() as data:
        write_mnist(Path(data), args.samples + 2000, 1000)
        for variant in ("mapped", "in-ram"):  # each in a process of its own: memory does not carry over
            command = [sys.executable, __file__, "--variant", variant, "--data", data,
                       "--iterations", str(args.iterations), "--samples", str(args.samples)]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            print(output.replace("RATIO", "").rsplit("\n", 2)[0], flush=True)
            ratios[variant] = float(output.rsplit("RATIO", 1)[1])
    n = args.iterations
    for variant, ratio in ratios.items():
        print(f"{variant}: peak anonymous memory, iteration {n} / iteration 2: {ratio:.2f}x")
    print(f"in RAM / mapped, growth from iteration 2 to {n}: {ratios['in-ram'] / ratios['mapped']:.2f}x")


if __name__ == "__main__":
    main()
