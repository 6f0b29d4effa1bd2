"""``max_batch="auto"``: halving on CUDA out-of-memory, simulated on the CPU, changes nothing but speed."""

import pytest
import torch
import yaml

from sdcorr import geometry
from sdcorr.errors import DeviceMemoryError
from sdcorr.matchers.batching import AUTO_BATCH_ELSEWHERE, initial_batch
from sdcorr.matchers.prompt import PromptMatcher
from tests.conftest import FAST, sdcorr

#: 4 restarts: with reuse a keypoint's fit is one chunk of 4 items; 3 keypoints give 12 locate items
OPTIONS = dict(FAST, restarts=4, steps=2, locate_crops=2)


@pytest.fixture(scope="module")
def problem(photo):
    image = geometry.resize_image(photo, 48)
    return image, torch.tensor([[20.0, 18.0], [30.0, 25.0], [12.0, 33.0]])


def out_of_memory_above(source, monkeypatch, limit: int) -> list[int]:
    """Make every model call on more than ``limit`` items run out of "GPU memory" on its second call, so a
    chunk fails part-way (after an Adam step, drawn crops and noise, cached latents). Returns the sizes tried."""
    original, oversized = source.attention_maps, []

    def attention_maps(latents, *args, **kwargs):
        if len(latents) > limit:
            oversized.append(len(latents))
            if len(oversized) % 2 == 0:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(latents, *args, **kwargs)

    monkeypatch.setattr(source, "attention_maps", attention_maps)
    return oversized


def run(matcher, source, image, points, **kwargs):
    fitted = matcher.fit(source, image, points, seed=3, **kwargs)
    return fitted, matcher.locate(source, image, fitted, seed=3)


@pytest.mark.parametrize("batching", ["source_image", "keypoint", "no reuse"])
def test_halving_on_out_of_memory_gives_exactly_the_fixed_size_results(source, problem, monkeypatch, batching):
    image, points = problem
    reuse = batching != "no reuse"
    keys = PromptMatcher().fit_keys(image, points, 3) if reuse else None
    group = (points, keys) if batching == "source_image" else None  # the pair's keypoints are the image's
    auto = PromptMatcher(**OPTIONS, reuse_fits=reuse)  # "auto" by default
    monkeypatch.setattr(auto._batch, "initial", lambda device, image_size: 16)  # as if on a big GPU
    oversized = out_of_memory_above(source, monkeypatch, 2)
    with pytest.warns(UserWarning) as caught:
        embeddings, located = run(auto, source, image, points, keys=keys, group=group)
    messages = [str(w.message) for w in caught if "max_batch auto" in str(w.message)]
    # halving the failed chunk's length: by keypoint a fitting chunk holds one keypoint's 4 restarts; by
    # source image whole keypoints (all 3, then 1 in 6), then a keypoint's restarts sliced
    fitting = {"source_image": [(12, 6), (4, 2)], "keypoint": [(4, 2)], "no reuse": [(12, 6), (6, 3), (3, 1)]}[batching]
    locating = [(12, 6), (6, 3), (3, 1)]
    said = "max_batch auto: {} items did not fit in GPU memory while {}; using {}"
    expected = [said.format(n, "fitting", m) for n, m in fitting] + [said.format(n, "locating", m) for n, m in locating]
    assert messages == expected
    assert auto._batch.settled == {"fit": fitting[-1][1], "locate": 1}

    # every halving hit the first chunk of a call: exactly the results of the settled sizes, fixed
    fixed_fit = PromptMatcher(**OPTIONS, reuse_fits=reuse, max_batch=auto._batch.settled["fit"])
    fixed_embeddings = fixed_fit.fit(source, image, points, seed=3, keys=keys, group=group)
    fixed_located = PromptMatcher(**OPTIONS, max_batch=1).locate(source, image, fixed_embeddings, seed=3)
    assert torch.equal(embeddings, fixed_embeddings)
    assert torch.equal(located.heatmaps, fixed_located.heatmaps)
    assert torch.equal(located.keypoints, fixed_located.keypoints)
    assert torch.equal(located.layer_keypoints, fixed_located.layer_keypoints)

    # the settled size stays for the rest of the run: the next pair pays no out-of-memory
    tried = len(oversized)
    auto.fit(source, image, points + 1, seed=4)
    auto.locate(source, image, embeddings, seed=4)
    assert len(oversized) == tried


def test_a_fixed_max_batch_never_backs_off(source, problem, monkeypatch):
    image, points = problem
    matcher = PromptMatcher(**OPTIONS, max_batch=4)
    monkeypatch.setattr(matcher._batch, "initial", lambda *args: pytest.fail("a fixed max_batch needs no estimate"))
    out_of_memory_above(source, monkeypatch, 2)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="simulated"):
        matcher.fit(source, image, points, seed=3)
    assert matcher._batch.settled == {}


def test_out_of_memory_at_one_item_stops_with_a_clear_error(source, problem, monkeypatch):
    image, points = problem
    matcher = PromptMatcher(**OPTIONS)
    monkeypatch.setattr(matcher._batch, "initial", lambda device, image_size: 4)
    out_of_memory_above(source, monkeypatch, 0)
    with pytest.warns(UserWarning, match="using [12]$"), pytest.raises(DeviceMemoryError, match="bf16-mixed") as caught:
        matcher.fit(source, image, points[:1], seed=3)
    assert "image_size" in str(caught.value) and isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)


def test_auto_off_cuda_is_the_old_fixed_default(source):
    matcher = PromptMatcher()
    assert matcher.max_batch == "auto"
    assert initial_batch(torch.device("cpu"), 512) == AUTO_BATCH_ELSEWHERE == 10
    assert matcher._batch.current("fit", source.device, 48) == 10 == matcher._batch.current("locate", source.device, 48)
    assert PromptMatcher(mode="reference")._batch.current("fit", source.device, 48) == 1


def test_auto_estimate_on_cuda_is_capped_and_announced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * 2**30, 80 * 2**30))
    with pytest.warns(UserWarning, match="starting at 8 items per model call"):
        assert initial_batch(torch.device("cuda"), 512) == 8  # 0.8 x 20 GiB / 2 GiB
    with pytest.warns(UserWarning, match="starting at 32 items"):
        assert initial_batch(torch.device("cuda"), 256) == 32  # a quarter of the area per item
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000 * 2**30, 2000 * 2**30))
    with pytest.warns(UserWarning, match="starting at 64 items"):
        assert initial_batch(torch.device("cuda"), 512) == 64
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 2**30))
    with pytest.warns(UserWarning, match="starting at 1 items"):
        assert initial_batch(torch.device("cuda"), 512) == 1


@pytest.mark.parametrize("bad", [0, -2, "big", 2.5, True])
def test_max_batch_must_be_auto_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_batch"):
        PromptMatcher(max_batch=bad)


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("4", 4)])
def test_the_command_line_takes_auto_or_a_number(value, parsed):
    option = "--model.matcher.init_args.max_batch"
    result = sdcorr("test", "--config", "configs/smoke.yaml", option, value, "--print_config")
    assert yaml.safe_load(result.stdout)["model"]["matcher"]["init_args"]["max_batch"] == parsed
