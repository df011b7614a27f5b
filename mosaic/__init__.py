"""Large images (orthomosaics) through the two-stage pipeline in tiles, in bounded memory.

    windows.py    the tile grid and the blending weights of overlapping tiles
    raster.py     reading windows of the input (rasterio) and writing the uint8 GeoTIFFs
    blend.py      the semantic stage: tile probabilities blended and streamed to the maps
    seams.py      the instance stage's pieces per tile, merged across seams into colonies
    geojson.py    the colonies as GeoJSON polygons in the input's CRS, streamed to disk
    geopackage.py the same colonies as a GeoPackage layer (QGIS's own format), streamed
    pipeline.py   one pass over the tiles: semantic, instances, merge, outputs
    batch.py      a large image in inference_with_coralscop.py's batch (outputs, record)
    synthetic.py  georeferenced synthetic mosaics from the reef example (demo, tests, bench)

inference_with_coralscop.py sends an image here when it is large or --tiled is given;
the models per tile are inferencer.py's, unchanged.
"""
