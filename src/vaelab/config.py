"""Configuration: one frozen dataclass per concern, presets from TOML, overrides from the CLI.

Constructors only store and check values (they never touch files, devices or the environment);
the work happens in the functions that take a config. Every run folder stores its configs as JSON
so that :func:`vaelab.load` can rebuild the model with no command line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from vaelab.errors import ConfigError
from vaelab.models.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS, PRIORS, check_parts
from vaelab.objectives import check_train_config

# gated: each dense layer is h = (W x + b) * sigmoid(V x + c) (Dauphin et al. 2017), the VampPrior code's
# GatedDense, in place of Linear then an activation (MLP models only)
Activation = Literal["relu", "tanh", "elu", "leaky_relu", "gelu", "softplus", "gated"]
WeightInit = Literal["torch", "he"]
Binarize = Literal["none", "dynamic", "static"]
Estimator = Literal["reparam", "stl", "dreg"]
# betatc's total-correlation estimator (Chen et al. 2018): mws, minibatch-weighted sampling, as in
# disentanglement_lib and rtqichen/beta-tcvae's default (the one disentanglement_lib's beta grid was
# tuned with); mss, the stratified estimator (own image 1/N, the others (N - 1) / (N (B - 1)))
TcEstimator = Literal["mws", "mss"]
Schedule = Literal["constant", "cosine", "burda", "burda-scaled", "exp", "time"]
CodebookUpdate = Literal["ema", "loss"]
# adam-normgrad: the VampPrior code's AdamNormGrad (jmtomczak/vae_vampprior, utils/optimizer.py): each
# parameter tensor's gradient divided by its L2 norm (+ 1e-7) before the Adam step
Optimizer = Literal["adam", "adam-normgrad"]
Device = Literal["auto", "cpu", "cuda", "mps"]


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


def _choice(name: str, value: object, literal: Any) -> None:
    allowed = typing.get_args(literal)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how pixels are turned into model inputs."""

    dataset: str = "mnist"  # "mnist", "fashion-mnist", a .npz file, a .npy folder or a PNG folder
    data_dir: str | None = None  # folder with the four IDX files (.gz or not), checked first
    binarize: Binarize = "none"  # "none" keeps grey values in [0, 1], as the tutorial does
    binarize_seed: int = 0  # seed of the fixed binarization of evaluation sets and of "static"
    # use only the first N training images (quick experiments, tests), and only the first N // 5
    # validation and test images, so that evaluating stays in proportion; DataSplits.uncut_sizes
    # keeps the full sizes (DataSplits.describe("test"): "400 of 10,000 test images (--limit)").
    # `vaelab eval` ignores it and uses the whole split (or its own --limit)
    limit: int | None = None
    # images that validate, taken from the training images. None: each source's default. mnist /
    # fashion-mnist: the last val_size of the 60,000 (None: 10,000, 50k/10k/10k; 400 is Burda et
    # al.'s 59,600 / 400); cifar10: the last of the 50,000 (None: 5,000); a .npy folder, shapes2d,
    # dsprites: the images just before the test set (None: 10%, at most 10,000); a .npz or an image
    # folder: by a fixed permutation (None: 10%). An .npz with its own x_val refuses val_size.
    val_size: int | None = None
    # a folder of images: centre-crop each to a square and resize it to image_size x image_size
    # (Pillow, Lanczos), so that images of mixed sizes make one data set (CelebA: 64)
    image_size: int | None = None
    # a folder of images: leave out the files that cannot be decoded (one warning counts them and
    # names the first few) instead of stopping at the first one
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        _choice("binarize", self.binarize, Binarize)
        if self.image_size is not None and (
            not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size <= 0
        ):
            raise ConfigError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.val_size is not None and (
            not isinstance(self.val_size, int) or isinstance(self.val_size, bool) or self.val_size <= 0
        ):
            raise ConfigError(f"val_size must be a positive integer, got {self.val_size!r}")
        if not isinstance(self.skip_bad_images, bool):
            raise ConfigError(f"skip_bad_images must be true or false, got {self.skip_bad_images!r}")
        if self.limit is not None:
            if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit <= 0:
                raise ConfigError(f"limit must be a positive integer, got {self.limit!r}")


