"""Variational autoencoders on images (the paper's §2.3; Shumailov et al.'s MNIST loop).

Every iteration trains a freshly initialised convolutional VAE from scratch. Synthetic images are the
decoder means of latents drawn from the prior, stored as uint8 like real images. Metrics on held-out
real images: the negative ELBO (``test_loss``, the paper's test loss) with its reconstruction and KL
parts, in nats per image; and two numbers that make a collapse to few modes visible:
``class_entropy``, the entropy of the class histogram of samples under a classifier trained once on
real data (log 10 = 2.30 for ten balanced digit classes; NaN for data without labels), and
``sample_spread``, the total variance of samples over that of real test images in a PCA feature space
fitted on real data (1 = as spread out as real data, 0 = a single image).

The image papers' metrics (Alemohammad et al., Bertrand et al., Gillman et al.) are computed every
iteration against the held-out real images, in the feature space of a judge trained once on the real
training images (``ImageJudge``): the Fréchet distance and k-NN precision, recall, density and coverage
(``image_metrics.py``). The judge is a one-hidden-layer classifier (scikit-learn's MLP, seeded, so every
process trains the same one) where the data set has labels, whose hidden activations are the features
and whose confidence is the curation score ``confidence``; without labels the features are the PCA's.
With ``inception_weights`` (a local copy of the standard FID Inception weights) the Fréchet Inception
Distance is measured too (``inception_fid``; ``inception.py``), comparable with published FIDs when the
real and generated sets are as large as theirs (tens of thousands of images; here ``test_samples`` and
``evaluation_samples``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from torch import nn

from ..arrayio import load_arrays
from ..errors import ModelCollapseError, RunDirectoryError
from ..randomness import seed_rng
from .arrays import MappedSamples, Samples, gather
from .base import Setting
from .devices import resolve_device
from .image_metrics import frechet_distance, gaussian_statistics, precision_recall_density_coverage
from .images import ImageSplit, load_images
from .inception import inception_features, load_inception
from .neural.seeding import generator as torch_generator
from .neural.seeding import seeded_torch
from .vae_config import VAEConfig, VAEDeclaration


class ConvVAE(nn.Module):
    """Stride-2 convolutions down to (widths[-1], s, s), a Gaussian latent, and the mirror image back up."""

    def __init__(self, channels: int, image_size: int, widths: Sequence[int], latent_dim: int):
        super().__init__()
        encoder, width_in = [], channels
        for width in widths:
            encoder += [nn.Conv2d(width_in, width, 4, stride=2, padding=1), nn.SiLU()]
            width_in = width
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.side = image_size // 2 ** len(widths)
        flat = widths[-1] * self.side**2
        self.to_latent = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        decoder: list[nn.Module] = []
        widths_out: list[int | None] = [*widths[-2::-1], None]  # None: the image's channels
        for width_in, width_out in zip(widths[::-1], widths_out):
            if width_out is None:
                decoder.append(nn.ConvTranspose2d(width_in, channels, 4, stride=2, padding=1))
            else:
                decoder += [nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1), nn.SiLU()]
        self.decoder = nn.Sequential(*decoder)
        self.top_width = widths[-1]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.to_latent(self.encoder(x)).chunk(2, dim=1)
        return mean, log_variance

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the pixel means."""
        hidden = self.from_latent(z).view(-1, self.top_width, self.side, self.side)
        return self.decoder(F.silu(hidden))


