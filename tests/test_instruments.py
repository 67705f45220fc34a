"""Instruments: pixel grids, PSF kernels and point images, FFT convolution, CCD noise."""

import numpy as np
import pytest
import scipy.signal
import torch

from skyfit import (
    Gaussian,
    GaussianPSF,
    PixelatedPSF,
    PixelGrid,
    PointSource,
    ReadPoissonNoise,
)
from skyfit.errors import ShapeError
from skyfit.instruments import fft_convolve

f64 = torch.float64


def centroid(image, grid):
    x, y = grid.coordinates()
    return ((image * x).sum() / image.sum()).item(), ((image * y).sum() / image.sum()).item()


# --------------------------------------------------------------------------- PixelGrid


def test_pixel_grid_centres_follow_the_convention():
    grid = PixelGrid((4, 6), 0.5, center=(1.0, -2.0), supersample=3)
    x, y = grid.coordinates()
    assert x.shape == y.shape == (4, 6)
    assert x[0, 0].item() == pytest.approx(1.0 - 2.5 * 0.5)  # x grows with the column
    assert y[0, 0].item() == pytest.approx(-2.0 - 1.5 * 0.5)  # y grows with the row
    xs, ys = grid.subpixel_coordinates()
    assert xs.shape == (12, 18)
    # the sub-pixels of a pixel are centred on it
    torch.testing.assert_close(xs.reshape(4, 3, 6, 3).mean((1, 3)), x)
    torch.testing.assert_close(ys.reshape(4, 3, 6, 3).mean((1, 3)), y)
    assert grid.extent == pytest.approx((1.0 - 1.5, 1.0 + 1.5, -2.0 - 1.0, -2.0 + 1.0))
    # pixel edges: one more than the pixels, centred between, spanning the extent
    xe, ye = grid.pixel_edges()
    assert xe.shape == (7,) and ye.shape == (5,)
    torch.testing.assert_close((xe[:-1] + xe[1:]) / 2, x[0])
    torch.testing.assert_close((ye[:-1] + ye[1:]) / 2, y[:, 0])
    assert (xe[0].item(), xe[-1].item(), ye[0].item(), ye[-1].item()) == pytest.approx(grid.extent)
    # the coordinate arrays are contiguous (a compiled simulator walks them in one flat loop)
    assert x.is_contiguous() and y.is_contiguous()


def test_integrate_is_exact_for_a_linear_surface_brightness():
    grid = PixelGrid((5, 7), 0.2, center=(0.3, 0.1), supersample=4)
    xs, ys = grid.subpixel_coordinates()
    x, y = grid.coordinates()
    image = grid.integrate(2.0 + 3.0 * xs - 1.5 * ys)
    torch.testing.assert_close(image, (2.0 + 3.0 * x - 1.5 * y) * grid.pixel_area, rtol=1e-12,
                               atol=1e-14)
    # batch dimensions pass through
    assert grid.integrate(torch.ones(2, 3, 20, 28, dtype=f64)).shape == (2, 3, 5, 7)


def test_sample_layout_integrates_like_the_image_layout():
    grid = PixelGrid((5, 7), 0.2, center=(0.3, 0.1), supersample=3)
    xs, ys = grid.sample_coordinates()
    assert xs.shape == (9, 5, 7)
    # the same sub-pixel centres, only ordered sub-pixel first
    xi, yi = grid.subpixel_coordinates()
    torch.testing.assert_close(xs.flatten().sort().values, xi.flatten().sort().values)
    torch.testing.assert_close(ys.flatten().sort().values, yi.flatten().sort().values)
    f = lambda x, y: torch.exp(-(x**2 + 2 * y**2))  # noqa: E731
    torch.testing.assert_close(grid.integrate_samples(f(xs, ys)), grid.integrate(f(xi, yi)),
                               rtol=1e-13, atol=0)
    assert grid.integrate_samples(torch.ones(2, 9, 5, 7, dtype=f64)).shape == (2, 5, 7)
    with pytest.raises(ShapeError, match="sample_coordinates"):
        grid.integrate_samples(torch.ones(15, 21, dtype=f64))
    plain = PixelGrid((5, 7), 0.2)  # no supersampling: pixel centres, no extra axis
    assert plain.sample_coordinates()[0].shape == (5, 7)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(shape=(10,), pixel_scale=0.1), ShapeError),
        (dict(shape=(0, 10), pixel_scale=0.1), ShapeError),
        (dict(shape=(10, 10), pixel_scale=0.0), ValueError),
        (dict(shape=(10, 10), pixel_scale=-0.1), ValueError),
        (dict(shape=(10, 10), pixel_scale=float("nan")), ValueError),
        (dict(shape=(10, 10), pixel_scale=0.1, supersample=0), ValueError),
        (dict(shape=(10, 10), pixel_scale=0.1, supersample=1.5), ValueError),
    ],
)
def test_pixel_grid_bad_input_raises(kwargs, error):
    with pytest.raises(error):
        PixelGrid(**kwargs)


