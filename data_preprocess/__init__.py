"""Converters from public dataset releases into the project's H5 dataset folder (:mod:`lainctr.data.store`).

One module per input format, each a command ``python -m data_preprocess.<name> --input DIR --output DIR``:

* :mod:`.longctr_parquet`: reczoo LongCTR parquet triplets (``KuaiVideo_x2``, ``MicroVideo1.7M_x2``,
  ``Ebnerd_small_x1``), imported without re-encoding;
* :mod:`.ebnerd_raw`: the raw EB-NeRD release (``behaviors`` / ``history`` / ``articles`` parquet files);
* :mod:`.bars_x1_csv`: the BARS ``KuaiVideo_x1`` / ``MicroVideo1.7M_x1`` CSV files with their h5 item vectors.

Shared pieces (errors naming file/column/row, chunked readers, id encoding, sequences, time splits, the
command line) live in :mod:`.common`.
"""
