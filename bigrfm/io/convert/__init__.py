"""Writing datasets: the atomic Zarr writer, file conversion (CSV / Parquet / .npy / .npz), and ``describe``.

Everything streams: a writer appends row blocks, ``convert`` reads its source
block by block (peak memory independent of the file size), and output appears
at its final path only when complete.
"""

from __future__ import annotations

from .convert_file import convert
from .describe import describe
from .writer import DatasetWriter, check_output_path, create_dataset, default_chunk_rows

__all__ = ["create_dataset", "DatasetWriter", "check_output_path", "default_chunk_rows", "convert", "describe"]
