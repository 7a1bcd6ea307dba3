"""The analytic cost model: pure functions, no torch. Each formula cites its source."""
