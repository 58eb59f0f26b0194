"""What the neural settings (VAE, language model, fine-tuning, conformer diffusion) share, starting with
their declaration. Importing this package imports no PyTorch: light declarations build on it."""

from __future__ import annotations

from dataclasses import replace

from ..base import C, Capabilities, Declaration


class NeuralDeclaration(Declaration[C]):
    """A neural setting's declaration: a network per seed (chains of one seed each), fresh real data
    from a reserve, and the warm start its config asks for (``training.warm_start``: each iteration
    continues from the previous iteration's network, as Bertrand et al. and Gillman et al. fine-tune)."""

    capabilities = Capabilities(one_seed_per_chain=True, fresh_real=True)

    @classmethod
    def capabilities_of(cls, config: C) -> Capabilities:
        # every neural config has a training section (a base config for them is #36's item 3)
        return replace(cls.capabilities, warm_start=bool(config.training.warm_start))  # type: ignore[attr-defined]
