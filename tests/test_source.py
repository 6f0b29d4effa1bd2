import pytest
import torch

from sdcorr.errors import OptionError
from sdcorr.matchers.prompt import PromptMatcher
from sdcorr.sources import hub
from sdcorr.sources.architectures import save_random
from sdcorr.sources.stable_diffusion import ModelLoadError, StableDiffusionSource, paper_scheduler
from tests.conftest import tiny_source


def maps_of(source, seed=0):
    g = [torch.Generator().manual_seed(seed)]
    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return source.attention_maps(source.encode(images), source.random_embeddings(g), -8, g)


def test_paper_schedule_timesteps():
    timesteps = paper_scheduler().timesteps
    assert int(timesteps[0]) == 980 and int(timesteps[-8]) == 140 and int(timesteps[-3]) == 40


def test_saved_folder_loads_through_the_checkpoint_path(tmp_path):
    folder = save_random("tiny", tmp_path / "tiny-sd")
    loaded = StableDiffusionSource(pretrained=str(folder), layers=[0, 1], image_size=48)
    built = tiny_source()
    for a, b in zip(maps_of(loaded), maps_of(built)):
        assert torch.equal(a, b)


def test_folder_without_subfolders_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="unet/ and vae/"):
        StableDiffusionSource(pretrained=str(tmp_path))


def test_unreachable_hub_fails_at_once_with_instructions(monkeypatch):
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ModelLoadError, match="pretrained DIR"):
        StableDiffusionSource(pretrained="sdcorr-tests/no-such-model")


def test_maps_are_probabilities_of_the_latent_grid(source):
    maps = maps_of(source)
    assert [tuple(m.shape) for m in maps] == [(1, 24, 24), (1, 12, 12)]  # down 0 at the latent size, down 1 at half
    assert all(m.dtype == torch.float32 and (m >= 0).all() and (m <= 1).all() for m in maps)


def test_noise_kinds_and_bad_options():
    assert torch.all(tiny_source(noise="uniform").draw_noise((4, 2, 2), [torch.Generator().manual_seed(0)]) >= 0)
    assert (tiny_source(noise="gaussian").draw_noise((4, 8, 8), [torch.Generator().manual_seed(0)]) < 0).any()
    with pytest.raises(ValueError, match="noise"):
        tiny_source(noise="pink")
    with pytest.raises(ValueError, match="token_index"):
        tiny_source(token_index=77)


@pytest.mark.slow
def test_compiled_source_matches_the_plain_one():
    """torch.compile (about a minute to compile on 2 CPU cores) gives the same maps and fitting steps."""
    plain, compiled = tiny_source(), tiny_source(compile=True)
    for a, b in zip(maps_of(plain), maps_of(compiled)):
        assert torch.allclose(a, b, atol=1e-5)
    options = dict(steps=2, restarts=1, locate_crops=4)
    image, points = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0)), torch.tensor([[20.0, 20.0]])
    fitted = [PromptMatcher(**options).fit(s, image, points) for s in (plain, compiled)]
    assert torch.allclose(*fitted, atol=1e-5)


def test_a_missing_local_folder_is_not_found_not_a_hub_problem(monkeypatch, tmp_path):
    def no_hub(timeout=5.0):
        raise AssertionError("a path that cannot be a hub id must not reach for the hub")

    monkeypatch.setattr(hub, "_hub_reachable", no_hub)
    missing = tmp_path / "no" / "such" / "weights"
    with pytest.raises(OptionError, match=f"pretrained: {str(missing)!r}: folder not found") as error:
        StableDiffusionSource(pretrained=str(missing))
    assert "download" not in str(error.value) and "hub" not in str(error.value).replace("hub id", "")


def test_a_name_both_folder_and_hub_id_says_neither_was_found(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ModelLoadError, match=r"There is no folder .*models/sd14 either"):
        StableDiffusionSource(pretrained="models/sd14")


def test_sizes_that_would_exhaust_the_machine_or_mean_nothing_are_refused_before_loading(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("checked before the model is built")

    monkeypatch.setattr("sdcorr.sources.stable_diffusion.build_random", no_build)
    with pytest.raises(OptionError, match=r"image_size: expected at most 2048 pixels .*; got 100000"):
        StableDiffusionSource(architecture="tiny", layers=[0], image_size=100000)
    with pytest.raises(OptionError, match=r"num_tokens: expected a text length >= 1; got 0"):
        StableDiffusionSource(architecture="tiny", layers=[0], num_tokens=0, token_index=0)
