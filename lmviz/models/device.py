"""Where the models run: found once, never configured."""
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def pick_device() -> torch.device:
    """CUDA when present, else Apple MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | None = None) -> str:
    """A line for the sidebar: which device and what it is."""
    device = device or pick_device()
    if device.type == "cuda":
        return f"CUDA · {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS"
    n = torch.get_num_threads()
    return f"CPU · {n} thread{'' if n == 1 else 's'}"