def test_integrate_with_the_wrong_shape_raises():
    grid = PixelGrid((8, 8), 0.1, supersample=2)
    with pytest.raises(ShapeError, match="expected"):
        grid.integrate(torch.ones(8, 8))


# --------------------------------------------------------------------------- PSF kernels


def test_gaussian_psf_kernel_is_normalised_with_second_moment_sigma_squared():
    sigma, ps = 0.4, 0.05  # 8 pixels; the kernel covers +-10 sigma
    k = GaussianPSF(sigma=torch.tensor(sigma, dtype=f64), size=161).kernel(ps)
    assert k.dtype == f64
    assert k.sum().item() == pytest.approx(1.0, abs=1e-14)
    r = (torch.arange(161, dtype=f64) - 80) * ps
    var_x = (k * r[None, :] ** 2).sum().item()
    var_y = (k * r[:, None] ** 2).sum().item()
    assert var_x == pytest.approx(sigma**2, rel=1e-9)
    assert var_y == pytest.approx(sigma**2, rel=1e-9)
    assert (k * r[None, :]).sum().item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psf_convolution_conserves_flux_and_keeps_the_image_dtype(dtype):
    grid = PixelGrid((64, 64), 0.05, dtype=dtype)  # the source is 0 (< 1e-16) near the edges
    x, y = grid.coordinates()
    image = grid.integrate(Gaussian(sigma=0.15, flux=3.0).brightness(x, y))
    ker = torch.exp(-0.5 * (torch.arange(9.0) - 4) ** 2 / 2.0)
    for psf in (GaussianPSF(sigma=0.1, size=11), PixelatedPSF(kernel=ker[:, None] * ker)):
        out = psf.convolve(image, grid.pixel_scale)
        assert out.dtype == dtype
        tol = 1e-12 if dtype == f64 else 1e-5
        assert out.sum().item() == pytest.approx(image.sum().item(), rel=tol)


@pytest.mark.parametrize("size", [4, 0, 2.5])
def test_psf_with_an_even_or_bad_size_raises(size):
    with pytest.raises(ShapeError, match="odd"):
        GaussianPSF(sigma=0.1, size=size)


def test_pixelated_psf_bad_kernels_raise():
    with pytest.raises(ShapeError, match="odd"):
        PixelatedPSF(kernel=torch.ones(4, 4))
    with pytest.raises(ShapeError, match="square"):
        PixelatedPSF(kernel=torch.ones(5, 7))
    with pytest.raises(ValueError, match="positive sum"):
        PixelatedPSF(kernel=torch.zeros(5, 5))


# --------------------------------------------------------------------------- point sources


@pytest.mark.parametrize("x0, y0", [(0.0, 0.0), (0.03, -0.02), (0.051, 0.27), (-0.449, 0.1)])
def test_point_source_image_sums_to_flux_and_is_centred_on_its_position(x0, y0):
    grid = PixelGrid((41, 41), 0.1)
    sn = PointSource(x0=torch.tensor(x0, dtype=f64), y0=torch.tensor(y0, dtype=f64),
                     flux=torch.tensor(3.0, dtype=f64))
    image = GaussianPSF(sigma=0.15).point_image(grid, *sn.position_flux())
    assert image.sum().item() == pytest.approx(3.0, rel=1e-12)
    cx, cy = centroid(image, grid)
    assert abs(cx - x0) / 0.1 < 1e-6 and abs(cy - y0) / 0.1 < 1e-6


