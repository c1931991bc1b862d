"""The model: spec, fusion U-Net and layers, one-file format, runtimes, export, TTA."""
