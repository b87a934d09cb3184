"""Property tests (hypothesis, derandomized): the parsers fail only with DataError, whatever the bytes;
the maths keeps its inequalities (KL >= 0, ELBO <= IWAE-expected <= log p(x) on a linear-Gaussian
model whose log p(x) is closed form) and stays finite at extreme logits.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.data import IDX_DTYPES, load_image_folder, load_npz, parse_idx, read_idx
from vaelab.errors import DataError
from vaelab.models import make_likelihood

PARSERS = settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MATHS = settings(derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- parsers ----------------------------------------------------------------------------------------


def parse_or_data_error(fn, *args):
    """Call fn; a DataError is a fine answer, any other exception fails the test."""
    try:
        return fn(*args)
    except DataError:
        return None


@PARSERS
@given(st.binary(max_size=300))
def test_idx_parser_on_random_bytes(data):
    out = parse_or_data_error(parse_idx, data)
    if out is not None:  # only when the bytes happen to be a valid IDX file
        assert isinstance(out, np.ndarray) and out.ndim == data[3]


@st.composite
def idx_files(draw):
    """A valid IDX header (any type, 1-6 dims, some of them huge) and a payload that may not fit it."""
    type_code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    ndim = draw(st.integers(1, 6))
    small = st.integers(0, 5)
    dims = draw(st.lists(st.one_of(small, small, st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    itemsize = np.dtype(IDX_DTYPES[type_code]).itemsize
    need = math.prod(dims) * itemsize
    if need <= 4000 and draw(st.booleans()):
        n = need  # exactly right
    else:
        n = draw(st.integers(0, 64))
    payload = draw(st.binary(min_size=n, max_size=n))
    return type_code, tuple(dims), struct.pack(">HBB", 0, type_code, ndim) + struct.pack(f">{ndim}I", *dims) + payload


@PARSERS
@given(idx_files())
def test_idx_parser_on_valid_headers(case):
    type_code, dims, data = case
    itemsize = np.dtype(IDX_DTYPES[type_code]).itemsize
    header = 4 + 4 * len(dims)
    if len(data) - header == math.prod(dims) * itemsize:
        try:
            out = parse_idx(data)
        except DataError as e:  # only an empty array whose other sizes overflow numpy's limits
            assert 0 in dims and "is not a valid array shape" in str(e)
            return
        assert out.shape == dims and out.dtype == np.dtype(IDX_DTYPES[type_code]).newbyteorder("=")
        assert (
            out.tobytes()
            == np.frombuffer(data, np.dtype(IDX_DTYPES[type_code]), offset=header).astype(out.dtype).tobytes()
        )
    else:
        with pytest.raises(DataError, match="IDX header says shape"):
            parse_idx(data)


def test_idx_header_with_too_many_dimensions():
    data = struct.pack(">HBB", 0, 0x08, 200) + struct.pack(">200I", *([1] * 200)) + b"\x07"
    with pytest.raises(DataError, match="declares 200 dimensions"):
        parse_idx(data)


@PARSERS
@given(st.binary(max_size=300), st.booleans())
def test_gzip_reader_on_random_bytes(data, compress_them):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(data) if compress_them else data)
        parse_or_data_error(read_idx, path)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@st.composite
def npy_bytes(draw):
    """An .npy file: a valid header with a random dtype and shape, and random data of any length."""
    dtype = draw(st.sampled_from(["|u1", "<f4", "<f8", "<i8", "|b1", "<c8", "<U3", "|V4"]))
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=5)))
    header = {"descr": dtype, "fortran_order": draw(st.booleans()), "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    n = math.prod(shape) * np.dtype(dtype).itemsize
    data = draw(st.one_of(st.binary(min_size=n, max_size=n), st.binary(max_size=64)))
    return buf.getvalue() + data


@PARSERS
@given(
    st.one_of(
        st.binary(max_size=300),  # anything
        st.builds(lambda d: _zip({"x.npy": d}), st.binary(max_size=200)),  # a zip with a random member
        st.builds(lambda x, y: _zip({"x.npy": x, "y.npy": y}), npy_bytes(), npy_bytes()),  # random headers
    )
)
def test_npz_reader_on_random_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        path.write_bytes(data)
        splits = parse_or_data_error(load_npz, path)
        if splits is not None:
            assert splits.train.images.dtype == torch.uint8 and splits.train.images.ndim == 4


def _png(h: int, w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.builds(
                lambda b, cut: b[:cut], st.builds(_png, st.integers(1, 6), st.integers(1, 6)), st.integers(0, 120)
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_image_folder_reader_on_random_files(files):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "images"
        folder.mkdir()
        for i, data in enumerate(files):
            (folder / f"{i}.png").write_bytes(data)
        parse_or_data_error(load_image_folder, folder)


# -- maths ---------------------------------------------------------------------------------------

finite64 = st.floats(-1e3, 1e3, allow_nan=False)
logvars64 = st.floats(-30.0, 30.0, allow_nan=False)


@MATHS
@given(
    st.integers(1, 8).flatmap(
        lambda d: st.tuples(st.lists(finite64, min_size=d, max_size=d), st.lists(logvars64, min_size=d, max_size=d))
    )
)
def test_gaussian_kl_is_non_negative(case):
    loc, logvar = (torch.tensor(v, dtype=torch.float64) for v in case)
    kl = maths.gaussian_kl(loc, logvar)
    # exp(lv) - 1 - lv >= 0 holds exactly; in floating point exp(lv) is rounded, so for |lv| below
    # the unit roundoff a term can come out as -|lv|/2 or one ulp of 1 below zero.
    assert float(kl) >= -len(case[0]) * 2.3e-16
    for dtype, eps in ((torch.float64, 2.3e-16), (torch.float32, 1.2e-7)):
        kl = maths.gaussian_kl(loc.to(dtype), logvar.to(dtype))
        assert torch.isfinite(kl) and float(kl) >= -len(case[0]) * eps


def test_gaussian_kl_is_zero_only_at_the_prior():
    assert float(maths.gaussian_kl(torch.zeros(5), torch.zeros(5))) == 0.0
    loc = torch.tensor([1e-3], dtype=torch.float64)
    assert float(maths.gaussian_kl(loc, torch.zeros(1, dtype=torch.float64))) == pytest.approx(0.5e-6, rel=1e-9)


@st.composite
def linear_gaussian(draw):
    """p(z) = N(0, I_D), p(x|z) = N(W z + b, s2 I_P) with orthogonal columns of W (so that the exact
    posterior is diagonal, as q(z|x) is), an observation x and an arbitrary diagonal q."""
    d = draw(st.integers(1, 3))
    p = draw(st.integers(d, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(p, d, generator=g, dtype=torch.float64))  # orthonormal columns
    scales = torch.tensor(draw(st.lists(st.floats(0.1, 3.0), min_size=d, max_size=d)), dtype=torch.float64)
    w = q * scales  # W^T W = diag(scales^2)
    b = torch.randn(p, generator=g, dtype=torch.float64)
    s2 = draw(st.floats(0.05, 2.0))
    x = (
        b
        + w @ torch.randn(d, generator=g, dtype=torch.float64)
        + math.sqrt(s2) * torch.randn(p, generator=g, dtype=torch.float64)
    )
    q_loc = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=d, max_size=d)), dtype=torch.float64)
    q_logvar = torch.tensor(draw(st.lists(st.floats(-4, 2), min_size=d, max_size=d)), dtype=torch.float64)
    return w, b, s2, x, q_loc, q_logvar


def exact_log_px(w, b, s2, x):
    """log N(x; b, W W^T + s2 I), the marginal of the linear-Gaussian model."""
    cov = w @ w.T + s2 * torch.eye(len(b), dtype=torch.float64)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x)


def exact_posterior(w, b, s2, x):
    """q*(z|x): loc = (I + W^T W / s2)^-1 W^T (x - b) / s2, diagonal covariance here."""
    prec = 1.0 + (w * w).sum(0) / s2  # diagonal of I + W^T W / s2
    return (w.T @ (x - b)) / s2 / prec, -torch.log(prec)


def log_weights(w, b, s2, x, loc, logvar, eps):
    """log w_k from vaelab.objectives: log p(x|z_k) + log p(z_k) - log q(z_k|x). eps: (K, 1, D)."""
    z = maths.reparameterize(loc, logvar, eps)  # (K, 1, D)
    mean = (z @ w.T + b).reshape(*z.shape[:-1], 1, 1, -1)  # (K, 1, C=1, H=1, W=P)
    xs = x.reshape(1, 1, 1, -1)  # (B=1, 1, 1, P)
    log_px_z = maths.gaussian_pixel_log_prob(xs, mean, torch.full_like(mean, math.log(s2)))  # (K, 1)
    return maths.log_weights(log_px_z, maths.std_normal_log_prob(z), maths.gaussian_log_prob(z, loc, logvar))


@MATHS
@given(linear_gaussian(), st.integers(1, 64))
def test_iwae_bound_is_exact_with_the_exact_posterior(model, k):
    w, b, s2, x, _, _ = model
    loc, logvar = exact_posterior(w, b, s2, x)
    eps = torch.randn(k, 1, len(loc), generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    log_w = log_weights(w, b, s2, x, loc, logvar, eps)
    # every weight equals p(x) (the importance ratio is constant), so the bound is exact for any K
    torch.testing.assert_close(maths.iwae_bound(log_w), exact_log_px(w, b, s2, x).reshape(1), rtol=1e-10, atol=1e-9)


@MATHS
@given(linear_gaussian())
def test_elbo_is_below_log_px_by_exactly_the_kl_to_the_posterior(model):
    w, b, s2, x, loc, logvar = model
    var = logvar.exp()
    p = len(b)
    # E_q[log p(x|z)] in closed form: -P/2 log(2 pi s2) - (|x - W m - b|^2 + tr(W diag(v) W^T)) / (2 s2)
    resid = x - w @ loc - b
    e_log_px_z = -0.5 * p * math.log(2 * math.pi * s2) - (resid @ resid + ((w * w) * var).sum()) / (2 * s2)
    elbo = maths.elbo(e_log_px_z, maths.gaussian_kl(loc, logvar))
    log_px = exact_log_px(w, b, s2, x)
    post_loc, post_logvar = exact_posterior(w, b, s2, x)
    kl_to_post = (
        0.5
        * ((logvar - post_logvar).exp() + (loc - post_loc) ** 2 / post_logvar.exp() - 1 - (logvar - post_logvar)).sum()
    )
    assert float(elbo) <= float(log_px) + 1e-9
    torch.testing.assert_close(log_px - elbo, kl_to_post, rtol=1e-9, atol=1e-9)


@settings(derandomize=True, max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_gaussian(), st.sampled_from([1, 4, 32]))
def test_iwae_bound_is_below_log_px_in_expectation(model, k):
    """Monte Carlo over 4000 independent K-sample bounds (seeded): mean <= log p(x) + 4 standard errors."""
    w, b, s2, x, loc, logvar = model
    reps = 4000
    eps = torch.randn(k, reps, len(loc), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = maths.reparameterize(loc, logvar, eps)  # (K, R, D): R independent estimates in parallel
    mean = (z @ w.T + b).reshape(k, reps, 1, 1, -1)
    xs = x.reshape(1, 1, 1, -1).expand(reps, 1, 1, -1)
    log_px_z = maths.gaussian_pixel_log_prob(xs, mean, torch.full_like(mean, math.log(s2)))  # (K, R)
    log_w = maths.log_weights(log_px_z, maths.std_normal_log_prob(z), maths.gaussian_log_prob(z, loc, logvar))
    bounds = maths.iwae_bound(log_w)  # (R,)
    se = bounds.std() / math.sqrt(reps)
    assert float(bounds.mean()) <= float(exact_log_px(w, b, s2, x)) + 4 * float(se) + 1e-9


extreme_logits = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def bernoulli_rounding(logits: torch.Tensor) -> float:
    """How far above 0 a float32 log-probability of binary pixels may come out: the no-grad path
    sums x*l and softplus(l) separately (a dot product, for speed) and subtracts, so one float32
    rounding of sums of size sum|l| remains (see test_bernoulli_log_prob_of_saturated_pixels)."""
    return 2 * 2**-23 * float(logits.detach().abs().sum())


def test_bernoulli_log_prob_of_saturated_pixels():
    """Binary pixels that the decoder is sure of (logits 20..50): log p(x|z) = -sum softplus(-l) ~ -1e-7."""
    g = torch.Generator().manual_seed(1)
    logits = torch.rand(1, 1, 1, 28, 28, generator=g) * 30 + 20
    x = torch.ones(1, 1, 28, 28)
    exact = float(-torch.nn.functional.softplus(-logits.double()).sum())  # about -1e-7
    train = maths.bernoulli_log_prob(x, logits.clone().requires_grad_()).item()  # per-pixel terms, then the sum
    assert train <= 0.0 and train == pytest.approx(exact, abs=1e-6)
    with torch.no_grad():
        fast = maths.bernoulli_log_prob(x, logits).item()
    # 0.0039 with torch 2.13 on a CPU: two sums of ~27,000 cancel; a log-probability above 0, off by 2 float32 ulps of the sums
    assert abs(fast - exact) <= bernoulli_rounding(logits)


@MATHS
@given(
    st.lists(extreme_logits, min_size=16, max_size=16),
    st.lists(st.floats(0, 1, width=32), min_size=16, max_size=16),
    st.sampled_from(["bernoulli", "continuous-bernoulli", "gaussian", "gaussian-fixed"]),
)
def test_elbo_is_finite_for_extreme_decoder_outputs(logits, pixels, likelihood):
    cfg = ModelConfig(input_shape=(1, 4, 4), hidden=(4,), latent_dim=2, likelihood=likelihood)
    lik = make_likelihood(cfg)
    x = torch.tensor(pixels).reshape(1, 1, 4, 4)
    if likelihood == "bernoulli":
        x = (x > 0.5).float()  # binary pixels: log p(x|z) is then a log-probability, <= 0
    params = torch.tensor(logits).reshape(1, 1, 1, 1, 4, 4).expand(1, 1, lik.num_params, 1, 4, 4).contiguous()
    loc = torch.tensor([[1e3, -1e3]])
    logvar = torch.tensor([[20.0, -20.0]])
    for grad in (False, True):  # the no-grad evaluation path and the training path
        p = params.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            log_px_z = lik.log_prob(x, p)  # (1, 1)
            elbo = maths.elbo(log_px_z.mean(0), maths.gaussian_kl(loc, logvar))
        assert torch.isfinite(log_px_z).all() and torch.isfinite(elbo).all(), (grad, log_px_z)
        if likelihood == "bernoulli":
            assert log_px_z.item() <= bernoulli_rounding(p)
        if grad:
            (-elbo.sum()).backward()
            assert torch.isfinite(p.grad).all()
