"""Annotated orthomosaics in and out: TagLab projects and GIS polygon files.

    regions.py    the shared model: an annotated map and its regions in pixel coordinates
    taglab.py     TagLab projects (.json): read every map's regions, write predictions
    gis.py        polygons in GeoJSON / GeoPackage / shapefile, reprojected to a raster
    paint.py      regions painted into class windows: the one rule of crops and numbers
    open_maps.py  a TagLab project, or an orthomosaic with a polygon file -> maps
    crops.py      annotated maps -> training crops (windows, ignore outside the area,
                  spatial splits), used by prepare_data.py
    run_to_taglab.py  an inference run's predictions -> one TagLab project (--taglab)

prepare_data.py reads annotated maps through here; inference_with_coralscop.py writes its
TagLab project through here (the GeoPackage beside the GeoJSON is mosaic/geopackage.py's);
reef_stats.py reads corrected projects and polygon files through here.
"""
