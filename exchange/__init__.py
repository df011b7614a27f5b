"""Annotated orthomosaics in and out: TagLab projects and GIS polygon files.

    regions.py    the shared model: an annotated map and its regions in pixel coordinates
    taglab.py     TagLab projects (.json): read every map's regions, write predictions
    gis.py        polygons in GeoJSON / GeoPackage / shapefile, reprojected to a raster;
                  the GeoPackage of predicted colonies, streamed
    crops.py      annotated maps -> training crops (windows, ignore outside the area,
                  spatial splits), used by prepare_data.py

prepare_data.py reads annotated maps through here; inference_with_coralscop.py writes its
tiled predictions through here; reef_stats.py reads corrected projects through here.
"""
