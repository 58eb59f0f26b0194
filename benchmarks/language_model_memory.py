"""Peak memory of a language-model accumulate chain at iteration 10 against iteration 1.

Under accumulate, iteration n trains on the real corpus plus n-1 synthetic ones. The setting keeps
committed synthetic corpora memory-mapped from the run directory and packs training blocks lazily, so
the process's own (anonymous) memory should not grow with n; file pages of the mapped corpora that
training has read show up in the resident set too, but the kernel can drop them at any time.

    python benchmarks/language_model_memory.py [--iterations 10] [--samples 1000]

Prints, per iteration, the peak resident set, split into anonymous memory and mapped file pages, and
the ratio of iteration 10's peak to iteration 1's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from memory import PeakMeter
from model_collapse.chain import run_chain
from model_collapse.regimes import parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings import SETTINGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    LanguageModel = SETTINGS["language-model"]
    with tempfile.TemporaryDirectory() as directory:
        config = LanguageModel.Config(
            samples=args.samples,
            test_samples=50,
            vocab_size=8000,
            model={"preset": "gpt2-tiny", "block_size": 128},
            training={"batch_size": 16, "evaluations_per_epoch": 2},
            sampling={"max_new_tokens": 96, "batch_size": 250},
            tokenizer_cache=str(Path(directory) / "tokenizers"),
        )
        setting = LanguageModel(config, [0])
        peaks = []
        with PeakMeter() as meter:
            meter.take()

            def record(result):
                peaks.append(meter.take())
                anonymous, files = peaks[-1]
                print(
                    f"iteration {result.iteration:2d}: {result.train_size:6d} documents, "
                    f"peak {(anonymous + files) / 2**20:7.1f} MiB "
                    f"(anonymous {anonymous / 2**20:7.1f}, mapped files {files / 2**20:6.1f})",
                    flush=True,
                )

            run_chain(
                setting,
                parse_regime("accumulate"),
                args.iterations,
                ChainStore(Path(directory) / "chain", {}),
                on_iteration=record,
            )
    first, last = peaks[0], peaks[-1]
    print(
        f"peak RAM, iteration {args.iterations} / iteration 1: {sum(last) / sum(first):.2f}x "
        f"(anonymous only: {last[0] / first[0]:.2f}x)"
    )
    if len(peaks) > 2:  # iteration 1 only trains; from iteration 2 on, the sampler's working memory adds in
        second = peaks[1]
        print(
            f"peak RAM, iteration {args.iterations} / iteration 2 (the first that samples): "
            f"{sum(last) / sum(second):.2f}x "
            f"(anonymous only: {last[0] / second[0]:.2f}x)"
        )


if __name__ == "__main__":
    main()
