"""The source opener's hook: ``build`` takes a TIFF-tile dataset folder as its source."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from precomp_host.build.sources import SourceError, open_volume
from precomp_host.build.tiff_tiles import TiffTileVolume

from .neurotrale import tiff_volume, write_tiff_tiles

if TYPE_CHECKING:
    from pathlib import Path


def test_a_folder_with_an_info_opens_as_tiff_tiles(tmp_path: Path) -> None:
    volume = tiff_volume((20, 30, 40))
    write_tiff_tiles(tmp_path / "tiles", volume, (16, 16, 8))
    opened = open_volume(tmp_path / "tiles")
    assert isinstance(opened, TiffTileVolume)
    np.testing.assert_array_equal(opened.read(0, 20)[..., 0], volume)


def test_its_problems_are_source_errors(tmp_path: Path) -> None:
    write_tiff_tiles(tmp_path / "tiles", tiff_volume((20, 30, 40)), (16, 16, 8))
    (tmp_path / "tiles" / "1_1_1" / "0-16_0-16_0-8.tiff").unlink()
    with pytest.raises(SourceError, match="chunk file missing"):
        open_volume(tmp_path / "tiles")
