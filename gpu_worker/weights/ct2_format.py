"""Reading a CTranslate2 ``model.bin`` (format version 6): named tensors and aliases."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

SUPPORTED_VERSION: Final = 6
DTYPES: Final[dict[int, np.dtype[np.generic]]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}


_LAYER: Final = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, npt.NDArray[np.generic]]
    aliases: dict[str, str]

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        return self.variables[self.aliases.get(name, name)]

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> int:
        return int(self[name].reshape(-1)[0])


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise Ct2FormatError("model.bin ends early")
    return data


def _u(stream: BinaryIO, fmt: str) -> int:
    (value,) = struct.unpack(fmt, _read(stream, struct.calcsize(fmt)))
    return int(value)


def _string(stream: BinaryIO) -> str:
    raw = _read(stream, _u(stream, "<H"))
    return raw.rstrip(b"\0").decode("utf-8")


def _header(stream: BinaryIO) -> tuple[str, int, int]:
    """The file's format check, then its spec, revision and number of variables."""
    version = _u(stream, "<I")
    if version != SUPPORTED_VERSION:
        raise Ct2FormatError(f"model.bin version {version}; only {SUPPORTED_VERSION} is read")
    spec = _string(stream)
    revision = _u(stream, "<I")
    return spec, revision, _u(stream, "<I")


def _variable(stream: BinaryIO) -> tuple[str, tuple[int, ...], np.dtype[np.generic], int]:
    """One variable's name, shape, dtype and byte count; the stream is left at its bytes."""
    name = _string(stream)
    rank = _u(stream, "<B")
    shape = tuple(_u(stream, "<I") for _ in range(rank))
    code = _u(stream, "<B")
    if code not in DTYPES:
        raise Ct2FormatError(f"{name}: unknown dtype code {code}")
    return name, shape, DTYPES[code], _u(stream, "<I")


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Read every variable of ``path`` (a model.bin) into numpy arrays, dtypes as stored."""
    with Path(path).open("rb") as stream:
        spec, revision, count = _header(stream)
        variables: dict[str, npt.NDArray[np.generic]] = {}
        for _ in range(count):
            name, shape, dtype, size = _variable(stream)
            variables[name] = np.frombuffer(_read(stream, size), dtype=dtype).reshape(shape)
        aliases = {_string(stream): _string(stream) for _ in range(_u(stream, "<I"))}
    return Ct2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def read_ct2_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each variable's shape, without reading the weights (a large model's are gigabytes)."""
    shapes: dict[str, tuple[int, ...]] = {}
    with Path(path).open("rb") as stream:
        _spec, _revision, count = _header(stream)
        for _ in range(count):
            name, shape, _dtype, size = _variable(stream)
            shapes[name] = shape
            stream.seek(size, 1)
    return shapes


def layer_count(names: Iterable[str], side: str) -> int:
    """How many ``side`` ("encoder" or "decoder") layers the variables ``names`` belong to."""
    indices = {int(m.group(2)) for n in names if (m := _LAYER.match(n)) and m[1] == side}
    return max(indices) + 1 if indices else 0
