"""Complex tensors and ``torch.fft`` lowered to real matrix products, for any model, while it is exported.

:class:`RealComplexMode` is a :class:`torch.overrides.TorchFunctionMode`: inside ``with RealComplexMode():`` a
complex tensor is carried as a real ``(..., 2)`` tensor (real and imaginary parts last, fastMRI's layout) and
``torch.fft.fft/ifft/fft2/ifft2/fftn/ifftn`` become products with real cos/sin DFT matrices, factored
(:func:`kdc.export.dft.dft`), ``fftshift``/``ifftshift`` become rolls. It knows
nothing of any model: ``view_as_complex``/``view_as_real``, ``torch.complex``, ``.real``/``.imag``, ``abs``,
``conj``, ``mul``/``add``/``sub`` and ``shape``/``size``/``dim`` of such tensors are handled wherever they are
called from. No complex dtype reaches the graph, so the legacy and dynamo ONNX exporters both take it, and OpenVINO's
DFT traps (TOOLCHAIN.md: wrong at opset >= 20) cannot apply. Any other operation that takes or makes a complex
tensor raises :class:`UnsupportedOperation`, one line naming the operator and the model's source line.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from kdc.errors import KdcError
from kdc.export.dft import dft

Handler = Callable[..., Any]
#: Directories whose frames are not "the model's source line" of an error.
_OWN_DIRS = (str(Path(torch.__file__).parent), str(Path(__file__).parent))


class UnsupportedOperation(KdcError):
    """An operator the export cannot lower, with the model source line that called it."""


def caller_line() -> str:
    """``file:line`` of the innermost frame outside torch and kdc.export: the model's line that made the call."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_OWN_DIRS) and not name.startswith("<"):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "unknown source line"


def operator_name(func: Any) -> str:
    """``torch.angle``, ``torch.fft.rfft``, ``Tensor.angle``: how a user would write the operator."""
    name = getattr(func, "__name__", None) or repr(func)
    for namespace, prefix in ((torch, "torch"), (torch.fft, "torch.fft"), (torch.nn.functional, "F"),
                              (torch.Tensor, "Tensor")):
        if getattr(namespace, name, None) is func:
            return f"{prefix}.{name}"
    return f"{getattr(func, '__module__', None) or 'torch'}.{getattr(func, '__qualname__', name)}"


def _dims(dim: int | Sequence[int] | None, ndim: int) -> list[int]:
    """Logical dims (of the complex tensor, without the pair axis) as negative indices."""
    if dim is None:
        return list(range(-ndim, 0))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return [d - ndim if d >= 0 else d for d in dims]


