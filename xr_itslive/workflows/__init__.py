"""xarray in, xarray out, lazy: invert / predict, the GP of a point series, resumable stores,
Dask clients, GPU moves and the Glacier objects. Built on :mod:`xr_itslive.geo`,
:mod:`xr_itslive.io` and :mod:`xr_itslive.kernels`; never imports the faces.
"""
