"""From masks to reef numbers: cover, colonies, groups, CoralNet exports, report, change.

Reads what the toolkit writes (never runs a model), so predicted and annotated numbers
come out of the same code:

    sources.py   the inputs as per-image class maps + colonies (two-stage output, class-map
                 folder such as test.py --pred-dir, prepared dataset split)
    scale.py     pixels -> cm (--mm-per-pixel, --quadrat-size-cm, a georeference)
    quadrat.py   the valid area: a quadrat mask or polygon
    measures.py  per-colony area, perimeter, Feret diameter, centroid (scikit-image regionprops)
    cover.py     percent cover per class, and the cover error of an evaluation
    groups.py    site / date / transect groups, density, log2 size classes
    coralnet.py  CoralNet's percent_covers.csv and point-annotation CSV
    figures.py   PNG figures; report.py the self-contained report.html
    register.py, change.py, compare.py   survey A vs survey B: colony events
    summary.py   the `summarize` command; output.py its atomic output folder

`reef_stats.py` is the command line.
"""
