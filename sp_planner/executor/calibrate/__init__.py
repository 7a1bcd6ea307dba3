"""sp-calibrate's ranks: time collectives and kernels on real process groups (imports torch).

The CLI stays torch-free: it builds a CalibrationSchedule, launches `worker` through torchrun
(sp_planner.executor.launch) and fits what comes back with sp_planner.calibration.
"""
