"""What the VAE setting is (its config, metrics and how it runs), readable without PyTorch.

``table``, ``plot`` and config validation need only this; the model and its training live in
``vae.py`` and import PyTorch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from .base import Footprint, Metric, Presentation, activations_on_host
from .configs import SettingConfig, StrictConfig
from .images import CHANNELS
from .neural import NeuralDeclaration

# What measuring inception_fid holds (inception.py): the weights (23.9 million float32) and a batch's
# largest maps (64 x 147 x 147 float32 per image, 50 images, a few such maps alive at once).
INCEPTION_BYTES = 4 * 23_900_000 + 3 * 50 * 64 * 147 * 147 * 4


class VAEModel(StrictConfig):
    """The convolutional VAE: encoder stages, latent size and the pixel likelihood."""

    latent_dim: PositiveInt = Field(16, description="the latent space's dimension")
    widths: tuple[PositiveInt, ...] = Field((32, 64), min_length=1, description="channels of each stride-2 conv stage")
    likelihood: Literal["bernoulli", "gaussian"] = Field(
        "bernoulli", description="the decoder's likelihood: bernoulli (pixels in [0, 1]) or gaussian (decoder_std)"
    )
    decoder_std: PositiveFloat = Field(0.1, description="pixel noise of the gaussian likelihood")


class VAETraining(StrictConfig):
    """AdamW at a constant learning rate for a number of epochs, as the paper's VAE code does."""

    epochs: PositiveInt = Field(20, description="epochs per fit")
    batch_size: PositiveInt = Field(64, description="images per optimiser step")
    learning_rate: PositiveFloat = Field(1e-3, description="AdamW's learning rate (constant)")
    warm_start: bool = Field(
        False,
        description="each fit continues from the previous iteration's model (Bertrand et al.), not from a fresh one",
    )


class VAEConfig(SettingConfig):
    name: Literal["vae"] = "vae"
    dataset: Literal["digits", "mnist", "celeba", "folder"] = Field(
        "digits", description="the images: scikit-learn's digits (offline), MNIST, CelebA, or a folder of image files"
    )
    data_dir: str | None = Field(
        None, description="where mnist/celeba live (or are downloaded to), or the image folder"
    )
    download: bool = Field(False, description="fetch MNIST into data_dir first (MD5-checked); CelebA cannot be")
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grey) or 3 (RGB); set by the data set except for folder"
    )
    image_size: PositiveInt = Field(16, description="the side images are resized to (divisible by 2^len(model.widths))")
    samples: PositiveInt | None = Field(None, description="T: real training images (default: the whole training split)")
    test_samples: int = Field(300, gt=5, description="held-out real images the test metrics use")
    evaluation_samples: int = Field(
        1000, gt=5, description="images sampled for class entropy, spread and the k-NN metrics (k = 5)"
    )
    inception_weights: str | None = Field(
        None,
        description="a local copy of the FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth): "
        "with it, inception_fid is measured every iteration (null: not measured; nothing is downloaded)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models train: auto (CUDA when present, else CPU), cpu or cuda"
    )
    model: VAEModel = Field(default_factory=VAEModel)
    training: VAETraining = Field(default_factory=VAETraining)

    # the flat layout of model-collapse 0.1
    moved: ClassVar[dict[str, str]] = {
        **{key: f"model.{key}" for key in ("latent_dim", "widths", "likelihood", "decoder_std")},
        **{key: f"training.{key}" for key in ("epochs", "batch_size", "learning_rate")},
    }

    @model_validator(mode="after")
    def _consistent(self):
        stride = 2 ** len(self.model.widths)
        if self.image_size % stride:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by 2^len(model.widths) = {stride}")
        if self.dataset == "folder" and self.channels is None:
            raise ValueError("channels must be given (1 or 3) for dataset 'folder'")
        if (
            self.curation is not None
            and self.curation.score == "confidence"
            and self.dataset not in ("digits", "mnist")
        ):
            raise ValueError(
                f"curation.score: confidence needs a labelled data set (digits, mnist), not {self.dataset}"
            )
        if self.dataset != "folder" and self.channels not in (None, CHANNELS[self.dataset]):
            raise ValueError(f"channels: {self.dataset} images have {CHANNELS[self.dataset]} channel(s)")
        return self

    @property
    def image_channels(self) -> int:
        return self.channels or CHANNELS[self.dataset]


