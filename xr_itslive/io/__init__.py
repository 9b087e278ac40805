"""The outside world: URL rules, opening and decoding cubes, the catalog, outline files, downloads.

Imports only :mod:`xr_itslive.errors`, :mod:`xr_itslive.crs` and the array kernels (the array
namespace helpers, and :mod:`xr_itslive.kernels.decode` for the int16 velocities); never
:mod:`xr_itslive.geo`, the workflows or the faces.
"""