def negative_elbo(
    model: ConvVAE, x: torch.Tensor, noise: torch.Tensor, likelihood: str, decoder_std: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) per image in nats, with the reparameterisation z = mean + std * noise."""
    mean, log_variance = model.encode(x)
    z = mean + torch.exp(0.5 * log_variance) * noise
    logits = model.decode(z)
    if likelihood == "bernoulli":
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        reconstruction = 0.5 * ((x - torch.sigmoid(logits)) / decoder_std) ** 2 + 0.5 * np.log(
            2 * np.pi * decoder_std**2
        )
    kl = 0.5 * (mean**2 + log_variance.exp() - 1 - log_variance).sum(dim=1)
    return reconstruction.flatten(1).sum(dim=1), kl


def _pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).float().div_(255)


# The judge's training images at most (a few seconds on a CPU for MNIST's 10,000).
JUDGE_IMAGES = 10000


@dataclass(frozen=True)
class ImageJudge:
    """The feature space of the image metrics and the curation score ``confidence``: a classifier with
    one hidden layer of 64 ReLU units trained on real training images (features: its hidden
    activations), or, for images without labels, the PCA of the real data (and no confidence). Its
    weights are plain arrays, so a run keeps the judge it started with (``RUN/shared/``)."""

    weights: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None  # hidden W, b; output W, b
    pca: PCA

    @classmethod
    def train(cls, train: ImageSplit, pca: PCA) -> ImageJudge:
        if train.labels is None:
            return cls(None, pca)
        flat = train.images[:JUDGE_IMAGES].reshape(min(len(train.images), JUDGE_IMAGES), -1) / 255
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a judge needs no last decimal of its loss
            classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
            classifier.fit(flat, train.labels[:JUDGE_IMAGES])
        hidden, output = classifier.coefs_
        if output.shape[1] == 1:  # two classes: one logistic output, as two softmax logits
            output = np.concatenate([np.zeros_like(output), output], axis=1)
            bias = np.concatenate([[0.0], classifier.intercepts_[1]])
        else:
            bias = classifier.intercepts_[1]
        return cls((hidden, classifier.intercepts_[0], output, bias), pca)

    def save(self, path: Path) -> None:
        """Written to a temporary name and renamed: a reader finds the whole file or none."""
        from ..atomic import write_file_atomic

        weights = self.weights
        assert weights is not None
        arrays = dict(zip(_JUDGE_ARRAYS, weights))
        write_file_atomic(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path, pca: PCA, pixels: int) -> ImageJudge:
        arrays = load_arrays(path, _JUDGE_ARRAYS)
        weights = tuple(np.asarray(arrays[name], dtype=np.float64) for name in _JUDGE_ARRAYS)
        hidden, hidden_bias, output, output_bias = weights
        if hidden.shape[0] != pixels or hidden_bias.shape != (hidden.shape[1],) or output.shape[0] != hidden.shape[1]:
            raise RunDirectoryError(f"corrupted file {path}: a judge of other shapes than this run's images")
        if output_bias.shape != (output.shape[1],) or not all(np.isfinite(w).all() for w in weights):
            raise RunDirectoryError(f"corrupted file {path}: not a judge's weights")
        return cls((hidden, hidden_bias, output, output_bias), pca)

    def features(self, flat: np.ndarray) -> np.ndarray:
        """Features of (N, pixels) images in [0, 1]."""
        if self.weights is None:
            return self.pca.transform(flat)
        return np.maximum(flat @ self.weights[0] + self.weights[1], 0.0)

    def confidence(self, flat: np.ndarray) -> np.ndarray:
        """The classifier's probability of its most likely class, per image."""
        assert self.weights is not None  # (configs ask for confidence only with labelled data sets)
        logits = self.features(flat) @ self.weights[2] + self.weights[3]
        logits -= logits.max(axis=1, keepdims=True)
        return 1.0 / np.exp(logits).sum(axis=1)  # the largest softmax probability: exp(0) / sum


_JUDGE_ARRAYS = ("hidden_weight", "hidden_bias", "output_weight", "output_bias")


@dataclass(frozen=True)
class RealImages:
    train: ImageSplit
    test: ImageSplit
    features: PCA  # feature space for sample_spread, fitted on real training images
    real_spread: float  # total variance of real test images in that space
    classifier: LogisticRegression | None  # for class_entropy, where the data set has labels

    @functools.cached_property
    def judge(self) -> ImageJudge:
        """The image metrics' feature space, trained here (a run keeps its own: ``VAE.judge``)."""
        return ImageJudge.train(self.train, self.features)