class VAEDeclaration(NeuralDeclaration[VAEConfig]):
    """The VAE setting's declaration; ``vae.VAE`` inherits it."""

    name = "vae"
    Config = VAEConfig
    metrics = {
        "test_loss": Metric("test negative ELBO (nats / image)"),
        "test_reconstruction": Metric("test reconstruction (nats / image)"),
        "test_kl": Metric("test KL (nats / image)"),
        "class_entropy": Metric("entropy of sample classes (nats)"),
        "sample_spread": Metric("sample spread / real spread"),
        "frechet_distance": Metric("Fréchet distance to real test images (judge features)", log_scale=True),
        "precision": Metric("precision (k = 5, judge features)"),
        "recall": Metric("recall (k = 5, judge features)"),
        "density": Metric("density (k = 5, judge features)"),
        "coverage": Metric("coverage (k = 5, judge features)"),
    }
    capabilities = replace(NeuralDeclaration.capabilities, scores=("confidence",))
    presentation = Presentation(preview_size=64)

    @classmethod
    def metrics_of(cls, config: VAEConfig) -> dict[str, Metric]:
        """The metrics, with ``inception_fid`` when the config points at the FID Inception weights."""
        if config.inception_weights is None:
            return cls.metrics
        return {**cls.metrics, "inception_fid": Metric("Fréchet Inception Distance to real test images", True)}

    @classmethod
    def footprint(cls, config: VAEConfig) -> Footprint:
        """The network's weights with their gradients and AdamW's two moments (16 bytes a parameter), the
        real training and test images as stored (a byte a pixel), and where they are in this machine's
        memory a training step's activations (``activation_bytes``) or the FID Inception's; kept batches
        are memory-mapped, so the pool adds nothing."""
        channels, side, latent = config.image_channels, config.image_size, config.model.latent_dim
        widths = config.model.widths
        kernels = sum(16 * a * b for a, b in zip((channels, *widths[:-1]), widths))  # 4 x 4, down and up
        biases = sum(widths) + sum(widths[:-1]) + channels
        flat = widths[-1] * (side // 2 ** len(widths)) ** 2
        parameters = 2 * kernels + biases + flat * 2 * latent + 2 * latent + latent * flat + flat
        image = channels * side * side
        real = config.samples or 60_000  # the largest training split of the data sets it reads (MNIST's)
        activations = 0
        if activations_on_host(config.device):  # training, or measuring FID: one after the other
            activations = max(activation_bytes(config), INCEPTION_BYTES if config.inception_weights is not None else 0)
        images = image * (real + config.test_samples)
        fields = ("model.widths", "image_size", "training.batch_size")
        return Footprint(real, 0, fixed_bytes=16 * parameters + images, activation_bytes=activations, fields=fields)


def activation_bytes(config: VAEConfig) -> int:
    """What a training step holds for its backward pass, in float32: about 7 values per element of every
    feature map of the encoder and the decoder (convolution outputs, activations, their gradients) and
    4 per pixel of the batch's images; 13% and 26% above the peak measured on the CPU for MNIST at
    32 x 32 (batches of 1,024) and CelebA at 64 x 64 (512)."""
    side, batch = config.image_size, config.training.batch_size
    maps = sum(width * (side // 2 ** (depth + 1)) ** 2 for depth, width in enumerate(config.model.widths))
    return 4 * batch * (7 * maps + 4 * config.image_channels * side * side)
