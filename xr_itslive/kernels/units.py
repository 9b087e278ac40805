"""Time units shared by every layer (the kernels are the lowest that needs them)."""

#: Days per year: velocities are in metres per year, intervals in days.
DAYS_PER_YEAR = 365.25
#: Nanoseconds per day: datetime64[ns] differences to float days.
NS_PER_DAY = 86400 * 10**9
