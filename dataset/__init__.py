"""Data side of the toolkit: taxonomies, FiftyOne export, the built-in reef example."""

# Loads .env before any module of this package imports FiftyOne, which reads
# FIFTYONE_DATABASE_DIR once at import.
import settings  # noqa: F401

# Image files the toolkit reads from folders (prepared datasets, inference inputs).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
