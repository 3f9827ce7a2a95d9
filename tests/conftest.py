import pytest
import torch


@pytest.fixture
def single_thread():
    """For tiny models: a second thread only adds wake-up latency (badly so on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
