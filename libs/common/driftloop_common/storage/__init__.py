"""Where data and models live: the interaction store and the feature tables (partitioned
Parquet on any fsspec filesystem) and the MLflow registry adapter."""
