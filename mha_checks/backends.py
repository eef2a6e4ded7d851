"""The three tracks' array libraries, seen through one small interface.

Checks hold their cases as NumPy arrays; a Backend turns them into the track's
arrays (NumPy, CuPy on the GPU, torch tensors) and turns results back into NumPy
for the comparison. torch and CuPy are imported only when their track asks.
"""
import numpy as np

TRACKS = ("numpy", "cupy", "torch")
ARRAY_TYPE_NAMES = {"numpy": "numpy.ndarray", "cupy": "cupy.ndarray", "torch": "torch.Tensor"}


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
    """Convert between NumPy and one track's arrays."""

    def __init__(self, name: str, torch_device: str = "cpu"):
        if name not in TRACKS:
            raise ValueError(f"unknown track {name!r}: use one of {TRACKS}")
        self.name = name
        if name == "cupy":
            if not gpu_available():
                raise RuntimeError(
                    "The CuPy track needs a CUDA GPU and none is available here. "
                    "On Colab: Runtime > Change runtime type > GPU, then run the notebook again."
                )
            import cupy
            self.xp = cupy
            self.device = "gpu"
        elif name == "torch":
            import torch
            self.xp = torch
            self.torch_device = torch_device
            self.device = "gpu" if torch_device.startswith("cuda") else "cpu"
        else:
            self.xp = np
            self.device = "cpu"

    @property
    def array_type_name(self) -> str:
        return ARRAY_TYPE_NAMES[self.name]

    def asarray(self, a):
        """The track's array holding a copy of NumPy array `a` (so a student's in-place edit can't touch the case)."""
        a = np.array(a, copy=True)
        if self.name == "numpy":
            return a
        if self.name == "cupy":
            return self.xp.asarray(a)
        return self.xp.from_numpy(a).to(self.torch_device)

    def is_native(self, x) -> bool:
        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        if self.name == "cupy":
            return isinstance(x, self.xp.ndarray)
        return isinstance(x, self.xp.Tensor)

    def to_numpy(self, x) -> np.ndarray:
        if self.name == "cupy" and isinstance(x, self.xp.ndarray):
            return self.xp.asnumpy(x)
        if self.name == "torch" and isinstance(x, self.xp.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def dtype_name(self, x) -> str:
        """'float32', 'float64', 'bool', ... for any of the three libraries."""
        return str(x.dtype).replace("torch.", "")
