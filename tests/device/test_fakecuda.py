"""The fake CUDA device itself (tests/fakecuda.py): each class of device mistake it is there to catch fails loudly,
and correct code gets the CPU's exact values."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch
from torch import nn

from tests.fakecuda import FakeGenerator, fake_cuda, is_fake

CUDA1 = torch.device("cuda:1")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()  # fmt: skip


def test_patches_hold_inside_the_lane_only():
    real = torch.cuda.is_available(), torch.cuda.device_count(), torch.Generator, torch.autocast
    with fake_cuda(count=3) as lane:
        assert torch.cuda.is_available() and torch.cuda.device_count() == 3 and lane.count == 3
        assert torch.cuda.get_device_properties(2).major == 9
    assert (torch.cuda.is_available(), torch.cuda.device_count(), torch.Generator, torch.autocast) == real
    with fake_cuda(), pytest.raises(RuntimeError, match="already active"), fake_cuda():
        pass


# -- mixing devices ----------------------------------------------------------------------------------------------


def test_a_cpu_tensor_meeting_a_device_one_fails_as_on_cuda():
    with fake_cuda():
        x = torch.ones(2, 3, device="cuda:1")
        assert x.device == CUDA1 and x.is_cuda and not x.is_cpu and x.get_device() == 1 and is_fake(x)
        for mistake in (lambda: x + torch.ones(2, 3), lambda: torch.cat([x, torch.zeros(1, 3)]),
                        lambda: torch.ones(3, 2) @ x, lambda: torch.where(torch.ones(2, 3) > 0, x, x)):  # fmt: skip
            with pytest.raises(RuntimeError, match=r"same device.*cuda:1 and cpu"):
                mistake()
        # what CUDA allows: 0-dim CPU tensors (scalars), Python numbers, CPU index tensors, copies between devices
        assert (x * torch.tensor(2.0)).device == CUDA1 and (x + 1).device == CUDA1
        assert x[torch.tensor([1, 0])].device == CUDA1
        cpu = torch.empty(2, 3)
        cpu.copy_(x)
        assert not is_fake(cpu) and cpu.sum().item() == 6


def test_a_model_on_the_device_fed_a_cpu_input_fails():
    with fake_cuda():
        model = small_net().to(CUDA1)
        with pytest.raises(RuntimeError, match="same device"):
            model(torch.zeros(1, 3, 8, 8))
        assert model(torch.zeros(1, 3, 8, 8).to(CUDA1)).device == CUDA1


def test_a_hard_coded_cuda_0_meets_the_given_cuda_1_and_fails():
    with fake_cuda() as lane:
        x = torch.ones(3, device=CUDA1)
        with pytest.raises(RuntimeError, match="cuda:0 and cuda:1"):
            x + torch.zeros(3, device="cuda")  # "cuda" is the current device: 0
        with pytest.raises(RuntimeError, match="cuda:0 and cuda:1"):
            x + torch.zeros(3).cuda()
        with torch.cuda.device(1):
            assert (x + torch.zeros(3, device="cuda")).device == CUDA1
        with pytest.raises(RuntimeError, match="invalid device ordinal"):
            torch.zeros(1, device="cuda:2")
        lane.used.clear()
        _ = torch.ones(2, device=CUDA1) * 2
        assert lane.used == {1}  # a worker given GPU 1 that touched cuda:0 would show it here


# -- NumPy -------------------------------------------------------------------------------------------------------


def test_numpy_of_a_device_tensor_needs_cpu_first():
    from PIL import Image

    with fake_cuda():
        x = torch.arange(6, dtype=torch.float32, device=CUDA1).view(2, 3)
        for mistake in (x.numpy, lambda: np.asarray(x), lambda: Image.fromarray(x.byte().numpy())):
            with pytest.raises(TypeError, match="can't convert cuda:1 device type tensor to numpy"):
                mistake()
        assert x.cpu().numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
        assert x.numpy(force=True).sum() == 15 and x.tolist()[1] == [3, 4, 5] and x.sum().item() == 15
        assert float(x[1, 2]) == 5.0 and f"{x.sum():.1f}" == "15.0"


# -- generators --------------------------------------------------------------------------------------------------


def test_a_cpu_generator_for_a_device_draw_fails_and_device_generators_repeat():
    with fake_cuda():
        cpu_gen = torch.Generator().manual_seed(0)
        with pytest.raises(RuntimeError, match="Expected a 'cuda' device type for generator but found 'cpu'"):
            torch.randn(3, generator=cpu_gen, device=CUDA1)
        x = torch.empty(3, device=CUDA1)
        with pytest.raises(RuntimeError, match="Expected a 'cuda' device type for generator"):
            x.normal_(generator=cpu_gen)
        # correct: a CPU draw moved to the device (what cnnviz does: the same numbers on every device)
        assert torch.randn(3, generator=cpu_gen).to(CUDA1).device == CUDA1
        gen = torch.Generator(device=CUDA1)
        assert isinstance(gen, FakeGenerator) and isinstance(gen, torch.Generator) and gen.device == CUDA1
        a = torch.randn(4, generator=gen.manual_seed(3), device=CUDA1)
        b = torch.randn(4, generator=gen.manual_seed(3), device=CUDA1)
        assert torch.equal(a.cpu(), b.cpu())
        assert isinstance(torch.Generator(), torch.Generator) and torch.Generator().device.type == "cpu"


def test_each_device_has_its_own_default_generator():
    with fake_cuda():
        torch.manual_seed(1)  # seeds the CPU and every device
        a = torch.randn(4, device=CUDA1)
        torch.cuda.manual_seed(7)  # the current device's only (cuda:0)
        torch.randn(4, device="cuda:0")
        with torch.cuda.device(1):
            torch.cuda.manual_seed(1)
        b = torch.randn(4, device=CUDA1)
        assert torch.equal(a.cpu(), b.cpu())
        with torch.random.fork_rng(devices=[CUDA1]):
            c = torch.randn(4, device=CUDA1)
        assert torch.equal(c.cpu(), torch.randn(4, device=CUDA1).cpu())  # fork_rng put cuda:1's state back


# -- bfloat16 and autocast ---------------------------------------------------------------------------------------


def test_bfloat16_is_native_from_compute_capability_8():
    with fake_cuda(capability=[(9, 0), (7, 5)]):
        with torch.cuda.device(1):  # a T4: bfloat16 only emulated, which is_bf16_supported() counts by default
            assert torch.cuda.is_bf16_supported() and not torch.cuda.is_bf16_supported(including_emulation=False)
        assert torch.cuda.get_device_capability(1) == (7, 5) and torch.cuda.get_device_properties(0).major == 9
    with fake_cuda(capability=(6, 0), emulate_bf16=False):
        with pytest.raises(RuntimeError, match="does not support bfloat16"):
            torch.autocast("cuda", dtype=torch.bfloat16)


def test_autocast_casts_device_tensors_for_its_own_device_only():
    with fake_cuda():
        model = small_net().to(CUDA1)
        x = torch.rand(1, 3, 8, 8, device=CUDA1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert model(x).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the wrong device type: on a GPU it casts nothing
            assert model(x).dtype == torch.float32
            assert small_net()(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16  # CPU tensors as ever
        assert model(x).dtype == torch.float32


# -- values, autograd, modules -------------------------------------------------------------------------------------


def test_values_and_gradients_are_the_cpus_exactly():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cpu_model = small_net()
    xc = x.clone().requires_grad_()
    out = cpu_model(xc)
    out[:, 0].sum().backward()
    with fake_cuda():
        model = small_net().to(CUDA1)
        assert all(is_fake(p) and isinstance(p, nn.Parameter) for p in model.parameters())
        assert all(is_fake(b) for b in model.buffers())  # BatchNorm's running statistics
        xd = x.clone().requires_grad_()  # a CPU leaf: the gradient comes back through the copy to the device
        dout = model(xd.to(CUDA1))
        dout[:, 0].sum().backward()
        assert dout.device == CUDA1 and torch.equal(dout.detach().cpu(), out.detach())
        assert not is_fake(xd.grad) and torch.equal(xd.grad, xc.grad)
        assert model[0].weight.grad.device == CUDA1
        assert torch.equal(model[0].weight.grad.cpu(), cpu_model[0].weight.grad)
        y = torch.randn(3, 4, device=CUDA1, requires_grad=True)  # backward formulas that make temporaries
        (y.max(1).values.sum() + y.amax(0).sum() + y.topk(2).values.sum()).backward()
        assert y.grad.device == CUDA1 and y.grad.sum().item() == 3 + 4 + 6
        back = model.cpu()
        assert not any(is_fake(p) for p in back.parameters())
        assert torch.equal(back[0].weight, cpu_model[0].weight)


def test_transfers_and_conversions():
    with fake_cuda():
        x = torch.ones(2, device=CUDA1)
        assert x.to(CUDA1) is x and x.to("cuda:1", copy=True) is not x
        assert x.to(torch.float16).device == CUDA1 and x.to(torch.float16).dtype == torch.float16
        assert x.to("cuda:0").device == torch.device("cuda:0")
        y = torch.zeros(2).to(x)  # .to(other tensor): its device and dtype
        assert y.device == CUDA1
        assert torch.as_tensor(x, device=CUDA1) is x and torch.tensor([1.0], device=CUDA1).device == CUDA1
        assert x.new_tensor([3.0]).device == CUDA1 and x.new_zeros(2).device == CUDA1
        assert torch.zeros_like(x).device == CUDA1 and torch.zeros_like(x, device="cpu").device.type == "cpu"
        assert torch.fft.fftfreq(4, device=CUDA1).device == CUDA1
        with pytest.raises(RuntimeError, match="only dense CPU tensors can be pinned"):
            x.pin_memory()
        with torch.inference_mode():
            view = x[:1]  # a view of a normal tensor in inference mode
            assert view.device == CUDA1 and (view * 2).is_inference()


def test_parameters_swapped_through_data_keep_their_device():
    """cnnviz's bfloat16 weight swap (``p.data = half``) on a device parameter."""
    with fake_cuda():
        p = nn.Linear(2, 2).to(CUDA1).weight
        full, half = p.data, p.data.to(torch.bfloat16)
        p.data = half
        assert p.dtype == torch.bfloat16 and p.device == CUDA1
        p.data = full
        assert p.dtype == torch.float32
        with pytest.raises(RuntimeError, match="set to one on cpu"):
            p.data = torch.zeros(2, 2)


