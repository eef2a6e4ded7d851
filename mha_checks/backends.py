"""The course's tracks, each declared once with its array library.

Checks hold their cases as NumPy arrays; a track's backend turns them into
the track's arrays (NumPy, CuPy on the GPU, torch tensors) and turns results
back into NumPy for the comparison. One class per track, listed in
:data:`BACKENDS`: the track's name, how its arrays are called in messages,
where it computes (the device the tolerances depend on) and the conversions.
The registry's notebooks and the checks' ``tracks`` read the tracks from here,
so a new track is one backend class here plus its notebooks in the registry.
torch and CuPy are imported only when their track asks.
"""
import numpy as np


def gpu_available() -> bool:
    """True when CuPy can run kernels here (CuPy installed and a CUDA GPU present)."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # a broken CUDA install reports itself as an exception
        return False


class Backend:
    """Convert between NumPy and one track's arrays; one subclass per track."""

    name: str = ""              # the track, as the registry and the checks name it
    array_type_name: str = ""   # the track's array type, as messages name it

    @staticmethod
    def device_for(torch_device: str) -> str:
        """Where this track computes ("cpu" or "gpu"), known without importing its library."""
        return "cpu"

    def __init__(self, torch_device: str = "cpu"):
        self.torch_device = torch_device
        self.device = self.device_for(torch_device)
        self.xp = self._library()

    def _library(self):
        return np

    def asarray(self, a):
        """The track's array holding a copy of NumPy array `a` (so a student's in-place edit can't touch the case)."""
        return np.array(a, copy=True)

    def is_native(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        """'float32', 'float64', 'bool', ... for any of the tracks' libraries."""
        return str(x.dtype).replace("torch.", "")


class NumpyBackend(Backend):
    name, array_type_name = "numpy", "numpy.ndarray"


class CupyBackend(Backend):
    name, array_type_name = "cupy", "cupy.ndarray"

    @staticmethod
    def device_for(torch_device: str) -> str:
        return "gpu"

    def _library(self):
        if not gpu_available():
            raise RuntimeError(
                "The CuPy track needs a CUDA GPU and none is available here. "
                "On Colab: Runtime > Change runtime type > GPU, then run the notebook again."
            )
        import cupy
        return cupy

    def asarray(self, a):
        return self.xp.asarray(np.array(a, copy=True))

    def is_native(self, x) -> bool:
        return isinstance(x, self.xp.ndarray)

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, self.xp.ndarray):
            return self.xp.asnumpy(x)
        return np.asarray(x)


class TorchBackend(Backend):
    name, array_type_name = "torch", "torch.Tensor"

    @staticmethod
    def device_for(torch_device: str) -> str:
        return "gpu" if torch_device.startswith("cuda") else "cpu"

    def _library(self):
        import torch
        return torch

    def asarray(self, a):
        return self.xp.from_numpy(np.array(a, copy=True)).to(self.torch_device)

    def is_native(self, x) -> bool:
        return isinstance(x, self.xp.Tensor)

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, self.xp.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)


# The tracks, in the course's order: everything else derives from this table.
BACKENDS = {backend.name: backend for backend in (NumpyBackend, CupyBackend, TorchBackend)}
TRACKS = tuple(BACKENDS)
ARRAY_TYPE_NAMES = {name: backend.array_type_name for name, backend in BACKENDS.items()}


def backend_class(track: str) -> type:
    """The backend of ``track``; a ValueError naming the tracks for any other name."""
    if track not in BACKENDS:
        raise ValueError(f"unknown track {track!r}: use one of {TRACKS}")
    return BACKENDS[track]


def backend(track: str, torch_device: str = "cpu") -> Backend:
    """``track``'s backend, its library imported (CuPy: only where a GPU can run it)."""
    return backend_class(track)(torch_device)
