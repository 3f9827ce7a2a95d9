import pytest
import torch

from benchmarks.peer import PeerUnavailable, load_peer


@pytest.fixture
def single_thread():
    """For tiny models: a second thread only adds wake-up latency (badly so on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def peer():
    """lucidrains' axial-attention 0.6.1 (the real package, from its own directory), installed on first use;
    where it cannot be installed (offline), the tests that compare against it skip and say why."""
    try:
        return load_peer()
    except PeerUnavailable as error:
        pytest.skip(str(error))