# -- memory, synchronize, threads ----------------------------------------------------------------------------------


def test_memory_statistics_count_live_device_tensors():
    with fake_cuda() as lane:
        gc.collect()
        base = torch.cuda.memory_allocated(1)
        x = torch.zeros(1000, device=CUDA1)
        view = x[:10]
        assert torch.cuda.memory_allocated(1) == base + 4000 and torch.cuda.memory_allocated(0) == 0
        del x
        assert torch.cuda.memory_allocated(1) == base + 4000  # the view holds the storage
        del view
        assert torch.cuda.memory_allocated(1) == base and torch.cuda.max_memory_allocated(1) == base + 4000
        torch.cuda.reset_peak_memory_stats(1)
        assert torch.cuda.max_memory_allocated(1) == base
        free, total = torch.cuda.mem_get_info(1)
        assert total - free == base
        torch.cuda.empty_cache()
        torch.cuda.synchronize(1)
        assert lane.empty_cache_calls == 1 and lane.syncs == [1]


def test_threads_started_inside_see_the_fake_device_each_with_its_own_current_device():
    seen = {}

    def work():
        seen["current"] = torch.cuda.current_device()
        seen["device"] = (torch.ones(2, device=CUDA1) * 3).device

    with fake_cuda():
        torch.cuda.set_device(1)
        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert torch.cuda.current_device() == 1
    assert seen == {"current": 0, "device": CUDA1}  # CUDA's current device is per thread: a new one starts at 0
