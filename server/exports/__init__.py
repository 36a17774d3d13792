"""Exports: study data as CSV, Parquet, SPSS and Stata files with a codebook and manifest."""
