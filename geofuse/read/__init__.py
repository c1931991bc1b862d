"""Reading scenes: rasters, the input contract, the tile grid, the reader, its feed, AOIs."""