def test_gaussian_psf_point_images_broadcast_over_epochs():
    grid = PixelGrid((21, 21), 0.1)
    psf = GaussianPSF(sigma=torch.tensor([0.1, 0.2, 0.15], dtype=f64))
    flux = torch.tensor([1.0, 2.0, 3.0], dtype=f64)
    images = psf.point_image(grid, 0.02, -0.01, flux)
    assert images.shape == (3, 21, 21)
    for i in range(3):
        one = GaussianPSF(sigma=psf.sigma.value[i]).point_image(grid, 0.02, -0.01, flux[i])
        torch.testing.assert_close(images[i], one)


def _star_kernel(size=15, sigma_pix=1.5):
    r = torch.arange(size, dtype=f64) - size // 2
    return torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma_pix**2)


def test_pixelated_psf_point_image_sums_to_flux_and_its_centroid_follows_subpixel_shifts():
    grid = PixelGrid((33, 33), 0.1)
    psf = PixelatedPSF(kernel=_star_kernel())
    shifts = np.linspace(0.0, 0.1, 21)  # across one pixel
    centroids = []
    for s in shifts:
        image = psf.point_image(grid, float(s), -0.03, 2.0)
        assert image.sum().item() == pytest.approx(2.0, rel=1e-6)
        cx, cy = centroid(image, grid)
        centroids.append(cx)
        assert abs(cy + 0.03) / 0.1 < 1e-4
    centroids = np.array(centroids)
    np.testing.assert_allclose(centroids, shifts, atol=1e-4 * 0.1)  # < 1e-4 pixel
    assert np.all(np.diff(centroids) > 0)  # continuous and monotonic, no jump at half a pixel


def test_pixelated_psf_at_a_pixel_centre_is_the_kernel_itself():
    grid = PixelGrid((21, 21), 0.1)
    ker = _star_kernel(9, 1.2) * (1 + 0.1 * torch.arange(9, dtype=f64))  # asymmetric on purpose
    image = PixelatedPSF(kernel=ker).point_image(grid, 0.3, -0.2, 1.0)  # pixel (8, 13)
    expected = torch.zeros(21, 21, dtype=f64)
    expected[8 - 4 : 8 + 5, 13 - 4 : 13 + 5] = ker / ker.sum()
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- convolution


@pytest.mark.parametrize("kshape", [(7, 7), (5, 9), (1, 3)])
def test_fft_convolve_equals_scipy_convolve2d_same(kshape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 27))
    kernel = rng.normal(size=kshape)
    ours = fft_convolve(torch.tensor(image), torch.tensor(kernel)).numpy()
    np.testing.assert_allclose(ours, scipy.signal.convolve2d(image, kernel, mode="same"),
                               rtol=0, atol=1e-12)


def test_fft_convolve_broadcasts_batches_and_conserves_flux_away_from_the_edge():
    rng = np.random.default_rng(1)
    images = torch.zeros(3, 32, 32, dtype=f64)
    images[:, 10:22, 12:20] = torch.tensor(rng.random((3, 12, 8)))
    kernels = torch.tensor(rng.random((3, 7, 7)))
    kernels = kernels / kernels.sum((-2, -1), keepdim=True)
    out = fft_convolve(images, kernels)
    assert out.shape == (3, 32, 32)
    for i in range(3):
        torch.testing.assert_close(out[i], fft_convolve(images[i], kernels[i]))
    torch.testing.assert_close(out.sum((-2, -1)), images.sum((-2, -1)), rtol=1e-12, atol=0)
    # one kernel for a whole stack
    torch.testing.assert_close(fft_convolve(images, kernels[0])[1],
                               fft_convolve(images[1], kernels[0]))


