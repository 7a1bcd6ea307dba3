"""Calibration: fit alpha-beta collective models and kernel curves from measurements, and turn
them into a hardware profile (torch-free; the measuring ranks live in sp_planner.executor.calibrate)."""

from sp_planner.calibration.devices import builtin_for_device
from sp_planner.calibration.fit import calibration_data, fit_alpha_beta, fit_collectives
from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.calibration.measurements import Measurements, read_measurements, write_measurements
from sp_planner.calibration.profile import CalibratedProfile, build_profile
from sp_planner.calibration.profile_file import profile_yaml_text, write_profile
from sp_planner.calibration.schedule import CalibrationSchedule, build_schedule

__all__ = [
    "CalibratedProfile",
    "CalibrationSchedule",
    "Measurements",
    "build_profile",
    "build_schedule",
    "builtin_for_device",
    "bus_factor",
    "calibration_data",
    "fit_alpha_beta",
    "fit_collectives",
    "profile_yaml_text",
    "read_measurements",
    "write_measurements",
    "write_profile",
]
