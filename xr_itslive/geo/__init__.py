"""ITS_LIVE and glacier knowledge on data we already have: the time grid and pair geometry,
spatial subsets, pair filters, glacier masks and centerline sampling.

Lazy in the pixel data; may read outline files through :mod:`xr_itslive.io`, never imports the
workflows or the faces.
"""
