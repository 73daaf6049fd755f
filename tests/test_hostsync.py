"""The host-synchronisation counter (robustlab.hostsync) finds each kind of sync on a CPU, and no false ones."""
import torch

from robustlab.hostsync import count_host_syncs


def test_counts_each_kind_of_host_sync():
    x = torch.randn(8, 3)
    mask = x[:, 0] > 0
    with count_host_syncs() as s:
        x.sum().item()
        float(x.max())
        bool(mask.any())
        if mask.all():
            pass
        mask.nonzero()
        x[mask]
        x[mask] = 0.0
        torch.masked_select(x, mask[:, None])
        x.cpu()
        x.to("cpu")
        x.to(x.device)
        x.tolist()
        x.numpy()
    assert s.by_op["aten._local_scalar_dense"] == 4
    assert s.by_op["aten.nonzero"] == 1
    assert s.by_op["aten.index[bool]"] == 1
    assert sum(v for k, v in s.by_op.items() if k.startswith(("aten.index_put", "aten._index_put"))) >= 1
    assert s.by_op["aten.masked_select"] == 1
    assert s.by_op["Tensor.cpu"] == 1 and s.by_op["Tensor.to(cpu)"] == 1
    assert s.by_op["Tensor.tolist"] == 1 and s.by_op["Tensor.numpy"] == 1


def test_device_side_work_counts_nothing():
    x = torch.randn(8, 3, requires_grad=True)
    idx = torch.arange(4)
    with count_host_syncs() as s:
        y = torch.where(x > 0, x, 2 * x).sum(1)
        g, = torch.autograd.grad(y.sum(), x)
        z = x.detach()[idx]
        z[idx % 2] = 1.0
        torch.randperm(8)
        (g.sign() * 0.1).clamp(-1, 1).to(torch.float64)
        y.argmax()
        x.detach().new_zeros(3).index_add_(0, idx[:3], torch.ones(3))
    assert s.total == 0, s.by_op


def test_tensor_methods_are_restored():
    original = torch.Tensor.cpu
    with count_host_syncs():
        pass
    assert torch.Tensor.cpu is original