def test_fixed_psf_kernel_cache_does_not_escape_torch_func_transforms():
    # the kernel FFT of a static PSF is cached; first built inside jacfwd (whose tensors are
    # wrapped for its level), a stored copy broke every later call ("escaped?" assertion)
    from problems import HOST, SN, supernova_data

    import skyfit

    data = supernova_data(0)

    def posterior():  # a joint model of the epochs, its PSF cache empty
        host = skyfit.Sersic("host", **HOST)
        sn = skyfit.PointSource("sn", x0=SN["x0"], y0=SN["y0"],
                                flux=data.true_fluxes.clamp(min=1.0))
        scene = skyfit.Scene(data.grid, [host], GaussianPSF(sigma=data.psf_sigma, size=15), [sn])
        host.to_dynamic()
        sn.to_dynamic()
        return skyfit.Posterior(skyfit.GaussianLikelihood(scene, data.images, noise=data.noise))

    post = posterior()
    x = post.initial()
    hessian_fwd = torch.func.jacfwd(torch.func.jacrev(post.log_prob))
    first, second = hessian_fwd(x), hessian_fwd(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    reference = torch.func.jacrev(torch.func.jacrev(posterior().log_prob))(x)
    torch.testing.assert_close(first, reference, rtol=1e-9, atol=1e-9)
    # plain and batched calls after them agree with a fresh model
    torch.testing.assert_close(post(x), posterior()(x))
    torch.testing.assert_close(post(torch.stack([x, x])), posterior()(x).expand(2))


def test_fft_convolve_with_an_even_kernel_raises():
    with pytest.raises(ShapeError, match="odd"):
        fft_convolve(torch.ones(8, 8), torch.ones(4, 3))


# --------------------------------------------------------------------------- noise


def test_read_poisson_variance_formula():
    t, r, sky = 20.0, 4.0, 1.5
    noise = ReadPoissonNoise(exposure_time=torch.tensor(t, dtype=f64),
                             read_noise=torch.tensor(r, dtype=f64),
                             sky=torch.tensor(sky, dtype=f64))
    model = torch.tensor([0.0, 1.0, 7.5, 100.0], dtype=f64)
    torch.testing.assert_close(noise.variance(model), (model + sky) / t + (r / t) ** 2)


def test_read_poisson_samples_have_the_model_mean_and_variance():
    noise = ReadPoissonNoise(exposure_time=torch.tensor(10.0, dtype=f64),
                             read_noise=torch.tensor(3.0, dtype=f64),
                             sky=torch.tensor(2.0, dtype=f64))
    model = torch.linspace(0.0, 20.0, 50, dtype=f64)
    gen = torch.Generator().manual_seed(123)
    K = 4000
    draws = torch.stack([noise.sample(model, gen) for _ in range(K)])
    var = noise.variance(model)
    z = (draws.mean(0) - model) / (var / K).sqrt()
    assert z.abs().max().item() < 4.5  # 50 pixels: 4.5 sigma is a 3e-4 false-alarm rate
    assert z.mean().abs().item() < 4.5 / 50**0.5
    ratio = draws.var(0) / var  # each ~ 1 +- sqrt(2 / K) = 2.2%
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.015)
    assert (ratio - 1).abs().max().item() < 0.12
    # seeded draws repeat
    a = noise.sample(model, torch.Generator().manual_seed(7))
    b = noise.sample(model, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)


def test_read_poisson_noise_rejects_a_non_positive_exposure_time():
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="exposure_time"):
            ReadPoissonNoise(exposure_time=t, read_noise=1.0)


def test_fixed_psf_kernel_cache_follows_value_changes():
    # a freed parameter tensor's id() can be reused by the next value: the cache must notice
    img = torch.zeros(21, 21, dtype=f64)
    img[10, 10] = 1
    psf = GaussianPSF(sigma=0.1, size=11)
    for i in range(50):
        psf.sigma.value = 0.1 + 0.001 * i
        psf.convolve(img, 0.05)
        psf.sigma.value = 0.5  # never convolved
        psf.sigma.value = 0.15 + 0.001 * i
        reference = GaussianPSF(sigma=0.15 + 0.001 * i, size=11).convolve(img, 0.05)
        torch.testing.assert_close(psf.convolve(img, 0.05), reference, rtol=0, atol=1e-14)


@pytest.mark.parametrize("x0", [-2.2, -3.6, 5.0])
def test_pixelated_psf_source_far_outside_the_grid_gives_no_light(x0):
    # the Fourier shift works on a periodic canvas: without care such sources wrap into the image
    grid = PixelGrid((32, 32), 0.1)
    r = torch.arange(5, dtype=f64) - 2
    psf = PixelatedPSF(kernel=torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2)))
    assert psf.point_image(grid, x0, 0.0, 1.0).abs().sum().item() < 1e-12
    # as the Gaussian PSF (exact pixel integrals: at x0 = -2.2 the field is 6 sigma away)
    assert GaussianPSF(sigma=0.1, size=5).point_image(grid, x0, 0.0, 1.0).sum().item() < 1e-8