@functools.lru_cache(maxsize=4)
def _real_images(
    dataset: str, image_size: int, test_size: int, data_dir: str | None, download: bool, channels: int
) -> RealImages:
    """The real data and the judges trained once on them; cached, as every chain of a sweep shares them."""
    train, test = load_images(dataset, image_size, test_size, data_dir, download, channels)
    flat = train.images.reshape(len(train.images), -1) / 255
    features = PCA(n_components=min(20, *flat.shape), random_state=0).fit(flat)
    real_spread = float(features.transform(test.images.reshape(len(test.images), -1) / 255).var(axis=0).sum())
    classifier = None
    if train.labels is not None:
        limit = min(len(flat), 10000)
        classifier = LogisticRegression(max_iter=300).fit(flat[:limit], train.labels[:limit])
    return RealImages(train, test, features, real_spread, classifier)


class VAE(VAEDeclaration, Setting[VAEConfig, Samples]):
    def __init__(self, config: VAEConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.device = resolve_device(config.device)
        real = _real_images(
            config.dataset,
            config.image_size,
            config.test_samples,
            config.data_dir,
            config.download,
            config.image_channels,
        )
        train = real.train
        size = config.samples or len(train.images)
        if size > len(train.images):
            raise ModelCollapseError(
                f"setting.samples: {config.dataset} has {len(train.images)} training images, asked for {size}"
            )
        self._real = MappedSamples(x=train.images[None, :size])
        self._reserve = train.images[size:]  # real images the chain never trains on: source of fresh real data
        self.test = real.test.images
        self.features, self.real_spread, self.classifier = real.features, real.real_spread, real.classifier
        self._real_images = real
        self._evaluation_seed = int(seed_rng(self.seeds[0], "evaluate").integers(2**63))

    # -- the judge --------------------------------------------------------------------------------
    @functools.cached_property
    def judge(self) -> ImageJudge:
        """The judge of the image metrics, trained once per run on the real training images and kept in
        ``RUN/shared/`` (``Setting.shared``), so that every chain and every resume, on any machine,
        measures with the same one; outside a run directory, trained in this process."""
        real = self._real_images
        if real.train.labels is None or self.shared is None:
            return real.judge
        c = self.config
        key = hashlib.sha256(repr((c.dataset, c.data_dir, c.image_size, c.image_channels)).encode()).hexdigest()[:12]
        path = self.shared / f"vae-judge-{c.dataset}-{key}.npz"
        pixels = c.image_channels * c.image_size**2
        if not path.exists():
            self.shared.mkdir(parents=True, exist_ok=True)
            real.judge.save(path)  # written whole under its name; chains finishing together write the same
        return ImageJudge.load(path, real.features, pixels)

    @functools.cached_property
    def test_features(self) -> np.ndarray:
        return self.judge.features(self.test.reshape(len(self.test), -1) / 255)

    @functools.cached_property
    def test_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        return gaussian_statistics(self.test_features)

    @functools.cached_property
    def inception(self):
        """The FID Inception network from ``inception_weights``, and the held-out images' statistics in
        its features (None without weights)."""
        if self.config.inception_weights is None:
            return None
        network = load_inception(self.config.inception_weights, self.device)
        return network, gaussian_statistics(inception_features(network, self.test, self.device))

    # -- data -------------------------------------------------------------------------------------
    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        if size > len(self._reserve):
            raise ModelCollapseError(
                f"fresh-real needs {size} unused real images per iteration, {self.config.dataset} has "
                f"{len(self._reserve)} beyond the training set: lower setting.samples"
            )
        return MappedSamples(x=self._reserve[None, rng.choice(len(self._reserve), size, replace=False)])

    def preview(self, data: Samples) -> np.ndarray:
        return data["x"][0].transpose(0, 2, 3, 1)

    # -- model ------------------------------------------------------------------------------------
    def new_model(self) -> ConvVAE:
        c = self.config
        return ConvVAE(c.image_channels, c.image_size, c.model.widths, c.model.latent_dim).to(self.device)

    def fit(
        self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None, previous=None
    ) -> ConvVAE:
        c = self.config
        pool = sum(len(part) for part in parts)  # kept batches are memory-mapped: read a minibatch at a time
        with seeded_torch(rng, self.device):
            # training.warm_start: on from the last iteration's model (Bertrand et al.)
            model = copy.deepcopy(previous).to(self.device) if previous is not None else self.new_model()
        generator = torch_generator(rng, self.device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=c.training.learning_rate)
        model.train()
        for _ in range(c.training.epochs):
            order = torch.randperm(pool, generator=torch_generator(rng))
            for start in range(0, pool, c.training.batch_size):
                rows = order[start : start + c.training.batch_size].numpy()[None]
                x = _pixels(gather(parts, rows)["x"][0], self.device)
                noise = torch.randn(len(x), c.model.latent_dim, generator=generator, device=self.device)
                reconstruction, kl = negative_elbo(model, x, noise, c.model.likelihood, c.model.decoder_std)
                loss = (reconstruction + kl).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        model.eval()
        return model

    @torch.no_grad()
    def _generate(self, model: ConvVAE, size: int, rng: np.random.Generator) -> np.ndarray:
        generator = torch_generator(rng, self.device)
        images, latent_dim = [], self.config.model.latent_dim
        for start in range(0, size, 1024):
            z = torch.randn(min(1024, size - start), latent_dim, generator=generator, device=self.device)
            images.append((torch.sigmoid(model.decode(z)) * 255).round().to(torch.uint8).cpu().numpy())
        return np.concatenate(images)

    def sample(self, model: ConvVAE, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        return MappedSamples(x=self._generate(model, size, rng)[None])

    @torch.no_grad()
    def evaluate(self, model: ConvVAE) -> dict[str, np.ndarray]:
        c = self.config
        # The same evaluation noise and prior draws at every iteration: differences are the model's.
        rng = np.random.default_rng(self._evaluation_seed)
        generator = torch_generator(rng, self.device)
        totals = np.zeros(2)
        for start in range(0, len(self.test), 512):
            x = _pixels(self.test[start : start + 512], self.device)
            noise = torch.randn(len(x), c.model.latent_dim, generator=generator, device=self.device)
            reconstruction, kl = negative_elbo(model, x, noise, c.model.likelihood, c.model.decoder_std)
            totals += [reconstruction.sum().item(), kl.sum().item()]
        reconstruction, kl = totals / len(self.test)
        images = self._generate(model, c.evaluation_samples, rng)
        samples = images.reshape(c.evaluation_samples, -1) / 255
        entropy = np.nan
        if self.classifier is not None:
            counts = np.bincount(self.classifier.predict(samples), minlength=len(self.classifier.classes_))
            p = counts[counts > 0] / counts.sum()
            entropy = float(-(p * np.log(p)).sum())
        spread = self.features.transform(samples).var(axis=0).sum() / self.real_spread
        features = self.judge.features(samples)
        distance = frechet_distance(self.test_statistics, gaussian_statistics(features))
        neighbours = precision_recall_density_coverage(self.test_features, features)
        inception = {}
        if self.inception is not None:
            network, real = self.inception
            generated = inception_features(network, images, self.device)
            inception["inception_fid"] = np.array([frechet_distance(real, gaussian_statistics(generated))])
        return {
            "test_loss": np.array([reconstruction + kl]),
            "test_reconstruction": np.array([reconstruction]),
            "test_kl": np.array([kl]),
            "class_entropy": np.array([entropy]),
            "sample_spread": np.array([spread]),
            "frechet_distance": np.array([distance]),
            **{name: np.array([value]) for name, value in neighbours.items()},
            **inception,
        }

    def score(self, name: str, model: ConvVAE, samples: Samples) -> np.ndarray:
        """``confidence``: the judge's probability of its most likely class for each image."""
        images = samples["x"][0]
        return self.judge.confidence(images.reshape(len(images), -1) / 255)[None]