@dataclass(frozen=True)
class StochasticLayer:
    """One stochastic layer of a hierarchical model: the MLP widths into it and its latent size."""

    hidden: tuple[int, ...]
    latent_dim: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ConfigError(f"a stochastic layer needs positive hidden widths, got {self.hidden!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ConfigError(f"a stochastic layer's latent_dim must be a positive integer, got {self.latent_dim!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of encoder q(z|x) and decoder p(x|z). Sizes are data, never literals."""

    input_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W)
    hidden: tuple[int, ...] = (512,)  # MLP widths of the encoder; the decoder mirrors them
    latent_dim: int = 2
    activation: Activation = "relu"
    likelihood: str = "bernoulli"  # a name of vaelab.models.registry.LIKELIHOODS
    arch: str = "mlp"  # a name of ARCHITECTURES
    # "he": every linear layer's weights drawn from N(0, 2 / fan_in), as jmtomczak/vae_vampprior's
    # he_init; "torch": PyTorch's default (uniform, std 1 / sqrt(3 fan_in))
    weight_init: WeightInit = "torch"
    # (lo, hi): the encoder's logvar passes through hardtanh(lo, hi), as the VampPrior code's (-6, 2);
    # None leaves it unbounded
    logvar_range: tuple[float, float] | None = None
    channels: tuple[int, ...] = (32, 64)  # conv / resnet arch: channels of the stride-2 conv layers
    res_blocks: int = 2  # resnet arch: residual blocks (3x3 then 1x1 conv) at the coarsest scale, each side
    num_classes: int = 0  # > 0 makes a conditional VAE: encoder and decoder see a one-hot label
    fixed_scale: float = 0.1  # pixel std of the "gaussian-fixed" likelihood
    mixture_components: int = 10  # K of the "logistic-mixture" likelihood (PixelCNN++ uses 10)
    prior: str = "normal"  # p(z), a name of PRIORS: N(0, I), a learned mixture of Gaussians, the VampPrior, ...
    prior_components: int | None = None  # None: 500 pseudo-inputs (vamp), 10 components (mog), 4 MAF steps (flow)
    posterior: str = "gaussian"  # q(z|x), a name of POSTERIORS: diagonal Gaussian, or one through planar / IAF steps
    flow_steps: int = 4  # planar / iaf steps
    flow_hidden: int | None = None  # MADE width of each IAF step; None: max(64, 2 * latent_dim)
    # A hierarchy, bottom (x -> z1) first: e.g. ({hidden (200, 200), latent 100}, {(100, 100), 50}).
    # Empty: one stochastic layer of size latent_dim. Given, latent_dim is the top layer's size.
    layers: tuple[StochasticLayer, ...] = ()
    # Discrete latents (posterior vq or gumbel; prior uniform). vq (van den Oord et al. 2017): the
    # conv encoder's grid of latent_dim-vectors, each replaced by the nearest of codebook_size codes.
    codebook_size: int = 512
    commitment: float = 0.25  # beta of the commitment loss beta ||z_e - sg(e)||^2
    codebook_update: CodebookUpdate = "ema"  # EMA of the assignments (the paper's appendix), or the codebook loss
    codebook_decay: float = 0.99  # the EMA's decay gamma
    # vq: the code prior that `vaelab train-prior` fits on the code grids, a causal transformer
    prior_layers: int = 4
    prior_width: int = 128
    # gumbel (Jang et al. 2017; Maddison et al. 2017): latent_dim categorical variables of `categories`
    # classes, relaxed at temperature max(temperature_min, temperature * exp(-temperature_rate * step))
    categories: int = 10
    temperature: float = 1.0
    temperature_min: float = 0.5
    temperature_rate: float = 3e-5

    def __post_init__(self) -> None:
        from vaelab.config_io import build  # the coercion of a table (config_io imports this module)

        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(
            self,
            "layers",
            tuple(
                layer if isinstance(layer, StochasticLayer) else build(StochasticLayer, layer, "model.layers")
                for layer in self.layers
            ),
        )
        if self.layers:
            object.__setattr__(self, "latent_dim", self.layers[-1].latent_dim)
            object.__setattr__(self, "hidden", self.layers[0].hidden)
        if len(self.input_shape) != 3 or any(int(s) <= 0 for s in self.input_shape):
            raise ConfigError(f"input_shape must be (C, H, W) of positive sizes, got {self.input_shape!r}")
        for h in self.hidden:
            if not isinstance(h, int) or h <= 0:
                raise ConfigError(f"hidden sizes must be positive integers, got {self.hidden!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim!r} (try --latent-dim 2)")
        _choice("activation", self.activation, Activation)
        LIKELIHOODS[self.likelihood]  # an unknown name: the registry's ConfigError, naming the choices
        ARCHITECTURES[self.arch]
        _choice("weight_init", self.weight_init, WeightInit)
        if self.logvar_range is not None:
            object.__setattr__(self, "logvar_range", tuple(self.logvar_range))
            lo, hi = self.logvar_range
            if not (len(self.logvar_range) == 2 and math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"logvar_range must be (lo, hi) with lo < hi, got {self.logvar_range!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"num_classes must be an integer >= 0, got {self.num_classes!r}")
        _positive("fixed_scale", self.fixed_scale)
        if not isinstance(self.mixture_components, int) or self.mixture_components <= 0:
            raise ConfigError(f"mixture_components must be a positive integer, got {self.mixture_components!r}")
        PRIORS[self.prior]
        POSTERIORS[self.posterior]
        if self.prior_components is not None and (
            not isinstance(self.prior_components, int) or self.prior_components <= 0
        ):
            raise ConfigError(f"prior_components must be a positive integer, got {self.prior_components!r}")
        if not isinstance(self.flow_steps, int) or self.flow_steps <= 0:
            raise ConfigError(f"flow_steps must be a positive integer, got {self.flow_steps!r}")
        if self.flow_hidden is not None and (not isinstance(self.flow_hidden, int) or self.flow_hidden <= 0):
            raise ConfigError(f"flow_hidden must be a positive integer, got {self.flow_hidden!r}")
        self._check_discrete()
        if self.layers and len(self.layers) < 2:
            raise ConfigError(
                f"model.layers lists {len(self.layers)} layer; give two or more, or drop layers "
                f"and set hidden and latent_dim for one stochastic layer"
            )
        if not isinstance(self.res_blocks, int) or isinstance(self.res_blocks, bool) or self.res_blocks < 0:
            raise ConfigError(f"res_blocks must be an integer >= 0, got {self.res_blocks!r}")
        check_parts(self)  # each part's registry entry checks what it needs of the others

    def _check_discrete(self) -> None:
        for name in ("codebook_size", "prior_layers", "prior_width", "categories"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.prior_width % 4:
            raise ConfigError(
                f"prior_width must be a multiple of 4 (the code prior's attention heads), got {self.prior_width}"
            )
        _non_negative("commitment", self.commitment)
        _choice("codebook_update", self.codebook_update, CodebookUpdate)
        if not (isinstance(self.codebook_decay, (int, float)) and 0 < self.codebook_decay < 1):
            raise ConfigError(f"codebook_decay must lie in (0, 1), got {self.codebook_decay!r}")
        for name in ("temperature", "temperature_min"):
            _positive(name, getattr(self, name))
        _non_negative("temperature_rate", self.temperature_rate)
        if self.temperature_min > self.temperature:
            raise ConfigError(
                f"temperature_min {self.temperature_min} is above the starting temperature {self.temperature}"
            )

    @property
    def num_pixels(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def components(self) -> int:
        """Mixture components of the prior: prior_components, or its entry's default (vamp 500, mog 10)."""
        return self.prior_components or PRIORS[self.prior].default_components


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults are the tutorial's: Adam, lr 1e-3, batch 50."""

    epochs: int = 10
    batch_size: int = 50  # global batch: with N processes each takes batch_size / N
    lr: float = 1e-3
    seed: int = 0
    objective: str = "elbo"  # a name in vaelab.objectives.OBJECTIVES (its spec says what it takes)
    k: int = 1  # importance samples per image (per group of m for miwae / piwae); 1 with elbo
    m: int = 1  # miwae / piwae: groups of k samples (Rainforth et al. 2018: M x K draws per image)
    ciwae_beta: float = 0.5  # ciwae: beta * ELBO + (1 - beta) * IWAE, from the same k draws
    estimator: Estimator = "reparam"  # gradient: reparam, stl (Roeder et al. 2017), dreg (Tucker et al. 2018)
    beta: float = 1.0  # weight on the KL term (beta-VAE; 1 is the true ELBO); betatc: on the TC term
    tc_estimator: TcEstimator = "mws"  # betatc: mws (disentanglement_lib's) or mss (stratified); see TcEstimator
    warmup_epochs: int = 0  # KL weight rises linearly from 0 to beta over this many epochs
    # free bits (Kingma et al. 2016, IAF, appendix "Free bits"), nats per latent dimension: each
    # dimension's KL, averaged over the batch, counts as max(free_bits, that mean), so a dimension
    # below it costs nothing to use (maths.free_bits_kl). elbo with a Gaussian q(z|x) and the
    # N(0, I) prior only. 0: the plain (beta-weighted) ELBO, bit for bit
    free_bits: float = 0.0
    # the disentangling objectives' weights (defaults: disentanglement_lib's, on dSprites)
    factor_gamma: float = 35.0  # factor: weight on the discriminator's TC estimate (Kim & Mnih 2018)
    disc_lr: float = 1e-4  # factor: the discriminator's Adam (betas 0.5, 0.9)
    dip_lambda_od: float = 10.0  # dip-i / dip-ii: weight on the squared off-diagonal covariances
    dip_lambda_d: float | None = None  # on (C_ii - 1)^2; None: 10 x dip_lambda_od (dip-i), dip_lambda_od (dip-ii)
    capacity_max: float = 25.0  # capacity: the KL target C rises linearly to this many nats ...
    capacity_steps: int = 100_000  # ... over this many steps (Burgess et al. 2018)
    capacity_gamma: float = 1000.0  # capacity: weight on |KL - C|
    # wae / infovae: the MMD between the batch's codes and as many N(0, I) draws (Tolstikhin et al. 2018;
    # Zhao et al. 2019). wae: log p(x|z) - mmd_weight MMD; infovae: log p(x|z) - (1 - info_alpha) KL
    # - (info_alpha + mmd_weight - 1) MMD. Kernel imq (sum over scales of C / (C + d^2), C = 2 D
    # mmd_scale) or rbf (exp(-d^2 / (2 D mmd_scale)))
    mmd_weight: float = 10.0
    mmd_kernel: Literal["imq", "rbf"] = "imq"
    mmd_scale: float = 1.0
    info_alpha: float = 0.0
    schedule: Schedule = "constant"  # "time": lr * 10^(-lr_decay * minutes / max_minutes), per epoch
    lr_decay: float = 1.5  # decades the "time" (over max_minutes) and "exp" (over epochs) schedules fall
    init_output_bias: bool = True  # Bernoulli decoders start at the logit of the mean training pixel
    optimizer: Optimizer = "adam"
    adam_eps: float = 1e-8  # Burda et al. use 1e-4
    grad_clip: float | None = None  # max global gradient norm; None disables clipping
    patience: int | None = None  # early stopping after this many epochs without val improvement
    # end with the weights of the best validation ELBO (model.safetensors, the test ELBO and every
    # later command use them), as early stopping in the VampPrior code keeps its best epoch
    restore_best: bool = False
    max_minutes: float | None = None  # wall-clock budget; training ends cleanly when spent
    device: Device = "auto"
    # torch intra-op threads on CPU. None: the usable cores, whatever the load (the count changes the
    # numbers); "auto": fewer when other processes keep cores busy (vaelab.platform.cpu.auto_threads). fit()
    # writes the count it used into config.json, so a resumed run uses it again.
    threads: int | Literal["auto"] | None = None
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: every epoch only)
    log_every: int = 50  # steps between progress-bar updates of the running ELBO (CPU only)
    compile: bool = False  # torch.compile the training step
    amp: Literal["none", "bf16"] = "none"  # autocast dtype for the networks (CUDA)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "k", "m"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        _positive("lr", self.lr)
        _choice("optimizer", self.optimizer, Optimizer)
        _positive("adam_eps", self.adam_eps)
        _non_negative("beta", self.beta)
        _choice("estimator", self.estimator, Estimator)
        _choice("tc_estimator", self.tc_estimator, TcEstimator)
        _positive("lr_decay", self.lr_decay)
        if not (isinstance(self.ciwae_beta, (int, float)) and 0 <= self.ciwae_beta <= 1):
            raise ConfigError(f"ciwae_beta must lie in [0, 1], got {self.ciwae_beta!r}")
        if self.schedule == "time" and self.max_minutes is None:
            raise ConfigError("schedule time follows the clock over --max-minutes: give --max-minutes too")
        _choice("schedule", self.schedule, Schedule)
        _choice("device", self.device, Device)
        _choice("amp", self.amp, Literal["none", "bf16"])
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        _non_negative("free_bits", self.free_bits)
        self._check_weights()
        check_train_config(self)  # what ties train.objective to the other settings: its spec
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience <= 0):
            raise ConfigError(f"patience must be a positive integer, got {self.patience!r}")
        if self.max_minutes is not None:
            _positive("max_minutes", self.max_minutes)
        if (
            self.threads is not None
            and self.threads != "auto"
            and (not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads <= 0)
        ):
            raise ConfigError(f"threads must be a positive integer or auto, got {self.threads!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not isinstance(self.log_every, int) or self.log_every <= 0:
            raise ConfigError(f"log_every must be a positive integer, got {self.log_every!r}")

    def _check_weights(self) -> None:
        for name in ("factor_gamma", "disc_lr", "dip_lambda_od", "capacity_max", "capacity_gamma"):
            (_positive if name == "disc_lr" else _non_negative)(name, getattr(self, name))
        if self.dip_lambda_d is not None:
            _non_negative("dip_lambda_d", self.dip_lambda_d)
        if not isinstance(self.capacity_steps, int) or self.capacity_steps < 0:
            raise ConfigError(f"capacity_steps must be an integer >= 0, got {self.capacity_steps!r}")
        _non_negative("mmd_weight", self.mmd_weight)
        _positive("mmd_scale", self.mmd_scale)
        _choice("mmd_kernel", self.mmd_kernel, Literal["imq", "rbf"])


@dataclass(frozen=True)
class EvalConfig:
    """Importance-sampled log-likelihood settings (Burda et al. 2016 use k=5000)."""

    k: int = 1000
    batch_size: int = 100  # images per pass, at most (fewer when memory_mb needs it)
    chunk: int = 50  # importance samples per pass, at most (fewer when memory_mb needs it)
    seed: int = 0
    split: Literal["test", "val"] = "test"
    # Working memory of one pass, in MB (1 MB = 2**20 bytes): evaluate.plan_passes measures what one
    # decoded latent costs on a probe (MNIST's MLP ~7 KB, the cifar preset ~2.4 MB, celeba64 ~9.5 MB)
    # and shrinks batch_size, then chunk, to fit. The weights, the data and torch itself come on top.
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        for name in ("k", "batch_size", "chunk", "memory_mb"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        _choice("split", self.split, Literal["test", "val"])


@dataclass(frozen=True)
class RunConfig:
    """Everything a run folder records: data, model and training settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def override(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted overrides applied and checked, as on the command line:
        ``cfg.override({"train.epochs": 2, "data.binarize": "dynamic"})``."""
        from vaelab.config_io import replace

        return replace(self, overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> RunConfig:
        """The config of a table of sections {"data": {...}, "model": {...}, "train": {...}}, each
        key checked against its annotation (:func:`vaelab.config_io.build`)."""
        from vaelab.config_io import build

        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a table of sections, got {type(d).__name__}")
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; allowed: data, model, train")
        return cls(
            data=build(DataConfig, d.get("data", {}), f"{source} [data]"),
            model=build(ModelConfig, d.get("model", {}), f"{source} [model]"),
            train=build(TrainConfig, d.get("train", {}), f"{source} [train]"),
        )


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
