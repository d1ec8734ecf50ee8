"""Data sets (patch folders, scene folders, the synthetic generator), SEM image I/O and splits."""