class RealComplexMode(TorchFunctionMode):
    """See the module docstring. Pairs are tracked by identity: the real ``(..., 2)`` tensors this mode made."""

    def __init__(self) -> None:
        super().__init__()
        self._pairs: dict[int, weakref.ref[torch.Tensor]] = {}

    # -- pair bookkeeping -------------------------------------------------------------------------------------
    def is_pair(self, value: Any) -> bool:
        ref = self._pairs.get(id(value)) if isinstance(value, torch.Tensor) else None
        return ref is not None and ref() is value

    def pair(self, real: torch.Tensor, imag: torch.Tensor | None = None) -> torch.Tensor:
        stacked = torch.stack([real, torch.zeros_like(real) if imag is None else imag], dim=-1)
        self._pairs[id(stacked)] = weakref.ref(stacked)
        return stacked

    def parts(self, value: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real and imaginary parts of a pair; a real tensor (or number) has no imaginary part."""
        if self.is_pair(value):
            return value[..., 0], value[..., 1]
        return (value if isinstance(value, torch.Tensor) else torch.as_tensor(value)), None

    # -- dispatch ---------------------------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        handler = HANDLERS.get(func)
        if handler is not None:
            result = handler(self, *args, **kwargs)
            if result is not NotImplemented:
                return result
        flat, _ = tree_flatten((args, kwargs))
        if any(self.is_pair(value) for value in flat):
            raise self.unsupported(func)
        result = func(*args, **kwargs)
        if isinstance(result, torch.Tensor) and result.is_complex():
            raise self.unsupported(func)
        return result

    @staticmethod
    def unsupported(func: Any) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"cannot export complex operator {operator_name(func)} at {caller_line()}: kdc lowers torch.fft, "
            "view_as_complex/view_as_real, complex, real/imag, abs, conj, mul/add/sub; rewrite it with real tensors "
            "or register an adapter (docs/your-model.md)")

    # -- handlers ---------------------------------------------------------------------------------------------
    def view_as_complex(self, tensor: torch.Tensor) -> torch.Tensor:
        alias = tensor.view(tensor.shape)  # a new object: the caller may keep using ``tensor`` as real
        self._pairs[id(alias)] = weakref.ref(alias)
        return alias

    def view_as_real(self, tensor: torch.Tensor) -> Any:
        return tensor.view(tensor.shape) if self.is_pair(tensor) else NotImplemented

    def fft(self, inverse: bool, default_dims: int | None) -> Handler:
        def lowered(tensor: torch.Tensor, s: Any = None, dim: Any = None, norm: str | None = None,
                    *, n: Any = None, out: Any = None) -> Any:
            if s is not None or n is not None or out is not None:
                raise UnsupportedOperation(f"cannot export torch.fft with a size (s=/n=) or out= at {caller_line()}: "
                                           "pad or crop the tensor before the transform")
            real, imag = self.parts(tensor)
            if real.is_complex():
                return NotImplemented
            if dim is None and default_dims is not None:
                dim = list(range(-default_dims, 0))
            for axis in _dims(dim, real.dim()):
                real, imag = dft(real, imag, axis, inverse, norm)
            return self.pair(real, imag)

        return lowered

    def shift(self, inverse: bool) -> Handler:
        def lowered(tensor: torch.Tensor, dim: Any = None) -> Any:
            if not self.is_pair(tensor):
                return NotImplemented
            logical = tensor.dim() - 1
            dims = _dims(dim, logical)
            sizes = [tensor.shape[d - 1] for d in dims]
            shifts = [(-(size // 2) if inverse else size // 2) for size in sizes]
            rolled = torch.roll(tensor, shifts, [d - 1 for d in dims])
            self._pairs[id(rolled)] = weakref.ref(rolled)
            return rolled

        return lowered

    def complex(self, real: torch.Tensor, imag: torch.Tensor, *, out: Any = None) -> torch.Tensor:
        real, imag = torch.broadcast_tensors(real, imag)
        return self.pair(real, imag)

    def real(self, tensor: torch.Tensor) -> Any:
        return tensor[..., 0] if self.is_pair(tensor) else NotImplemented

    def imag(self, tensor: torch.Tensor) -> Any:
        return tensor[..., 1] if self.is_pair(tensor) else NotImplemented

    def abs(self, tensor: torch.Tensor) -> Any:
        if not self.is_pair(tensor):
            return NotImplemented
        return torch.sqrt(tensor[..., 0] ** 2 + tensor[..., 1] ** 2)

    def conj(self, tensor: torch.Tensor) -> Any:
        return self.pair(tensor[..., 0], -tensor[..., 1]) if self.is_pair(tensor) else NotImplemented

    def arithmetic(self, op: str, swapped: bool = False) -> Handler:
        def lowered(left: Any, right: Any, *args: Any, **kwargs: Any) -> Any:
            if swapped:
                left, right = right, left
            if not (self.is_pair(left) or self.is_pair(right)) or args or kwargs:
                return NotImplemented
            (a, b), (c, d) = self.parts(left), self.parts(right)
            if op == "mul":
                if b is None:
                    return self.pair(a * c, a * d)
                if d is None:
                    return self.pair(a * c, b * c)
                return self.pair(a * c - b * d, a * d + b * c)
            sign = 1 if op == "add" else -1
            real = a + sign * c
            imag = (torch.zeros_like(real) if b is None else b) + sign * (0 if d is None else d)
            return self.pair(real, imag)

        return lowered

    def shape(self, tensor: torch.Tensor) -> Any:
        return tensor.shape[:-1] if self.is_pair(tensor) else NotImplemented

    def size(self, tensor: torch.Tensor, dim: int | None = None) -> Any:
        if not self.is_pair(tensor):
            return NotImplemented
        return tensor.shape[:-1] if dim is None else tensor.shape[:-1][dim]

    def dim(self, tensor: torch.Tensor) -> Any:
        return tensor.dim() - 1 if self.is_pair(tensor) else NotImplemented

    def is_complex(self, tensor: torch.Tensor) -> Any:
        return True if self.is_pair(tensor) else NotImplemented


def _handlers() -> dict[Any, Handler]:
    """``torch`` function -> unbound handler ``(mode, *args, **kwargs)``."""
    fft = torch.fft
    table: dict[Any, Callable[[RealComplexMode], Handler]] = {
        torch.view_as_complex: lambda m: m.view_as_complex,
        torch.view_as_real: lambda m: m.view_as_real,
        fft.fft: lambda m: m.fft(False, 1), fft.ifft: lambda m: m.fft(True, 1),
        fft.fft2: lambda m: m.fft(False, 2), fft.ifft2: lambda m: m.fft(True, 2),
        fft.fftn: lambda m: m.fft(False, None), fft.ifftn: lambda m: m.fft(True, None),
        fft.fftshift: lambda m: m.shift(False), fft.ifftshift: lambda m: m.shift(True),
        torch.complex: lambda m: m.complex,
        torch.Tensor.real.__get__: lambda m: m.real, torch.real: lambda m: m.real,
        torch.Tensor.imag.__get__: lambda m: m.imag, torch.imag: lambda m: m.imag,
        torch.abs: lambda m: m.abs, torch.Tensor.abs: lambda m: m.abs, torch.Tensor.__abs__: lambda m: m.abs,
        torch.conj: lambda m: m.conj, torch.Tensor.conj: lambda m: m.conj,
        torch.Tensor.shape.__get__: lambda m: m.shape, torch.Tensor.size: lambda m: m.size,
        torch.Tensor.dim: lambda m: m.dim, torch.Tensor.ndim.__get__: lambda m: m.dim,
        torch.Tensor.is_complex: lambda m: m.is_complex, torch.is_complex: lambda m: m.is_complex,
    }
    for op in ("mul", "add", "sub"):
        table[getattr(torch, op)] = lambda m, op=op: m.arithmetic(op)
        table[getattr(torch.Tensor, op)] = lambda m, op=op: m.arithmetic(op)
        table[getattr(torch.Tensor, f"__{op}__")] = lambda m, op=op: m.arithmetic(op)
        table[getattr(torch.Tensor, f"__r{op}__")] = lambda m, op=op: m.arithmetic(op, swapped=True)
    return {func: (lambda mode, *args, _make=make, **kwargs: _make(mode)(*args, **kwargs))
            for func, make in table.items()}


HANDLERS = _handlers()
