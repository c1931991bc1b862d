"""Writing outputs: the stitcher, class ids, resampling back, atomic GeoTIFF outputs."""
